"""The report's figures: confusion matrix, ROC curves, reliability diagram, per-group
intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from classndiff.evaluation.bootstrap import (
    GROUP_METRICS,
    MALIGNANT,
    auc,
)
from classndiff.labels import DX_CODES, MALIGNANT_DX
from classndiff.plots import pyplot, save_figure


# ------------------------------------------------------------------ plots
def plot_confusion(labels: np.ndarray, probs: np.ndarray, path: Path, title: str = "") -> Path:
    plt = pyplot()
    matrix = np.zeros((len(DX_CODES), len(DX_CODES)), int)
    np.add.at(matrix, (labels, probs.argmax(1)), 1)
    rows = matrix / np.clip(matrix.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(DX_CODES)):
        for j in range(len(DX_CODES)):
            ax.text(j, i, f"{rows[i, j]:.2f}\n({matrix[i, j]})", ha="center", va="center",
                    fontsize=6.5, color="white" if rows[i, j] > 0.6 else "black")
    ticks = [f"{c}\nn={int(matrix[i].sum())}" for i, c in enumerate(DX_CODES)]
    ax.set_xticks(range(len(DX_CODES)), DX_CODES)
    ax.set_yticks(range(len(DX_CODES)), ticks, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (row-normalised; counts in brackets)")
    ax.set_title(title or "confusion matrix")
    return save_figure(fig, path, dpi=90)


def plot_roc(labels: np.ndarray, probs: np.ndarray, path: Path, threshold: float | None = None
             ) -> Path:
    from sklearn.metrics import roc_curve

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for c, code in enumerate(DX_CODES):
        positive = labels == c
        if 0 < positive.sum() < len(labels):
            fpr, tpr, _ = roc_curve(positive, probs[:, c])
            axes[0].plot(fpr, tpr, lw=1.2,
                         label=f"{code} AUC {auc(positive, probs[:, c]):.3f} (n={positive.sum()})")
    is_malignant = MALIGNANT[labels]
    p_malignant = probs[:, MALIGNANT].sum(1)
    if 0 < is_malignant.sum() < len(labels):
        fpr, tpr, thr = roc_curve(is_malignant, p_malignant)
        axes[1].plot(fpr, tpr, color="#c44e52",
                     label=f"malignant AUC {auc(is_malignant, p_malignant):.3f}")
        for t, marker in ((0.5, "o"), (threshold, "s")):
            if t is not None:
                flagged = p_malignant >= t
                axes[1].plot(1 - (~flagged[~is_malignant]).mean(), flagged[is_malignant].mean(),
                             marker, color="black", label=f"threshold {t:.3f}")
    for ax, title in zip(axes, ("one-vs-rest per class", f"malignant ({'+'.join(MALIGNANT_DX)}) "
                                                          "vs benign")):
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(title)
        ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path, dpi=90)


def plot_reliability(labels: np.ndarray, probs: np.ndarray, path: Path, ece: float,
                     bins: int = 15) -> Path:
    plt = pyplot()
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    accuracy = np.full(bins, np.nan)
    share = np.zeros(bins)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (confidence > lo) & (confidence <= hi)
        share[i] = inside.mean()
        if inside.any():
            accuracy[i] = correct[inside].mean()
    fig, ax = plt.subplots(figsize=(4.6, 4.3))
    ax.bar(centres, np.nan_to_num(accuracy), width=1 / bins, edgecolor="black", color="#4c72b0",
           alpha=0.8, label="accuracy in bin")
    ax.bar(centres, share, width=1 / bins, color="#dd8452", alpha=0.5, label="share of images")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy / share")
    ax.set_title(f"reliability, n={len(labels)}: ECE {ece:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path, dpi=90)


def plot_groups(cis: dict[str, Any], sizes: dict[str, Any], attribute: str, path: Path,
                series: dict[str, dict[str, Any]] | None = None) -> Path:
    """Bars with 95 % intervals per group, group sizes in the labels. `series` maps a label
    (e.g. a model name) to its nested CIs for the same attribute; default one series."""
    plt = pyplot()
    series = series or {"": cis}
    groups = [g for g in next(iter(series.values())).get(attribute, {}) if g in sizes]
    metrics = [m for m in GROUP_METRICS if m != "specificity"] + ["specificity"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.3 * len(metrics), 3.4), sharey=True)
    width = 0.8 / len(series)
    for k, (label, nested) in enumerate(series.items()):
        for ax, metric in zip(axes, metrics):
            xs, vals, errs = [], [], [[], []]
            for i, g in enumerate(groups):
                ci = nested.get(attribute, {}).get(g, {}).get(metric, {})
                v = ci.get("value")
                if v is None:
                    continue
                lo = ci.get("lo") if ci.get("lo") is not None else v
                hi = ci.get("hi") if ci.get("hi") is not None else v
                xs.append(i + (k - (len(series) - 1) / 2) * width)
                vals.append(v)
                errs[0].append(max(0.0, v - lo))
                errs[1].append(max(0.0, hi - v))
            ax.bar(xs, vals, width=width, yerr=errs, capsize=3, label=label or None,
                   color=f"C{k}", alpha=0.85)
            ax.set_title(metric.replace("_", " "), fontsize=9)
            ax.set_xticks(range(len(groups)),
                          [f"{g}\nn={sizes[g]['images']}/{sizes[g]['lesions']}L" for g in groups],
                          fontsize=7)
            ax.set_ylim(0, 1.05)
    if len(series) > 1:
        axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"per {attribute}, 95 % CI by lesion bootstrap (n = images / lesions)",
                 fontsize=9)
    return save_figure(fig, path, dpi=80)
