"""Skin tone of an upload: the Individual Typology Angle (ITA) of the skin around the lesion.

The same recipe as the training data's `ita` column (see the data README), so the groups mean
the same thing: CIELAB via `skimage.color.rgb2lab`; lesion, hair (black-hat on L*), dark
dermatoscope rim (L* < 20) and specular highlights (L* > 97) removed; per-pixel
ITA = atan((L* − 50) / b*)·180/π with b* clipped to a tiny positive value; the median over the
skin pixels; an outer border ring when too few skin pixels are left. One difference: there is
no expert mask at inference, so the lesion is segmented here (Otsu on L*, the dark blob
nearest the centre), unless a mask is given.

ITA from dermoscopy is a proxy of imaging appearance (lighting, white balance, redness), not
a measurement of the patient's skin; `reliable` is False when the skin has a grey, blue or
magenta cast (median b* ≤ 0), where ITA reflects only lightness.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

# Del Bino et al. bins, upper bound included: (lower bound, name), lightest first.
ITA_BINS: tuple[tuple[float, str], ...] = (
    (55.0, "very_light"), (41.0, "light"), (28.0, "intermediate"), (10.0, "tan"),
    (-30.0, "brown"), (-np.inf, "dark"),
)
TONE_GROUP_OF_BIN: dict[str, str] = {
    "very_light": "lighter", "light": "lighter",
    "intermediate": "brown", "tan": "brown",
    "brown": "darker", "dark": "darker",
}
REFERENCE_SIDE = 150  # the data's ITA was computed on 200×150 images: scale kernels to it


def ita_degrees(lightness: np.ndarray, b_star: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Per-pixel ITA = atan((L* − 50) / b*)·180/π, b* clipped to `floor` (≤ 0 saturates
    at ±90° by lightness alone)."""
    return np.degrees(np.arctan((lightness - 50) / np.maximum(b_star, floor)))


def ita_bin(ita: float) -> str:
    """Del Bino bin of an ITA in degrees (e.g. 60 → very_light, 30 → intermediate)."""
    for lower, name in ITA_BINS:
        if ita > lower:
            return name
    return "dark"


def tone_group(bin_name: str) -> str:
    """Del Bino bin → the coarse lighter / brown / darker group the model is conditioned on."""
    return TONE_GROUP_OF_BIN.get(bin_name, "unknown")


def segment_lesion(lightness: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """A lesion mask without an expert: Otsu on smoothed L*, then the dark blob that is
    large and near the centre (dermoscopy centres the lesion), holes filled."""
    valid = np.ones_like(lightness, bool) if valid is None else valid
    return otsu_blob(lightness, valid, above=False)


def otsu_blob(values: np.ndarray, valid: np.ndarray, above: bool) -> np.ndarray:
    """`values` (H, W) smoothed, split by Otsu over the `valid` pixels, and the central
    blob (`central_blob`) of the side `above` (or below) the threshold; all False when the
    valid values are too few or too flat to split."""
    from skimage.filters import gaussian, threshold_otsu

    h, w = values.shape
    smooth = gaussian(values, sigma=max(1.0, 1.5 * min(h, w) / REFERENCE_SIDE),
                      preserve_range=True)
    inside = smooth[valid]
    if inside.size < 16 or inside.max() - inside.min() < 1.0:
        return np.zeros((h, w), bool)
    threshold = threshold_otsu(inside)
    return central_blob(((smooth > threshold) if above else (smooth < threshold)) & valid)


def border_band(h: int, w: int) -> np.ndarray:
    """The image's outer band, 8 % of its side wide: skin in dermoscopy, the lesion being
    centred."""
    band = max(1, int(round(0.08 * min(h, w))))
    ring = np.ones((h, w), bool)
    ring[band:-band, band:-band] = False
    return ring


def estimate_skin_tone(
    image: Image.Image | np.ndarray,
    lesion_mask: np.ndarray | None = None,
) -> dict[str, Any]:
    """ITA of the skin in an RGB image (PIL or uint8 H×W×3).

    Returns {"ita", "bin", "group", "reliable", "method", "skin_px", "skin_L", "skin_b"}:
    `bin` is the Del Bino bin, `group` lighter / brown / darker ("unknown" when the image
    is dim and colour-cast, or has no usable skin), `method` "segmented", "mask" (given) or
    "ring" (fallback), and `reliable` False for a colour cast or the ring fallback."""
    from scipy import ndimage
    from skimage.color import rgb2lab
    from skimage.morphology import black_tophat, disk

    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got shape {rgb.shape}")
    integer = np.issubdtype(rgb.dtype, np.integer)  # 0-255; floats are taken as 0-1
    lab = rgb2lab(rgb.astype(np.float64) / 255.0 if integer else rgb)
    lightness, b_star = lab[..., 0], lab[..., 2]
    h, w = lightness.shape
    scale = min(h, w) / REFERENCE_SIDE

    def grow(mask: np.ndarray, radius: float) -> np.ndarray:
        r = max(1, int(round(radius * scale)))
        return ndimage.binary_dilation(mask, structure=disk(r)) if mask.any() else mask

    rim = grow(lightness < 20, 3)  # dermatoscope rim and vignette
    specular = lightness > 97
    hair = grow(black_tophat(lightness, disk(max(2, int(round(5 * scale))))) > 8, 1)
    if lesion_mask is None:
        lesion, method = segment_lesion(lightness, ~rim), "segmented"
    else:
        lesion, method = np.asarray(lesion_mask, bool), "mask"
        if lesion.shape != lightness.shape:
            raise ValueError(f"mask shape {lesion.shape} does not match image {lightness.shape}")
    # 4 px as the data README; more around a segmented lesion, whose edge Otsu puts inside
    # the blurry border.
    skin = ~(grow(lesion, 4 if method == "mask" else 8) | hair | rim | specular)
    if skin.sum() < max(200 * scale**2, 0.03 * h * w):
        ring = border_band(h, w)
        skin = ring & ~(rim | specular)
        if skin.sum() < 16:
            skin = ring & ~specular
        method = "ring"
    if skin.sum() == 0:
        return {"ita": None, "bin": "unknown", "group": "unknown", "reliable": False,
                "method": method, "skin_px": 0, "skin_L": None, "skin_b": None}
    lightness_px, b_px = lightness[skin], b_star[skin]
    ita_px = ita_degrees(lightness_px, b_px)
    ita = float(np.median(ita_px))
    median_l, median_b = float(np.median(lightness_px)), float(np.median(b_px))
    bin_name = ita_bin(ita)
    if median_l < 50 and median_b <= 0:  # dim and colour-cast: the formula alone says "dark"
        bin_name = "unknown"
    return {
        "ita": round(ita, 2),
        "bin": bin_name,
        "group": tone_group(bin_name),
        "reliable": bool(median_b > 0 and method != "ring"),
        "method": method,
        "skin_px": int(skin.sum()),
        "skin_L": round(median_l, 2),
        "skin_b": round(median_b, 2),
    }


def _masked_median(lab: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each image's median CIELAB (N, 3) over the pixels of the bool `mask` (N, 1, H, W);
    0 where it has none."""
    import torch

    flat = lab.flatten(2)
    inside = mask.flatten(2).expand_as(flat)
    return torch.where(inside, flat, torch.nan).nanmedian(dim=2).values.nan_to_num(0.0)


def _skin_median(lab: torch.Tensor, lesion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's median CIELAB (N, 3) over its skin (outside the bool `lesion` mask; 0
    where it has none) and whether it has the 16 skin pixels a re-tint needs (N,)."""
    return _masked_median(lab, ~lesion), (~lesion).flatten(1).sum(1) >= 16


def _target_lightness(ita: torch.Tensor, b_star: torch.Tensor) -> torch.Tensor:
    """The L* of a skin of this ITA and b* (ITA = atan((L* − 50) / b*))."""
    import torch

    return 50 + b_star * torch.tan(torch.deg2rad(ita))


def retint_skin_torch(images: torch.Tensor, lesion: torch.Tensor, ita: torch.Tensor,
                      b_star: torch.Tensor) -> torch.Tensor:
    """Re-tint the skin around each lesion to a target (ITA, b*) in CIELAB, keeping texture.

    `images` float (N, 3, H, W) sRGB in [0, 1]; `lesion` (N, 1, H, W) bool; `ita`, `b_star`
    (N,). The skin gets one shift of L* and b* that moves its median to the target's, each
    pixel keeping its offset from the median (hair, vessels, texture stay); a* is kept.
    Expert masks are drawn with a margin of skin inside, so a pixel inside the mask moves by
    its share of skin colour (below); the lesion's core colours stay exactly as they were.
    An image with fewer than 16 skin pixels is returned unchanged. The skin-tone
    counterfactual test and the re-tint training augmentation both call this one function."""
    import torch
    from kornia.color import lab_to_rgb, rgb_to_lab

    n = images.shape[0]
    lesion = lesion.bool()
    lab = rgb_to_lab(images)
    median, enough = _skin_median(lab, lesion)
    lesion_median = _masked_median(lab, lesion)  # 0 where an image has none: guarded below
    # Inside the mask a pixel is read as a blend of the lesion's median colour and the
    # skin's: it moves by its share of skin (projection on the lesion → skin line), so the
    # mask's margin of skin moves fully, the lesion's core (at or beyond its median) not at
    # all, and the rim between in proportion: no ring of old skin (a halo, a cue of its own).
    axis = (median - lesion_median)[..., None, None]
    share = ((lab - lesion_median[..., None, None]) * axis).sum(1, keepdim=True) / (
        axis.pow(2).sum(1, keepdim=True).clamp(min=1e-6))
    inside = ((share - 0.2) / 0.6).clamp(0, 1)  # near the lesion's median: kept exactly
    weight = torch.where(lesion, inside, torch.ones_like(inside))
    weight = torch.where(enough.view(n, 1, 1, 1), weight, torch.zeros_like(weight))
    shift_l = (_target_lightness(ita, b_star) - median[:, 0]).view(n, 1, 1, 1)
    shift_b = (b_star - median[:, 2]).view(n, 1, 1, 1)
    moved = torch.cat([(lab[:, :1] + shift_l * weight).clamp(0, 100), lab[:, 1:2],
                       lab[:, 2:] + shift_b * weight], 1)
    rgb = lab_to_rgb(moved, clip=True)
    return torch.where(weight == 0, images, rgb)


def retint_field_torch(images: torch.Tensor, lesion: torch.Tensor, ita: torch.Tensor,
                       b_star: torch.Tensor) -> torch.Tensor:
    """The whole field re-tinted, lesion included, so that the skin reaches the target
    (ITA, b*) and the lesion keeps its contrast with it: one gain per colour channel in
    linear RGB, the ratio of the target skin colour to the skin's median colour (a* kept).

    Melanin in the epidermis filters light over the lesion as over the skin around it, so a
    lesion seen on darker skin is darker too; a gain in linear light keeps each pixel's
    optical density above the skin (its contrast, texture and colour ratios). The companion
    of `retint_skin_torch`, whose untouched lesion can end up paler than its new skin — a
    contrast no pigmented lesion has. Same arguments; images without 16 skin pixels
    unchanged."""
    import torch
    from kornia.color import lab_to_rgb, linear_rgb_to_rgb, rgb_to_lab, rgb_to_linear_rgb

    n = images.shape[0]
    lesion = lesion.bool()
    median, enough = _skin_median(rgb_to_lab(images), lesion)
    target = torch.stack([_target_lightness(ita, b_star).to(median.dtype), median[:, 1],
                          b_star.to(median.dtype)], 1)
    colours = torch.stack([median, target], 2)[..., None]  # (N, 3, 2, 1): from, to
    linear = rgb_to_linear_rgb(lab_to_rgb(colours, clip=True)).clamp(min=1e-4)
    gain = (linear[:, :, 1] / linear[:, :, 0]).view(n, 3, 1, 1)
    moved = linear_rgb_to_rgb((rgb_to_linear_rgb(images) * gain).clamp(0, 1))
    return torch.where(enough.view(n, 1, 1, 1), moved, images)


def segment_by_contrast(lab: np.ndarray) -> np.ndarray:
    """A lesion mask from CIELAB (3, H, W) that works on any skin: the pixels far (Otsu on
    the smoothed ΔE) from the median colour of the image's outer band, which is skin in
    dermoscopy, then the large blob near the centre, holes filled. Unlike `segment_lesion`
    (dark on L*) it finds a lesion paler than the skin around it, as on darker skin."""
    ring = border_band(*lab.shape[1:])
    valid = lab[0] >= 20  # not the dermatoscope's dark rim
    skin = ring & valid
    reference = np.median(lab[:, skin if skin.sum() >= 16 else ring], axis=1)
    distance = np.sqrt(((lab - reference[:, None, None]) ** 2).sum(0))
    return otsu_blob(distance, valid, above=True)


def central_blob(candidates: np.ndarray) -> np.ndarray:
    """The connected blob of `candidates` that is large and near the centre (dermoscopy
    centres the lesion), holes filled; all False when there is none."""
    from scipy import ndimage

    h, w = candidates.shape
    labels, count = ndimage.label(candidates)
    if count == 0:
        return np.zeros((h, w), bool)
    index = np.arange(1, count + 1)
    areas = ndimage.sum_labels(candidates, labels, index)
    centres = np.array(ndimage.center_of_mass(candidates, labels, index)).reshape(-1, 2)
    distance = np.hypot((centres[:, 0] - h / 2) / h, (centres[:, 1] - w / 2) / w)
    score = areas * np.exp(-(distance**2) / (2 * 0.25**2))
    return ndimage.binary_fill_holes(labels == index[int(np.argmax(score))])


def normalise_skin_tone(pixels: torch.Tensor, reference: tuple[float, float] | list[float],
                        ) -> torch.Tensor:
    """The skin around each lesion of `pixels` (N, 3, H, W) in [-1, 1] re-tinted to
    `reference` (ITA°, b*) with `retint_skin_torch`, the lesion segmented here
    (`segment_by_contrast`; there is no expert mask at inference). An image whose lesion
    cannot be segmented, or that has too little skin, is returned as it was: nothing is
    better than re-tinting the lesion itself."""
    import torch
    from kornia.color import rgb_to_lab

    ita, b_star = (float(v) for v in reference)
    rgb = ((pixels.detach().float().cpu() + 1) / 2).clamp(0, 1).double()
    lesions = np.stack([segment_by_contrast(lab) for lab in rgb_to_lab(rgb).numpy()])
    n = len(rgb)
    usable = torch.from_numpy(lesions.reshape(n, -1).any(1))
    if not usable.any():
        return pixels
    # An unusable image gets an all-lesion mask: no skin, left as it was.
    lesion = torch.from_numpy(lesions)[:, None] | ~usable.view(n, 1, 1, 1)
    moved = retint_skin_torch(rgb, lesion, torch.full((n,), ita, dtype=torch.float64),
                              torch.full((n,), b_star, dtype=torch.float64))
    return (moved * 2 - 1).to(pixels.dtype).to(pixels.device)
