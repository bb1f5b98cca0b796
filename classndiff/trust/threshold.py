"""The malignant call: P(malignant) ≥ a threshold fitted on the validation split for a stated
sensitivity (by default 0.80), rather than 0.5. A sensitivity target is the policy a
dermoscopy classifier is usually read at (specificity at the readers' sensitivity), and it
lets a model that ranks lesions well but calls them malignant less readily be used at the
operating point a clinician expects. Fitted once by `classndiff calibrate`, stored in
`config.calibration`, applied by `ClassNDiffPipeline.diagnose`. Numpy only."""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_TARGET_SENSITIVITY = 0.80


def rates(p_malignant: np.ndarray, truth: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of calling P(malignant) ≥ `threshold` malignant."""
    p_malignant, truth = np.asarray(p_malignant), np.asarray(truth, dtype=bool)
    called = p_malignant >= threshold
    return float(called[truth].mean()), float((~called[~truth]).mean())


def fit_threshold(p_malignant: np.ndarray, truth: np.ndarray, target_sensitivity: float) -> float:
    """The highest threshold whose sensitivity on (`p_malignant`, `truth`) is at least
    `target_sensitivity`: the most specific call that still meets the target (a target of 0
    still calls the highest-scored malignant lesion)."""
    if not 0.0 <= target_sensitivity <= 1.0:
        raise ValueError(f"target sensitivity must be in [0, 1], got {target_sensitivity}")
    p_malignant, truth = np.asarray(p_malignant, dtype=np.float64), np.asarray(truth, dtype=bool)
    positives = np.sort(p_malignant[truth])[::-1]
    if positives.size == 0:
        raise ValueError("no malignant lesions to fit a threshold on")
    # Calling the k highest-scored malignant lesions gives sensitivity k / n: the threshold is
    # the score of the k-th, k the fewest that reach the target (ties only add sensitivity).
    needed = int(np.ceil(target_sensitivity * positives.size - 1e-9))
    return float(positives[max(needed, 1) - 1])


def cross_fitted_rates(
    p_malignant: np.ndarray, truth: np.ndarray, groups: list[str] | np.ndarray,
    target_sensitivity: float, folds: int = 2, seed: int = 0,
) -> dict[str, Any]:
    """Sensitivity and specificity of a fitted threshold on images it was NOT fitted on:
    `groups` (lesion ids: one lesion's images stay together) are cut into `folds` parts; the
    threshold fitted on the others is applied to each part, and the calls are pooled."""
    p_malignant, truth = np.asarray(p_malignant, dtype=np.float64), np.asarray(truth, dtype=bool)
    groups = np.asarray(groups)
    unique = np.unique(groups)
    fold_of_group = dict(zip(np.random.default_rng(seed).permutation(unique),
                             np.arange(len(unique)) % folds))
    fold = np.array([fold_of_group[g] for g in groups])
    called = np.zeros_like(truth)
    thresholds = []
    for k in range(folds):
        held_out = fold == k
        threshold = fit_threshold(p_malignant[~held_out], truth[~held_out], target_sensitivity)
        thresholds.append(threshold)
        called[held_out] = p_malignant[held_out] >= threshold
    return {"target_sensitivity": target_sensitivity, "folds": folds, "seed": seed,
            "thresholds": thresholds,
            "sensitivity": float(called[truth].mean()),
            "specificity": float((~called[~truth]).mean())}
