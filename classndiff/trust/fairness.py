"""A skin-tone counterfactual, the test HAM10000 cannot give (94 % of it is lighter skin):
re-tint only the skin around the lesion to the ITA of another tone group, in CIELAB, keeping
its texture, leave the lesion's pixels untouched, and see whether the diagnosis changes.

    retint_skin(image, lesion_mask, "darker")      # uint8 HWC → uint8 HWC
    flip_report(probs_original, probs_retinted, labels)

A re-tinted lesion is a proxy: it says whether the classifier leans on the colour of the
surrounding skin, not how it performs on patients with dark skin."""

from __future__ import annotations

from typing import Any

import numpy as np

from classndiff.config import SkinToneCheck
from classndiff.labels import malignant_mask
from classndiff.trust.skintone import ita_degrees, retint_field_torch, retint_skin_torch

# Target skin of each group: (ITA in degrees, b*), inside the group's Del Bino range
# (brown group = intermediate + tan, 10° < ITA ≤ 41°; darker group = ITA ≤ 10°); L* follows
# from ITA = atan((L* − 50) / b*). The b* values are typical of such skin in dermoscopy.
RETINT_TARGETS: dict[str, tuple[float, float]] = {"brown": (25.0, 20.0),
                                                  "darker": (-15.0, 24.0)}


def retint_skin(image: np.ndarray, lesion: np.ndarray,
                target: str | tuple[float, float]) -> np.ndarray:
    """`image` uint8 (H, W, 3), `lesion` (H, W) bool or {0, 1}; `target` a group name or
    (ITA°, b*). The skin moves to the target in CIELAB, texture and lesion kept (see
    `skintone.retint_skin_torch`, the one implementation, also used to augment training)."""
    return retint_many(np.asarray(image)[None], np.asarray(lesion)[None], target)[0]


def retint_many(images: np.ndarray, lesions: np.ndarray, target: str | tuple[float, float],
                batch_size: int = 64, whole_field: bool = False) -> np.ndarray:
    """`retint_skin` for uint8 (N, H, W, 3) images and (N, H, W) masks, in batches; with
    `whole_field` the lesion is darkened with its skin, its contrast kept
    (`skintone.retint_field_torch`)."""
    import torch

    ita, b_target = RETINT_TARGETS[target] if isinstance(target, str) else target
    retint = retint_field_torch if whole_field else retint_skin_torch
    out = np.array(images, np.uint8)
    for start in range(0, len(out), batch_size):
        chunk = slice(start, start + batch_size)
        pixels = torch.from_numpy(out[chunk]).permute(0, 3, 1, 2).double() / 255
        mask = torch.from_numpy(np.asarray(lesions[chunk], bool))[:, None]
        n = len(pixels)
        moved = retint(pixels, mask, torch.full((n,), float(ita), dtype=torch.float64),
                       torch.full((n,), float(b_target), dtype=torch.float64))
        rgb = (moved.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        changed = (moved != pixels).any(1).numpy()  # untouched pixels keep their exact bytes
        out[chunk][changed] = rgb[changed]
    return out


def lesion_paler_than_skin(image: np.ndarray, lesion: np.ndarray) -> bool:
    """Whether the lesion (median L* inside the mask) is paler than the skin around it
    (median L* outside): after a re-tint of the skin alone, a faint lesion on light skin
    becomes a pale patch on dark skin, which no pigmented lesion is."""
    from skimage.color import rgb2lab

    lightness = rgb2lab(image.astype(np.float64) / 255)[..., 0]
    inside = np.asarray(lesion, bool)
    if not inside.any() or inside.all():
        return False
    return bool(np.median(lightness[inside]) > np.median(lightness[~inside]))


def skin_ita(image: np.ndarray, lesion: np.ndarray) -> float:
    """Median ITA (degrees) of the skin outside the lesion."""
    from skimage.color import rgb2lab

    lab = rgb2lab(image.astype(np.float64) / 255)
    skin = ~np.asarray(lesion, bool)
    return float(np.median(ita_degrees(lab[..., 0][skin], lab[..., 2][skin], floor=1e-3)))


# Bands of the original top-class probability in which the flips are also counted: where a
# change of skin moves the top class tells a reader how far to trust a confident answer.
CONFIDENCE_BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.5), (0.5, 0.8), (0.8, 1.0))


def band_label(low: float, high: float) -> str:
    """"[0.5, 0.8)"; the top band closed at 1, as `flip_report` counts it."""
    return f"[{low:g}, {high:g}{']' if high >= 1 else ')'}"


def flip_report(original: np.ndarray, retinted: np.ndarray, labels: np.ndarray,
                inverted: np.ndarray | None = None,
                malignant_threshold: float | None = None) -> dict[str, Any]:
    """How much a re-tint changes the answers: share of top-class flips (overall and per band
    of the original's top-class probability), mean change of P(malignant), accuracy,
    malignant AUC and malignant sensitivity before and after. With `inverted` (bool per image:
    the re-tint made a lesion darker than its skin paler than it, `lesion_paler_than_skin`
    before and after) the flips are also counted apart for those lesions."""
    from sklearn.metrics import roc_auc_score

    malignant = np.asarray(malignant_mask())
    p_before, p_after = original[:, malignant].sum(1), retinted[:, malignant].sum(1)
    truth = malignant[labels]
    auc = (lambda p: float(roc_auc_score(truth, p))) if 0 < truth.sum() < len(truth) else (
        lambda p: float("nan"))
    # Share of malignant lesions called malignant (P(malignant) ≥ 0.5, or the model's call).
    def sensitivity(p: np.ndarray, threshold: float = 0.5) -> float:
        return float((p[truth] >= threshold).mean()) if truth.any() else float("nan")

    flipped = original.argmax(1) != retinted.argmax(1)
    confidence = original.max(1)
    bands = []
    for low, high in CONFIDENCE_BANDS:
        inside = (confidence >= low) & ((confidence < high) | (high >= 1.0))
        bands.append({"top_probability": [low, high], "n": int(inside.sum()),
                      "flip_rate": float(flipped[inside].mean()) if inside.any() else None})
    by_contrast = {}
    if inverted is not None:
        inverted = np.asarray(inverted, bool)
        for name, group in (("kept", ~inverted), ("inverted", inverted)):
            by_contrast[name] = {"n": int(group.sum()), "flip_rate": (
                float(flipped[group].mean()) if group.any() else None)}
    return {
        "n": int(len(labels)),
        "flip_rate": float(flipped.mean()),
        "flip_rate_by_confidence": bands,
        **({"flip_rate_by_contrast": by_contrast} if by_contrast else {}),
        "malignant_change_mean": float((p_after - p_before).mean()),
        "malignant_change_abs_mean": float(np.abs(p_after - p_before).mean()),
        "accuracy_before": float((original.argmax(1) == labels).mean()),
        "accuracy_after": float((retinted.argmax(1) == labels).mean()),
        "malignant_auc_before": auc(p_before),
        "malignant_auc_after": auc(p_after),
        "malignant_sensitivity_before": sensitivity(p_before),
        "malignant_sensitivity_after": sensitivity(p_after),
        # The model's own malignant call (its validation-fitted threshold), when it has one.
        **({"malignant_call_threshold": malignant_threshold,
            "malignant_call_sensitivity_before": sensitivity(p_before, malignant_threshold),
            "malignant_call_sensitivity_after": sensitivity(p_after, malignant_threshold)}
           if malignant_threshold is not None else {}),
    }


def _finite(value: Any) -> float | None:
    """A float, or None for NaN / None (no malignant lesion in the split: JSON has no NaN)."""
    return float(value) if value is not None and np.isfinite(value) else None


def skin_tone_check_record(whole_field: dict[str, dict[str, Any]], split: str,
                           temperature: float | None = None,
                           test_views: int | None = None) -> SkinToneCheck:
    """The weights' `SkinToneCheck` from the counterfactual benchmark's whole-field reports
    ({group: `flip_report` output}), measured with this `temperature` and `test_views` (and
    the malignant call's threshold, when the reports read one)."""
    groups = {}
    for group, report in whole_field.items():
        groups[group] = {
            "flip_rate": report["flip_rate"],
            "bands": [[*b["top_probability"], b["flip_rate"], b["n"]]
                      for b in report["flip_rate_by_confidence"]],
            "sensitivity_before": _finite(report["malignant_sensitivity_before"]),
            "sensitivity_after": _finite(report["malignant_sensitivity_after"]),
        }
        if "malignant_call_threshold" in report:
            groups[group]["call_sensitivity_before"] = _finite(
                report["malignant_call_sensitivity_before"])
            groups[group]["call_sensitivity_after"] = _finite(
                report["malignant_call_sensitivity_after"])
    first = next(iter(whole_field.values()), {})
    return SkinToneCheck(split=split, n=first.get("n", 0), groups=groups,
                         temperature=temperature, test_views=test_views,
                         malignant_threshold=first.get("malignant_call_threshold"))


def skin_tone_caution(check: SkinToneCheck | None, group: str | None, confidence: float,
                      temperature: float | None = None,
                      test_views: int | None = None,
                      malignant_threshold: float | None = None) -> dict[str, Any] | None:
    """What the weights' whole-field re-tint test says about an answer of this `confidence`
    on skin of this `group`: the group's flips overall and in the answer's confidence band,
    and the malignant sensitivity before and after (at 0.5; and the call's, when the record
    read it at this `malignant_threshold`). None for a group it did not measure
    (lighter skin, unknown), weights without the record, or a record measured with another
    `temperature` or count of `test_views` than the answer was read with."""
    if check is None or group not in check.groups:
        return None
    if (check.temperature is not None and temperature is not None
            and abs(check.temperature - temperature) > 1e-6) or (
            check.test_views is not None and test_views is not None
            and check.test_views != test_views):
        return None
    measured = check.groups[group]
    band = next(((low, high, rate, n) for low, high, rate, n in measured["bands"]
                 if low <= confidence < high or (high >= 1 and confidence >= low)), None)
    return {"group": group, "split": check.split, "n": check.n,
            "flip_rate": measured["flip_rate"],
            "band": None if band is None else [band[0], band[1]],
            "band_flip_rate": None if band is None or not band[3] else band[2],
            "sensitivity_before": measured["sensitivity_before"],
            "sensitivity_after": measured["sensitivity_after"],
            # The call's figures only when read at the threshold the answer is called at.
            **({"call_threshold": malignant_threshold,
                "call_sensitivity_before": measured["call_sensitivity_before"],
                "call_sensitivity_after": measured["call_sensitivity_after"]}
               if malignant_threshold is not None and check.malignant_threshold is not None
               and abs(check.malignant_threshold - malignant_threshold) <= 1e-9
               and "call_sensitivity_after" in measured else {})}
