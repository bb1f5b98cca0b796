"""A skin-tone counterfactual, the test HAM10000 cannot give (94 % of it is lighter skin):
re-tint only the skin around the lesion to the ITA of another tone group, in CIELAB, keeping
its texture, leave the lesion's pixels untouched, and see whether the diagnosis changes.

    retint_skin(image, lesion_mask, "darker")      # uint8 HWC → uint8 HWC
    flip_report(probs_original, probs_retinted, labels)

A re-tinted lesion is a proxy: it says whether the classifier leans on the colour of the
surrounding skin, not how it performs on patients with dark skin."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .labels import malignant_mask
from .skintone import ita_degrees

# Target skin of each group: (ITA in degrees, b*), inside the group's Del Bino range
# (brown group = intermediate + tan, 10° < ITA ≤ 41°; darker group = ITA ≤ 10°); L* follows
# from ITA = atan((L* − 50) / b*). The b* values are typical of such skin in dermoscopy.
RETINT_TARGETS: dict[str, tuple[float, float]] = {"brown": (25.0, 20.0),
                                                  "darker": (-15.0, 24.0)}


def retint_skin(image: np.ndarray, lesion: np.ndarray,
                target: str | tuple[float, float]) -> np.ndarray:
    """`image` uint8 (H, W, 3), `lesion` (H, W) bool or {0, 1}. The skin gets one shift of
    L* and b* that moves its median to the target's, each pixel keeping its offset from the
    median (texture, hair, vessels stay); a* is kept. Expert masks are drawn generously, with
    a margin of skin inside: a pixel inside the mask is re-tinted only as far as its colour
    is the skin's (ΔE to the skin median under 6: fully; over 15: not at all), so the margin
    follows the skin (a ring of old skin would be a halo, a cue of its own) and the lesion's
    own pixels stay exactly as they were."""
    from skimage.color import lab2rgb, rgb2lab

    ita, b_target = RETINT_TARGETS[target] if isinstance(target, str) else target
    l_target = 50 + b_target * np.tan(np.radians(ita))
    lesion = np.asarray(lesion, bool)
    skin = ~lesion
    if skin.sum() < 16:  # the lesion fills the frame: nothing to re-tint
        return image.copy()
    lab = rgb2lab(image.astype(np.float64) / 255)
    median = np.median(lab[skin], axis=0)
    delta_e = np.linalg.norm(lab - median, axis=-1)
    weight = np.where(lesion, np.clip((15 - delta_e) / (15 - 6), 0, 1), 1.0)
    moved = lab.copy()
    moved[..., 0] = np.clip(lab[..., 0] + (l_target - median[0]) * weight, 0, 100)
    moved[..., 2] = lab[..., 2] + (b_target - median[2]) * weight
    with warnings.catch_warnings():  # out-of-gamut colours are clipped, as intended
        warnings.simplefilter("ignore")
        rgb = (np.clip(lab2rgb(moved), 0, 1) * 255).round().astype(np.uint8)
    untouched = weight == 0
    rgb[untouched] = image[untouched]
    return rgb


def skin_ita(image: np.ndarray, lesion: np.ndarray) -> float:
    """Median ITA (degrees) of the skin outside the lesion."""
    from skimage.color import rgb2lab

    lab = rgb2lab(image.astype(np.float64) / 255)
    skin = ~np.asarray(lesion, bool)
    return float(np.median(ita_degrees(lab[..., 0][skin], lab[..., 2][skin], floor=1e-3)))


def flip_report(original: np.ndarray, retinted: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """How much a re-tint changes the answers: share of top-class flips, mean change of
    P(malignant), accuracy and malignant AUC before and after."""
    from sklearn.metrics import roc_auc_score

    malignant = np.asarray(malignant_mask())
    p_before, p_after = original[:, malignant].sum(1), retinted[:, malignant].sum(1)
    truth = malignant[labels]
    auc = (lambda p: float(roc_auc_score(truth, p))) if 0 < truth.sum() < len(truth) else (
        lambda p: float("nan"))
    return {
        "n": int(len(labels)),
        "flip_rate": float((original.argmax(1) != retinted.argmax(1)).mean()),
        "malignant_change_mean": float((p_after - p_before).mean()),
        "malignant_change_abs_mean": float(np.abs(p_after - p_before).mean()),
        "accuracy_before": float((original.argmax(1) == labels).mean()),
        "accuracy_after": float((retinted.argmax(1) == labels).mean()),
        "malignant_auc_before": auc(p_before),
        "malignant_auc_after": auc(p_after),
    }
