"""Skin tone: ITA of synthetic skin of known CIELAB colour against the formula, the lesion
left out, Del Bino bins and groups as the data README defines them, and the unreliable flag."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.color import lab2rgb, rgb2lab

from classndiff.trust.skintone import estimate_skin_tone, ita_bin, tone_group


def skin_rgb(lightness: float, a: float, b: float) -> tuple[np.ndarray, float, float]:
    """The uint8 sRGB colour nearest to (L*, a*, b*), and that colour's exact L* and b*
    (after rounding to 8 bits) — what the estimate must reproduce."""
    lab = np.array([[[lightness, a, b]]], dtype=np.float64)
    rgb = np.round(lab2rgb(lab) * 255).astype(np.uint8)[0, 0]
    lab = rgb2lab(rgb[None, None].astype(np.float64) / 255)[0, 0]
    return rgb, float(lab[0]), float(lab[2])


def ita_formula(lightness: float, b: float) -> float:
    return math.degrees(math.atan((lightness - 50) / b))


def uniform(rgb: np.ndarray, size: int = 150) -> np.ndarray:
    return np.broadcast_to(rgb, (size, size, 3)).copy()


def with_lesion(skin: np.ndarray, radius: float, colour=(70, 40, 30), size: int = 150):  # noqa: ANN001, ANN201
    image = uniform(skin, size)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2
    image[disc] = colour
    return image, disc


@pytest.mark.parametrize(("lightness", "a", "b"), [
    (75, 8, 14),  # very light
    (65, 12, 16),  # light
    (60, 12, 16),  # intermediate
    (56, 14, 20),  # tan
    (45, 12, 22),  # brown (the fine bin)
    (28, 10, 15),  # dark
])
def test_ita_of_uniform_skin_matches_the_formula(lightness: float, a: float, b: float) -> None:
    rgb, true_l, true_b = skin_rgb(lightness, a, b)
    expected = ita_formula(true_l, true_b)
    result = estimate_skin_tone(uniform(rgb))
    assert result["ita"] == pytest.approx(expected, abs=0.02)
    assert result["skin_L"] == pytest.approx(true_l, abs=0.02)
    assert result["skin_b"] == pytest.approx(true_b, abs=0.02)
    assert abs(expected - ita_formula(lightness, b)) < 3  # 8-bit rounding moves it little
    assert result["bin"] == ita_bin(expected) and result["group"] == tone_group(result["bin"])
    assert result["reliable"] is True and result["method"] == "segmented"


def test_the_lesion_is_left_out() -> None:
    """A dark lesion over more than half of the image: the median would be the lesion's
    if it were counted; it must stay the skin's."""
    rgb, true_l, true_b = skin_rgb(68, 10, 15)
    image, disc = with_lesion(rgb, radius=62)
    assert disc.mean() > 0.5
    expected = ita_formula(true_l, true_b)
    segmented = estimate_skin_tone(image)
    assert segmented["method"] == "segmented" and segmented["reliable"]
    assert segmented["ita"] == pytest.approx(expected, abs=0.05)
    given = estimate_skin_tone(image, lesion_mask=disc)
    assert given["method"] == "mask" and given["ita"] == pytest.approx(expected, abs=0.05)
    lesion_l = rgb2lab(np.array([[[70, 40, 30]]]) / 255)[0, 0, 0]
    assert ita_formula(lesion_l, 15) < 0  # the lesion alone would read as "brown/dark"
    with pytest.raises(ValueError, match="mask shape"):
        estimate_skin_tone(image, lesion_mask=disc[:10])


def test_hair_rim_and_highlights_are_left_out() -> None:
    rgb, true_l, true_b = skin_rgb(66, 11, 16)
    image = uniform(rgb)
    image[:, ::15] = (20, 15, 10)  # dark hairs, 1 px wide
    image[:12], image[-12:] = 0, 0  # the dermatoscope's dark rim
    image[70:74, 70:74] = 255  # a specular highlight
    contaminated = (image != rgb).any(-1)
    result = estimate_skin_tone(image)
    assert result["ita"] == pytest.approx(ita_formula(true_l, true_b), abs=0.05)
    # the median is robust to a few outliers, so check they were really removed
    assert result["skin_px"] <= (~contaminated).sum() and result["skin_px"] > 0.3 * 150 * 150
    assert result["skin_L"] == pytest.approx(true_l, abs=0.02)


@pytest.mark.parametrize(("ita", "bin_name", "group"), [
    (70.0, "very_light", "lighter"), (55.01, "very_light", "lighter"),
    (55.0, "light", "lighter"), (41.01, "light", "lighter"),
    (41.0, "intermediate", "brown"), (28.01, "intermediate", "brown"),
    (28.0, "tan", "brown"), (10.01, "tan", "brown"),
    (10.0, "brown", "darker"), (-29.99, "brown", "darker"),
    (-30.0, "dark", "darker"), (-80.0, "dark", "darker"),
])
def test_del_bino_bins_include_their_upper_bound(ita: float, bin_name: str, group: str) -> None:
    assert ita_bin(ita) == bin_name and tone_group(bin_name) == group


def test_unknown_bin_is_unknown_group() -> None:
    assert tone_group("unknown") == "unknown" and tone_group("nonsense") == "unknown"


def test_a_blue_cast_is_unreliable() -> None:
    """b* ≤ 0: ITA is ±90° from lightness alone, so the estimate is flagged unreliable."""
    rgb, true_l, true_b = skin_rgb(66, 5, -8)
    assert true_b < 0
    result = estimate_skin_tone(uniform(rgb))
    assert result["reliable"] is False and result["skin_b"] < 0
    assert result["ita"] == pytest.approx(90, abs=0.01)  # b* clipped to a tiny positive value
    # dim and colour-cast: the formula alone says "dark"; the data calls that unknown
    dim, dim_l, _ = skin_rgb(38, 4, -6)
    result = estimate_skin_tone(uniform(dim))
    assert dim_l < 50 and result["ita"] == pytest.approx(-90, abs=0.01)
    assert result["bin"] == "unknown" and result["group"] == "unknown"
    assert result["reliable"] is False


def test_ring_fallback_when_the_lesion_fills_the_image() -> None:
    rgb, true_l, true_b = skin_rgb(66, 11, 16)
    image, _ = with_lesion(rgb, radius=150)  # everything but the corners is lesion
    result = estimate_skin_tone(image)
    assert result["method"] == "ring" and result["reliable"] is False
    assert result["ita"] is not None


def test_input_types_and_diagnose(tiny_pipe) -> None:  # noqa: ANN001
    from PIL import Image

    rgb, _, _ = skin_rgb(66, 11, 16)
    image, _ = with_lesion(rgb, radius=30, size=128)
    as_array, as_pil = estimate_skin_tone(image), estimate_skin_tone(Image.fromarray(image))
    assert as_array == as_pil
    with pytest.raises(ValueError, match="RGB"):
        estimate_skin_tone(image[..., 0])
    d = tiny_pipe.diagnose(image)
    assert d.skin_tone is not None and d.skin_tone["group"] in ("lighter", "brown", "darker")
    assert tiny_pipe.diagnose(image, skin_tone=False).skin_tone is None
