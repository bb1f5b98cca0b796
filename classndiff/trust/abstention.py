"""Trust: temperature calibration and out-of-distribution abstention, fitted once per
checkpoint by `classndiff calibrate WEIGHTS` and stored with the weights.

* Calibration: one temperature T, fitted on the validation split by minimising the NLL of
  softmax(logits / T) (LBFGS on log T). Kept in `config.calibration`.
* Abstention: an upload is "not a dermoscopic lesion image" when its penultimate classifier
  features are far from every class (Mahalanobis distance to the nearest class mean under a
  shared Ledoit-Wolf covariance, fitted on the training split), or when simple colour and
  texture statistics of the image are far from those of the training images (one Gaussian,
  same estimator). Each threshold is a high percentile of the validation scores, so a known
  share of real lesions is turned away. Statistics are tensors named `trust.*` in
  model.safetensors; thresholds are in `config.abstention`.

`classndiff trust WEIGHTS --all` measures the bars: natural photos / test lesions
rejected, ECE on the test split, ITA agreement with the data's `ita` column, and a corpus of
bad inputs through `diagnose`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from classndiff.config import Abstention
from classndiff.plots import pyplot, save_figure

logger = logging.getLogger(__name__)

STATS_SIZE = 64  # image statistics are taken at this side (cheap, and enough for colour)
STAT_NAMES: tuple[str, ...] = tuple(
    [f"{c}_{s}" for c in ("L", "a", "b") for s in ("mean", "std", "p10", "p50", "p90")]
    + ["chroma_mean", "centre_minus_border_L", "gradient_mean", "gradient_p90", "saturated"]
)
DEFAULT_PERCENTILE = 99.5  # per detector: about 1 % of validation lesions turned away in all


# ------------------------------------------------------------------ features and statistics
def logits_and_features(
    classifier: nn.Module, pixels: torch.Tensor, views: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batched forward pass → (logits averaged over `views` dihedral views, pooled
    penultimate features of the image as given: what the abstention statistics read)."""
    logits, _, features = classifier.forward_views(pixels, views)
    return logits.float(), features.float()


def image_statistics(pixels: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] → (N, len(STAT_NAMES)) colour and texture statistics in
    CIELAB: what separates a dermoscopy photo from a cat, a page of text or a drawing even
    when the classifier's features do not."""
    from skimage.color import rgb2lab

    x = pixels.detach().float().cpu()
    if x.shape[-1] != STATS_SIZE:
        x = F.interpolate(x, size=(STATS_SIZE, STATS_SIZE), mode="area")
    rgb = ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy().astype(np.float64)
    lab = rgb2lab(rgb)  # (N, S, S, 3)
    n = lab.shape[0]
    flat = lab.reshape(n, -1, 3)
    parts = []
    for c in range(3):
        v = flat[..., c]
        parts += [v.mean(1), v.std(1), *np.percentile(v, [10, 50, 90], axis=1)]
    chroma = np.hypot(flat[..., 1], flat[..., 2]).mean(1)
    lightness = lab[..., 0]
    s = STATS_SIZE
    centre = lightness[:, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4].mean((1, 2))
    border = (lightness.sum((1, 2)) - centre * (s // 2) ** 2) / (s * s - (s // 2) ** 2)
    gy, gx = np.gradient(lightness, axis=(1, 2))
    gradient = np.hypot(gx, gy).reshape(n, -1)
    saturated = ((rgb <= 1 / 255) | (rgb >= 254 / 255)).all(-1).reshape(n, -1).mean(1)
    parts += [chroma, centre - border, gradient.mean(1), np.percentile(gradient, 90, axis=1),
              saturated * 100]
    return torch.from_numpy(np.stack(parts, 1)).float()


# ------------------------------------------------------------------ calibration
def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200,
    bounds: tuple[float, float] = (0.05, 20.0),
) -> float:
    """The temperature T minimising NLL(softmax(logits / T), labels) (Guo et al. 2017).

    The NLL is convex in 1/T, so a bounded scalar search over log T finds it: no learning
    rate, no line search to go astray. A model no better than chance on the split wants
    T → ∞; the answer then stops at the upper bound (logged), which makes the probabilities
    nearly uniform, as they should be."""
    from scipy.optimize import minimize_scalar

    logits = logits.detach().double().cpu()
    labels = labels.detach().long().cpu()
    if len(labels) == 0:
        raise ValueError("no labelled logits to fit a temperature on")
    lo, hi = math.log(bounds[0]), math.log(bounds[1])

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    result = minimize_scalar(nll, bounds=(lo, hi), method="bounded",
                             options={"xatol": 1e-4, "maxiter": max_iter})
    log_t = float(result.x)
    if not math.isfinite(log_t):
        logger.warning("temperature fit failed (%s); keeping T = 1", result.message)
        return 1.0
    if hi - log_t < 1e-2 or log_t - lo < 1e-2:
        logger.warning("temperature fit stopped at the bound T = %.3g: the classifier is "
                       "barely better than chance on this split", math.exp(log_t))
    return math.exp(log_t)


def calibration_summary(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> dict[str, float]:
    """ECE and NLL before (T = 1) and after temperature scaling."""
    from classndiff.metrics import expected_calibration_error

    labels_np = labels.numpy()
    out = {}
    for name, t in (("before", 1.0), ("after", temperature)):
        probs = torch.softmax(logits.float() / t, 1)
        out[f"ece_{name}"] = expected_calibration_error(probs.numpy(), labels_np)
        out[f"nll_{name}"] = float(F.cross_entropy(logits.float() / t, labels.long()))
    return out


def reliability_diagram(
    logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    path: str | Path,
    bins: int = 15,
    title: str = "",
) -> Path:
    """Two panels, before and after temperature scaling: accuracy per confidence bin against
    the diagonal, with each bin's share of images."""
    plt = pyplot()

    from classndiff.metrics import expected_calibration_error

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4), sharey=True)
    edges = np.linspace(0, 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    panels = (("before", 1.0), (f"after (T = {temperature:.2f})", temperature))
    for ax, (name, t) in zip(axes, panels):
        probs = torch.softmax(logits.float() / t, 1).numpy()
        confidence, correct = probs.max(1), probs.argmax(1) == labels.numpy()
        accuracy, share = np.zeros(bins), np.zeros(bins)
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            inside = (confidence > lo) & (confidence <= hi)
            share[i] = inside.mean()
            accuracy[i] = correct[inside].mean() if inside.any() else np.nan
        ax.bar(centres, np.nan_to_num(accuracy), width=1 / bins, edgecolor="black",
               color="#4c72b0", alpha=0.8, label="accuracy")
        ax.bar(centres, share, width=1 / bins, color="#dd8452", alpha=0.5, label="share of images")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ece = expected_calibration_error(probs, labels.numpy(), bins)
        ax.set_title(f"{name}: ECE {ece:.3f}")
        ax.set_xlabel("confidence (top class)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy / share")
    axes[0].legend(loc="upper left")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=110)


# ------------------------------------------------------------------ abstention
def _ledoit_wolf_precision(centred: np.ndarray) -> np.ndarray:
    from sklearn.covariance import LedoitWolf

    estimator = LedoitWolf(assume_centered=True).fit(centred)
    precision = estimator.precision_.astype(np.float32)
    return (precision + precision.T) / 2  # exactly symmetric, so its upper triangle is all of it


def pack_symmetric(matrix: torch.Tensor) -> torch.Tensor:
    """The upper triangle (diagonal included) of a symmetric (D, D) matrix, row by row: half
    the bytes on disk (the 1280-d feature precision: 6.6 MB → 3.3 MB)."""
    rows, cols = torch.triu_indices(*matrix.shape)
    return matrix[rows, cols].contiguous()


def unpack_symmetric(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of `pack_symmetric`."""
    side = int((math.isqrt(8 * packed.numel() + 1) - 1) // 2)
    if side * (side + 1) // 2 != packed.numel():
        raise ValueError(f"{packed.numel()} values are not the upper triangle of a square matrix")
    rows, cols = torch.triu_indices(side, side)
    matrix = packed.new_zeros(side, side)
    matrix[rows, cols] = packed
    matrix[cols, rows] = packed
    return matrix


def _mahalanobis_min(x: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance to the nearest of `means` (K, D), for x (N, D)."""
    diff = x[:, None, :] - means[None]  # (N, K, D)
    return torch.einsum("nkd,de,nke->nk", diff, precision, diff).min(1).values


@dataclass
class OODDetector:
    """Two Gaussian outlier scores with validation-fitted thresholds."""

    feature_means: torch.Tensor  # (classes, D): class-conditional means of the features
    feature_precision: torch.Tensor  # (D, D): shared (tied) Ledoit-Wolf precision
    stats_mean: torch.Tensor  # (K,)
    stats_precision: torch.Tensor  # (K, K)
    feature_threshold: float
    stats_threshold: float
    percentile: float = DEFAULT_PERCENTILE

    PREFIX = "trust."

    @classmethod
    def fit(
        cls,
        train_features: torch.Tensor,
        train_labels: torch.Tensor,
        train_stats: torch.Tensor,
        val_features: torch.Tensor,
        val_stats: torch.Tensor,
        percentile: float = DEFAULT_PERCENTILE,
    ) -> OODDetector:
        f = train_features.double().numpy()
        y = train_labels.numpy()
        classes = sorted(set(y.tolist()))
        means = np.stack([f[y == c].mean(0) for c in classes])
        centred = f - means[np.searchsorted(classes, y)]
        s = train_stats.double().numpy()
        detector = cls(
            feature_means=torch.from_numpy(means).float(),
            feature_precision=torch.from_numpy(_ledoit_wolf_precision(centred)),
            stats_mean=torch.from_numpy(s.mean(0)).float(),
            stats_precision=torch.from_numpy(_ledoit_wolf_precision(s - s.mean(0))),
            feature_threshold=0.0, stats_threshold=0.0, percentile=percentile,
        )
        scores = detector.scores(val_features, val_stats)
        detector.feature_threshold = float(np.percentile(scores["feature"].numpy(), percentile))
        detector.stats_threshold = float(np.percentile(scores["stats"].numpy(), percentile))
        return detector

    def scores(self, features: torch.Tensor, stats: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "feature": _mahalanobis_min(features.float().cpu(), self.feature_means,
                                        self.feature_precision),
            "stats": _mahalanobis_min(stats.float().cpu(), self.stats_mean[None],
                                      self.stats_precision),
        }

    def check(self, features: torch.Tensor, stats: torch.Tensor) -> list[dict[str, Any]]:
        """Per image: {"abstain", "reason", "feature_score", "stats_score", thresholds}.
        Scores are reported as multiples of their threshold (> 1 means outlier)."""
        scores = self.scores(features, stats)
        out = []
        for f, s in zip(scores["feature"].tolist(), scores["stats"].tolist()):
            f_ratio, s_ratio = f / self.feature_threshold, s / self.stats_threshold
            reasons = []
            if f_ratio > 1:
                reasons.append("the classifier's features are unlike those of every lesion "
                               f"class it was trained on (outlier score {f_ratio:.1f}× the "
                               "threshold)")
            if s_ratio > 1:
                reasons.append("its colours and texture are unlike dermoscopy photos "
                               f"(outlier score {s_ratio:.1f}× the threshold)")
            reason = None
            if reasons:
                reason = ("This does not look like a dermoscopic image of a skin lesion: "
                          + "; and ".join(reasons) + ". No diagnosis is given.")
            out.append({"abstain": bool(reasons), "reason": reason,
                        "feature_score": round(f_ratio, 4), "stats_score": round(s_ratio, 4)})
        return out

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {
            f"{self.PREFIX}feature_means": self.feature_means,
            f"{self.PREFIX}feature_precision_packed": pack_symmetric(self.feature_precision),
            f"{self.PREFIX}stats_mean": self.stats_mean,
            f"{self.PREFIX}stats_precision": self.stats_precision,
        }

    def to_config(self, **about: Any) -> Abstention:
        """The thresholds as the config's typed record (`about`: how they were fitted)."""
        return Abstention(feature_threshold=self.feature_threshold,
                          stats_threshold=self.stats_threshold, percentile=self.percentile,
                          **about)

    @classmethod
    def from_pretrained(
        cls, extras: dict[str, torch.Tensor], settings: Abstention | None
    ) -> OODDetector | None:
        """From a pipeline's `extras` and `config.abstention`; None when the weights carry
        none. The feature precision is stored packed (`pack_symmetric`), or whole in older
        weights."""
        extras = dict(extras)
        packed = extras.pop(f"{cls.PREFIX}feature_precision_packed", None)
        if packed is not None:
            extras[f"{cls.PREFIX}feature_precision"] = unpack_symmetric(packed.float().cpu())
        names = [f"{cls.PREFIX}{k}" for k in ("feature_means", "feature_precision", "stats_mean",
                                              "stats_precision")]
        if not settings or not all(n in extras for n in names):
            return None
        t = [extras[n].float().cpu() for n in names]
        return cls(*t, feature_threshold=float(settings.feature_threshold),
                   stats_threshold=float(settings.stats_threshold),
                   percentile=float(settings.percentile))


def blank_reason(pixels: torch.Tensor) -> str | None:
    """A flat image (one colour) has nothing to diagnose, whatever the detectors say."""
    if float(pixels.float().std()) * 127.5 < 2.0:
        return "The image is blank (almost a single flat colour). No diagnosis is given."
    return None


MIN_CHROMA = 1.0  # CIELAB units; the least colourful of the 10,015 HAM10000 images has 2.6


def colour_reason(stats: torch.Tensor) -> str | None:
    """A greyscale image (no chroma at all) is not a dermoscopy photo: the colour that the
    diagnosis and the skin tone depend on is missing. `stats` from `image_statistics`."""
    if float(stats[0, STAT_NAMES.index("chroma_mean")]) < MIN_CHROMA:
        return ("The image has no colour (it is greyscale); a colour dermoscopic photo is "
                "needed. No diagnosis is given.")
    return None


# ------------------------------------------------------------------ fitting a weights folder
@torch.no_grad()
def collect(
    pipe: Any, split: str, data_dir: str | Path | None = None, batch_size: int = 64,
    limit: int | None = None, progress: bool = False, views: int | None = None,
) -> dict[str, torch.Tensor]:
    """Logits, features, image statistics and labels of a split, in one pass. `views`: the
    test-time views of the logits (default: the pipeline's; the features do not depend on it)."""
    from classndiff.data import LesionDataset

    data = LesionDataset(data_dir, split, image_size=pipe.config.model.pixel_size, limit=limit)
    out: dict[str, list[torch.Tensor]] = {"logits": [], "features": [], "stats": []}
    starts = range(0, len(data), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"{split} features", leave=False)
    for start in starts:
        uint8 = data.images[start : start + batch_size]
        pixels = uint8.float() / 127.5 - 1
        logits, features = logits_and_features(
            pipe.model.classifier, pipe._to_model_space(pixels.to(pipe.device)),
            pipe.test_views if views is None else views)
        out["logits"].append(logits.cpu())
        out["features"].append(features.cpu())
        out["stats"].append(image_statistics(pixels))
    result = {k: torch.cat(v) for k, v in out.items()}
    result["labels"] = data.dx.clone()
    return result
