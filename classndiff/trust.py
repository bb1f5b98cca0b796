"""Trust: temperature calibration and out-of-distribution abstention, fitted once per
checkpoint by `classndiff calibrate WEIGHTS` and stored with the weights.

* Calibration: one temperature T, fitted on the validation split by minimising the NLL of
  softmax(logits / T) (LBFGS on log T). Kept in `config.extra["calibration"]`.
* Abstention: an upload is "not a dermoscopic lesion image" when its penultimate classifier
  features are far from every class (Mahalanobis distance to the nearest class mean under a
  shared Ledoit-Wolf covariance, fitted on the training split), or when simple colour and
  texture statistics of the image are far from those of the training images (one Gaussian,
  same estimator). Each threshold is a high percentile of the validation scores, so a known
  share of real lesions is turned away. Statistics are tensors named `trust.*` in
  model.safetensors; thresholds are in `config.extra["abstention"]`.

`python -m classndiff.trust WEIGHTS --all` measures the bars: natural photos / test lesions
rejected, ECE on the test split, ITA agreement with the data's `ita` column, and a corpus of
bad inputs through `diagnose`.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .plots import pyplot, save_figure

logger = logging.getLogger(__name__)

STATS_SIZE = 64  # image statistics are taken at this side (cheap, and enough for colour)
STAT_NAMES: tuple[str, ...] = tuple(
    [f"{c}_{s}" for c in ("L", "a", "b") for s in ("mean", "std", "p10", "p50", "p90")]
    + ["chroma_mean", "centre_minus_border_L", "gradient_mean", "gradient_p90", "saturated"]
)
DEFAULT_PERCENTILE = 99.5  # per detector: about 1 % of validation lesions turned away in all


# ------------------------------------------------------------------ features and statistics
def logits_and_features(
    classifier: nn.Module, pixels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass → (logits, pooled penultimate features). In eval mode timm's head
    is pool → (dropout) → linear, so the linear layer on the pooled features gives the same
    logits as the full forward."""
    features = classifier.features(pixels)
    return classifier.backbone.get_classifier()(features).float(), features.float()


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
    from .metrics import expected_calibration_error

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

    from .metrics import expected_calibration_error

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
    return estimator.precision_.astype(np.float32)


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
            f"{self.PREFIX}feature_precision": self.feature_precision,
            f"{self.PREFIX}stats_mean": self.stats_mean,
            f"{self.PREFIX}stats_precision": self.stats_precision,
        }

    def to_config(self) -> dict[str, Any]:
        return {"feature_threshold": self.feature_threshold,
                "stats_threshold": self.stats_threshold, "percentile": self.percentile}

    @classmethod
    def from_pretrained(
        cls, extras: dict[str, torch.Tensor], config_extra: dict[str, Any]
    ) -> OODDetector | None:
        """From a pipeline's `extras` and `config.extra`; None when the weights carry none."""
        settings = config_extra.get("abstention")
        names = [f"{cls.PREFIX}{k}" for k in ("feature_means", "feature_precision", "stats_mean",
                                              "stats_precision")]
        if not settings or not all(n in extras for n in names):
            return None
        t = [extras[n].float().cpu() for n in names]
        return cls(*t, feature_threshold=float(settings["feature_threshold"]),
                   stats_threshold=float(settings["stats_threshold"]),
                   percentile=float(settings.get("percentile", DEFAULT_PERCENTILE)))


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
    limit: int | None = None, progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Logits, features, image statistics and labels of a split, in one pass."""
    from .data import LesionDataset

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
            pipe.model.classifier, pipe._to_model_space(pixels.to(pipe.device)))
        out["logits"].append(logits.cpu())
        out["features"].append(features.cpu())
        out["stats"].append(image_statistics(pixels))
    result = {k: torch.cat(v) for k, v in out.items()}
    result["labels"] = data.dx.clone()
    return result


def _data_dir_for(config: Any, data_dir: str | Path | None) -> Path:
    from .data import default_data_dir

    if data_dir:
        return Path(data_dir)
    configured = Path(config.train.data_dir)
    return configured if (configured / "metadata.csv").exists() else default_data_dir()


def _stored_dtype(path: Path, model_keys: set[str]) -> torch.dtype | None:
    """The one floating dtype the model's weights were exported in (e.g. float16), so that
    rewriting the folder keeps its size; None when mixed."""
    from safetensors import safe_open

    names = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
             "F64": torch.float64}
    with safe_open(str(path), "pt") as f:
        found = {f.get_slice(k).get_dtype() for k in f.keys() if k in model_keys}
    found &= set(names)
    return names[found.pop()] if len(found) == 1 else None


def calibrate_folder(
    weights: str | Path,
    data_dir: str | Path | None = None,
    report_dir: str | Path | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    batch_size: int = 64,
    train_limit: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit the temperature (on val) and the abstention statistics (train; thresholds on val),
    and rewrite `weights`/config.json + model.safetensors in place (atomically). Writes the
    reliability diagram and a JSON summary to `report_dir` (default: the weights folder)."""
    from .config import ClassNDiffConfig
    from .hub import CONFIG_NAME, WEIGHTS_NAME, is_weights_dir, save_pretrained
    from .pipeline import ClassNDiffPipeline

    folder = Path(weights)
    if not is_weights_dir(folder):
        raise FileNotFoundError(
            f"{folder} is not a weights folder (config.json + model.safetensors)")
    pipe = ClassNDiffPipeline.from_pretrained(folder, device="cpu", fallback=False)
    root = _data_dir_for(pipe.config, data_dir)
    started = time.perf_counter()
    val = collect(pipe, "val", root, batch_size, progress=progress)
    train = collect(pipe, "train", root, batch_size, limit=train_limit, progress=progress)

    temperature = fit_temperature(val["logits"], val["labels"])
    summary = calibration_summary(val["logits"], val["labels"], temperature)
    detector = OODDetector.fit(train["features"], train["labels"], train["stats"],
                               val["features"], val["stats"], percentile)
    val_checks = detector.check(val["features"], val["stats"])
    val_rejected = float(np.mean([c["abstain"] for c in val_checks]))

    config = ClassNDiffConfig.from_json(folder / CONFIG_NAME)  # as written, not as loaded
    config.extra["calibration"] = {
        "temperature": round(temperature, 6),
        "ece_before": round(summary["ece_before"], 6),
        "ece_after": round(summary["ece_after"], 6),
        "nll_before": round(summary["nll_before"], 6),
        "nll_after": round(summary["nll_after"], 6),
        "split": "val", "n": int(len(val["labels"])),
    }
    config.extra["abstention"] = {
        **detector.to_config(),
        "method": "Mahalanobis (class means, shared Ledoit-Wolf covariance) on the classifier's "
                  "pooled features, OR one Gaussian on image colour/texture statistics",
        "stats": list(STAT_NAMES), "fit_split": "train", "n_fit": int(len(train["labels"])),
        "threshold_split": "val", "val_rejected": round(val_rejected, 4),
    }
    extras = {k: v for k, v in pipe.extras.items() if not k.startswith(OODDetector.PREFIX)}
    extras.update(detector.to_tensors())
    dtype = _stored_dtype(folder / WEIGHTS_NAME, set(pipe.model.state_dict()))
    # Write next to the old files, then swap: a crash never leaves a half-written folder.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".calibrate-") as tmp:
        save_pretrained(pipe.model, config, tmp, extras, dtype=dtype)
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            os.replace(Path(tmp) / name, folder / name)

    report = Path(report_dir) if report_dir else folder
    report.mkdir(parents=True, exist_ok=True)
    diagram = reliability_diagram(val["logits"], val["labels"], temperature,
                                  report / "reliability_val.png",
                                  title=f"Validation split (n = {len(val['labels'])})")
    result = {
        "weights": str(folder), "data_dir": str(root),
        "calibration": config.extra["calibration"],
        "abstention": {k: v for k, v in config.extra["abstention"].items() if k != "stats"},
        "reliability_diagram": str(diagram),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (report / "calibration.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# ------------------------------------------------------------------ measurements (the bars)
NATURAL_PHOTOS: tuple[str, ...] = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page",
    "retina", "rocket", "text", "stereo_motorcycle",
)
SYNTHETIC_PICTURES: tuple[str, ...] = (
    "binary_blobs", "checkerboard", "colorwheel", "horse", "logo", "shepp_logan_phantom",
)


def natural_images(include_synthetic: bool = False) -> dict[str, np.ndarray]:
    """The photos that ship with scikit-image and scikit-learn (no download needed): none of
    them is a dermoscopic lesion. Optionally the synthetic pictures too."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    names = NATURAL_PHOTOS + (SYNTHETIC_PICTURES if include_synthetic else ())
    out: dict[str, np.ndarray] = {}
    for name in names:
        try:
            image = getattr(skimage.data, name)()
        except Exception as error:  # noqa: BLE001 - an image that needs a download: skip it
            logger.info("skipping skimage.data.%s: %s", name, error)
            continue
        if name == "stereo_motorcycle":
            out["motorcycle_left"], out["motorcycle_right"] = image[0], image[1]
            continue
        out[name] = image
    sample = load_sample_images()
    for filename, image in zip(sample.filenames, sample.images):
        out[f"sklearn_{Path(filename).stem}"] = image
    return out


def _crops(image: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random square crops, 40–90 % of the short side: what a user might upload."""
    h, w = image.shape[:2]
    out = []
    for _ in range(count):
        side = int(min(h, w) * rng.uniform(0.4, 0.9))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        out.append(image[top : top + side, left : left + side])
    return out


def measure_ood(
    pipe: Any, data_dir: str | Path | None = None, split: str = "test", crops: int = 4,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Share of natural photos (whole, and `crops` random crops of each) that `diagnose`
    turns away, and share of the split's lesions it turns away."""
    if pipe.trust is None:
        raise ValueError("these weights have no abstention statistics: run "
                         "`classndiff calibrate WEIGHTS` first")
    rng = np.random.default_rng(0)
    photos = natural_images()
    whole = {name: pipe.diagnose(image, skin_tone=False).prediction is None
             for name, image in photos.items()}
    cropped = [pipe.diagnose(c, skin_tone=False).prediction is None
               for image in photos.values() for c in _crops(image, crops, rng)]
    synthetic = {name: pipe.diagnose(image, skin_tone=False).prediction is None
                 for name, image in natural_images(include_synthetic=True).items()
                 if name in SYNTHETIC_PICTURES}
    data = collect(pipe, split, _data_dir_for(pipe.config, data_dir), batch_size)
    lesion_checks = pipe.trust.check(data["features"], data["stats"])
    rejected = np.array([c["abstain"] for c in lesion_checks])
    greyscale = {name for name, image in photos.items() if image.ndim == 2}
    return {
        "natural_photos_rejected": float(np.mean(list(whole.values()))),
        "natural_photos_n": len(whole),
        "colour_photos_rejected": float(np.mean([v for k, v in whole.items()
                                                 if k not in greyscale])),
        "colour_photos_n": len(whole) - len(greyscale),
        "natural_photos_accepted": [k for k, v in whole.items() if not v],
        "natural_crops_rejected": float(np.mean(cropped)),
        "natural_crops_n": len(cropped),
        "synthetic_pictures_rejected": float(np.mean(list(synthetic.values()))),
        "synthetic_pictures_accepted": [k for k, v in synthetic.items() if not v],
        f"{split}_lesions_rejected": float(rejected.mean()),
        f"{split}_lesions_n": int(len(rejected)),
        "by_detector": {
            "feature": float(np.mean([c["feature_score"] > 1 for c in lesion_checks])),
            "stats": float(np.mean([c["stats_score"] > 1 for c in lesion_checks])),
        },
    }


def measure_calibration(
    pipe: Any, data_dir: str | Path | None = None, split: str = "test",
    report_dir: str | Path | None = None,
) -> dict[str, Any]:
    """ECE before/after the stored temperature on a held-out split (+ a diagram)."""
    data = collect(pipe, split, _data_dir_for(pipe.config, data_dir))
    result = {"split": split, "n": int(len(data["labels"])), "temperature": pipe.temperature,
              **calibration_summary(data["logits"], data["labels"], pipe.temperature)}
    if report_dir:
        result["reliability_diagram"] = str(reliability_diagram(
            data["logits"], data["labels"], pipe.temperature,
            Path(report_dir) / f"reliability_{split}.png",
            title=f"{split} split (n = {len(data['labels'])})"))
    return result


def measure_skin_tone(
    data_dir: str | Path | None = None, split: str = "test", limit: int | None = None,
) -> dict[str, Any]:
    """Agreement of `estimate_skin_tone` (lesion segmented, no mask) with the data's `ita`,
    `skin_tone`, `skin_tone_group` and `ita_reliable` columns."""
    from PIL import Image
    from scipy.stats import pearsonr, spearmanr

    from .data import default_data_dir, read_metadata
    from .skintone import estimate_skin_tone

    root = Path(data_dir) if data_dir else default_data_dir()
    rows = read_metadata(root, split)[:limit]
    estimates = []
    for row in rows:
        with Image.open(root / row["image"]) as im:
            estimates.append(estimate_skin_tone(im.convert("RGB")))
    ours = np.array([e["ita"] if e["ita"] is not None else np.nan for e in estimates])
    ref = np.array([float(r["ita"]) for r in rows])
    ok = ~np.isnan(ours)
    ref_reliable = np.array([r.get("ita_reliable") == "1" for r in rows])
    our_reliable = np.array([e["reliable"] for e in estimates])
    both = ok & ref_reliable & our_reliable
    groups = np.array([e["group"] for e in estimates])
    ref_groups = np.array([r["skin_tone_group"] for r in rows])
    result = {
        "split": split, "n": len(rows),
        "pearson_all": float(pearsonr(ours[ok], ref[ok])[0]),
        "spearman_all": float(spearmanr(ours[ok], ref[ok])[0]),
        "pearson_both_reliable": float(pearsonr(ours[both], ref[both])[0]),
        "mae_both_reliable": float(np.abs(ours[both] - ref[both]).mean()),
        "n_both_reliable": int(both.sum()),
        "group_agreement": float((groups == ref_groups).mean()),
        "bin_agreement": float(np.mean([e["bin"] == r["skin_tone"]
                                        for e, r in zip(estimates, rows)])),
        "reliable_flag_agreement": float((our_reliable == ref_reliable).mean()),
        "group_recall": {g: {"n": int((ref_groups == g).sum()),
                             "recall": float((groups[ref_groups == g] == g).mean())}
                         for g in ("lighter", "brown", "darker") if (ref_groups == g).any()},
    }
    return result


def bad_input_corpus() -> dict[str, Any]:
    """Uploads that must never crash `diagnose`: each kind gives a clear ImageInputError or a
    result (an abstention when it is not a lesion). Made in code: no files needed."""
    from PIL import Image

    rng = np.random.default_rng(0)

    def encode(im: Image.Image, fmt: str, **kw: Any) -> bytes:
        buffer = io.BytesIO()
        im.save(buffer, fmt, **kw)
        return buffer.getvalue()

    lesion = np.full((96, 128, 3), (205, 160, 140), np.uint8)
    yy, xx = np.mgrid[:96, :128]
    lesion[(yy - 48) ** 2 + (xx - 64) ** 2 < 30**2] = (110, 70, 50)
    lesion = np.clip(lesion + rng.normal(0, 4, lesion.shape), 0, 255).astype(np.uint8)
    rgb = Image.fromarray(lesion)
    jpeg = encode(rgb, "JPEG", quality=90)
    png = encode(rgb, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(((xx > 64) * 255).astype(np.uint8)))
    frames = [rgb, Image.fromarray(255 - lesion), rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:], duration=100)
    bomb = bytearray(encode(Image.new("L", (64, 64)), "PNG"))
    bomb[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR claims 100000×100000
    import zlib

    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")
    grey = np.asarray(rgb.convert("L"))
    noise = rng.integers(0, 256, (128, 128, 3), np.uint8)
    cap = bytearray(encode(Image.new("L", (64, 64)), "PNG"))
    cap[16:24] = (9_000).to_bytes(4, "big") * 2  # 81 MP: over our cap, under Pillow's
    cap[29:33] = zlib.crc32(bytes(cap[12:29])).to_bytes(4, "big")
    return {
        "jpeg_exif_rotated": encode(rgb, "JPEG", exif=exif),
        "png_rgba": encode(rgba, "PNG"),
        "png_greyscale": encode(rgb.convert("L"), "PNG"),
        "png_palette": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "png_16bit_grey": encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"),
        "tiff_float32": encode(Image.fromarray(grey.astype(np.float32) / 255), "TIFF"),
        "jpeg_cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "tiny_8px": encode(rgb.resize((8, 8)), "PNG"),
        "huge_header_bomb": bytes(bomb),
        "over_pixel_cap": bytes(cap),
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "truncated_png": png[: len(png) // 2],
        "not_an_image_text": b"hello, this is not an image\n" * 10,
        "empty_bytes": b"",
        "pdf_bytes": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n",
        "gif_animated": animated.getvalue(),
        "webp": encode(rgb, "WEBP"),
        "bmp": encode(rgb, "BMP"),
        "non_square_wide": encode(Image.fromarray(np.concatenate([lesion] * 2, 1)), "PNG"),
        "too_elongated": encode(Image.fromarray(np.concatenate([lesion] * 6, 1)), "PNG"),
        "array_float01": lesion.astype(np.float32) / 255,
        "array_uint16": lesion.astype(np.uint16) * 257,
        "array_bool": lesion[..., 0] > 128,
        "array_nan": np.full((64, 64, 3), np.nan, np.float32),
        "array_bad_shape": np.zeros((64, 64, 5), np.uint8),
        "array_channels_first": np.ascontiguousarray(lesion.transpose(2, 0, 1)),
        "blank_white": encode(Image.new("RGB", (128, 128), "white"), "PNG"),
        "random_noise": encode(Image.fromarray(noise), "PNG"),
        "missing_path": "/nonexistent/lesion.jpg",
        "wrong_type": 12345,
    }


def measure_bad_inputs(pipe: Any) -> dict[str, Any]:
    """Every corpus item through `diagnose(saliency=True)`: 'error: …' (a clear
    ImageInputError), 'abstain: …' or 'diagnosed'. Anything else is a crash."""
    from .inputs import ImageInputError

    outcomes, crashes = {}, []
    for name, item in bad_input_corpus().items():
        try:
            d = pipe.diagnose(item, saliency=True)
            outcomes[name] = f"abstain: {d.reason}" if d.prediction is None else "diagnosed"
        except ImageInputError as error:
            outcomes[name] = f"error: {error}"
        except Exception as error:  # noqa: BLE001 - that is what is being counted
            crashes.append(name)
            outcomes[name] = f"CRASH {type(error).__name__}: {error}"
    return {"kinds": len(outcomes), "crashes": len(crashes), "crashed": crashes,
            "outcomes": outcomes}


def _print_json(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2, default=str), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m classndiff.trust",
        description="Measure the trust bars of a weights folder (run `classndiff calibrate` "
                    "on it first).")
    parser.add_argument("weights", nargs="?", default=None)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--measure-ood", "--ood", action="store_true", dest="ood")
    parser.add_argument("--ece", action="store_true", help="ECE before/after T on the split")
    parser.add_argument("--ita", action="store_true", help="ITA vs the metadata's ita column")
    parser.add_argument("--bad-inputs", action="store_true", help="the bad-input corpus")
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--report-dir", type=Path, help="where to write reliability plots")
    args = parser.parse_args(argv)
    from .pipeline import ClassNDiffPipeline

    pipe = ClassNDiffPipeline.from_pretrained(args.weights, device="cpu", fallback=False)
    jobs: dict[str, Callable[[], dict[str, Any]]] = {
        "ood": lambda: measure_ood(pipe, args.data_dir, args.split),
        "ece": lambda: measure_calibration(pipe, args.data_dir, args.split, args.report_dir),
        "ita": lambda: measure_skin_tone(args.data_dir, args.split),
        "bad_inputs": lambda: measure_bad_inputs(pipe),
    }
    wanted = [k for k in jobs if args.all or getattr(args, k)]
    if not wanted:
        parser.error("choose at least one of --measure-ood, --ece, --ita, --bad-inputs, --all")
    result: dict[str, Any] = {"weights": pipe.source}
    for key in wanted:
        started = time.perf_counter()
        result[key] = jobs[key]()
        result[key]["seconds"] = round(time.perf_counter() - started, 1)
        _print_json({key: result[key]})
    if args.report_dir:
        args.report_dir.mkdir(parents=True, exist_ok=True)
        (args.report_dir / "trust_measures.json").write_text(json.dumps(result, indent=2) + "\n")
    return 1 if "bad_inputs" in result and result["bad_inputs"]["crashes"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
