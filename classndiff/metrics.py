"""Classification metrics shared by training-time validation and `classndiff evaluate`."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from classndiff.labels import DX_CODES, malignant_mask


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (top-label)."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro one-vs-rest AUC, malignant-vs-benign AUC, ECE, and
    per class: one-vs-rest AUC, sensitivity and specificity at the operating point (the
    top class is the prediction)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    predictions = probs.argmax(1)
    out = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
        "ece": expected_calibration_error(probs, labels),
        "n": int(len(labels)),
    }
    for c, code in enumerate(DX_CODES):  # at the operating point: the top class
        positive, predicted = labels == c, predictions == c
        if positive.any():
            out[f"sensitivity_{code}"] = float(predicted[positive].mean())
        if (~positive).any():
            out[f"specificity_{code}"] = float((~predicted[~positive]).mean())
    present = [c for c in range(len(DX_CODES)) if 0 < (labels == c).sum() < len(labels)]
    per_class = {DX_CODES[c]: float(roc_auc_score(labels == c, probs[:, c])) for c in present}
    out["macro_auc"] = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    out.update({f"auc_{code}": value for code, value in per_class.items()})
    is_malignant = np.array(malignant_mask())[labels]
    if 0 < is_malignant.sum() < len(labels):
        p_malignant = probs[:, np.array(malignant_mask())].sum(1)
        out["malignant_auc"] = float(roc_auc_score(is_malignant, p_malignant))
    else:
        out["malignant_auc"] = float("nan")
    return out


def selection_score(metrics: dict[str, float]) -> float:
    """What best-by-validation means: the mean of the four headline measures."""
    keys = ("accuracy", "balanced_accuracy", "macro_auc", "malignant_auc")
    return float(np.nanmean([metrics[k] for k in keys]))
