"""The report's statistics: operating thresholds, per-group metrics with lesion-grouped
bootstrap intervals and the gaps between groups, Wilson intervals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from classndiff.evaluation.bootstrap import (
    GROUP_METRICS,
    MALIGNANT,
    fast_metrics,
)
from classndiff.labels import DX_CODES

HEADLINE = ("accuracy", "balanced_accuracy", "macro_auc", "malignant_auc")
# Gaps between fixed pairs (reference first), so each has the same meaning in every resample.
GAP_PAIRS = {"tone": [("lighter", "brown"), ("lighter", "darker")], "sex": [("female", "male")]}


# The operating points the report reads its malignant sensitivity at, most preferred first:
# the model's own malignant call (`classndiff calibrate`), the Youden point on val, 0.5.
OPERATING_POINTS = ("model_call", "youden_val", "0.5")


def operating_point(thresholds: dict[str, Any]) -> str:
    """The key of the operating point the intervals and group metrics are read at."""
    return next(k for k in OPERATING_POINTS if k in thresholds)


def youden_threshold(probs: np.ndarray, labels: np.ndarray) -> float:
    """The P(malignant) threshold that maximises sensitivity + specificity − 1 (on val)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(MALIGNANT[labels], probs[:, MALIGNANT].sum(1))
    # thresholds[0] is +inf (flag nothing): never a usable operating point
    best = 1 + int(np.argmax((tpr - fpr)[1:]))
    return float(min(1.0, thresholds[best]))


def group_statistic(
    probs: np.ndarray,
    labels: np.ndarray,
    attributes: dict[str, np.ndarray],
    threshold: float,
    other: np.ndarray | None = None,
) -> Callable[[np.ndarray], dict[str, float]]:
    """A statistic for `bootstrap`: metrics overall and per group of each attribute, the
    gaps of GAP_PAIRS, and, with `other` (a second model's probabilities on the same
    images), the paired differences this − other."""

    def stat(index: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        p, y = probs[index], labels[index]
        for name, value in fast_metrics(p, y, threshold).items():
            out[f"overall/{name}"] = value
        if other is not None:
            for name, value in fast_metrics(other[index], y, threshold).items():
                out[f"diff/{name}"] = out[f"overall/{name}"] - value
        for attribute, groups in attributes.items():
            g = groups[index]
            per = {}
            for group in np.unique(groups):
                if group in ("unknown", ""):
                    continue
                per[group] = fast_metrics(p[g == group], y[g == group], threshold)
                for name, value in per[group].items():
                    out[f"{attribute}/{group}/{name}"] = value
            for a, b in GAP_PAIRS.get(attribute, []):
                if a in per and b in per:
                    for name in GROUP_METRICS:
                        out[f"gap/{attribute}/{a}-{b}/{name}"] = per[a][name] - per[b][name]
        return out

    return stat


def group_sizes(groups: np.ndarray, lesion_ids: Sequence[Any], labels: np.ndarray
                ) -> dict[str, dict[str, Any]]:
    """Images, lesions, and malignant images per group."""
    lesions = np.asarray(lesion_ids, dtype=str)
    out = {}
    for group in np.unique(groups):
        m = groups == group
        out[str(group)] = {"images": int(m.sum()), "lesions": int(len(np.unique(lesions[m]))),
                           "malignant_images": int(MALIGNANT[labels[m]].sum()),
                           "classes": {DX_CODES[c]: int((labels[m] == c).sum())
                                       for c in np.unique(labels[m])}}
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95 % interval for k successes in n: sensible at n = 4, where a
    percentile bootstrap collapses to a point when every image is right (or wrong)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def nest(flat: dict[str, dict[str, float]]) -> dict[str, Any]:
    """{"tone/brown/accuracy": ci} → {"tone": {"brown": {"accuracy": ci}}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *path, leaf = key.split("/")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = {k: (round(v, 5) if isinstance(v, float) and not np.isnan(v) else
                          (None if isinstance(v, float) else v)) for k, v in value.items()}
    return out
