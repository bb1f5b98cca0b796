"""The skin-tone counterfactual: re-tint reaches its target ITA, keeps the lesion and the
skin's texture; the flip report's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from classndiff.fairness import RETINT_TARGETS, flip_report, retint_skin, skin_ita


def photo(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = np.ones((64, 64, 3)) * np.array([232, 196, 180]) + rng.normal(0, 4, (64, 64, 3))
    yy, xx = np.mgrid[:64, :64]
    lesion = (yy - 32) ** 2 + (xx - 30) ** 2 < 14 ** 2
    image[lesion] = np.array([80, 45, 35]) + rng.normal(0, 4, (lesion.sum(), 3))
    return np.clip(image, 0, 255).astype(np.uint8), lesion


@pytest.mark.parametrize("target", list(RETINT_TARGETS))
def test_retint_reaches_the_target_tone_and_keeps_the_lesion(target: str) -> None:
    image, lesion = photo()
    out = retint_skin(image, lesion, target)
    assert skin_ita(image, lesion) > 50  # a light skin to start from
    assert skin_ita(out, lesion) == pytest.approx(RETINT_TARGETS[target][0], abs=3)
    assert np.array_equal(out[lesion], image[lesion])  # the lesion's pixels untouched
    # Texture kept: the skin's pixel-to-pixel variation survives the shift.
    before = image[~lesion].astype(float).std(0).mean()
    after = out[~lesion].astype(float).std(0).mean()
    assert 0.5 * before < after < 2 * before


def test_darker_is_darker_than_brown() -> None:
    image, lesion = photo(1)
    brown, darker = retint_skin(image, lesion, "brown"), retint_skin(image, lesion, "darker")
    assert skin_ita(image, lesion) > skin_ita(brown, lesion) > skin_ita(darker, lesion)
    assert darker[~lesion].mean() < brown[~lesion].mean() < image[~lesion].mean()


def test_flip_report_arithmetic() -> None:
    # classes: akiec bcc bkl df mel nv vasc; malignant = akiec, bcc, mel
    before = np.array([[0, 0, 0, 0, 0.9, 0.1, 0], [0, 0, 0, 0, 0.2, 0.8, 0],
                       [0, 0, 0, 0, 0.6, 0.4, 0], [0, 0, 0, 0, 0.1, 0.9, 0]])
    after = np.array([[0, 0, 0, 0, 0.8, 0.2, 0], [0, 0, 0, 0, 0.7, 0.3, 0],
                      [0, 0, 0, 0, 0.6, 0.4, 0], [0, 0, 0, 0, 0.1, 0.9, 0]])
    labels = np.array([4, 5, 4, 5])
    report = flip_report(before, after, labels)
    assert report["flip_rate"] == 0.25  # only image 1 changes its top class
    assert report["malignant_change_mean"] == pytest.approx((-0.1 + 0.5) / 4)
    assert report["accuracy_before"] == 1.0 and report["accuracy_after"] == 0.75
    assert report["malignant_auc_before"] == 1.0
    assert report["malignant_auc_after"] == pytest.approx(0.75)
