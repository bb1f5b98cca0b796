"""The evaluation report: `classndiff evaluate WEIGHTS --report DIR`.

Writes DIR/report.md, DIR/metrics.json and PNG plots: headline classification metrics,
thresholds, confusion matrix, ROC curves, reliability; every metric per skin-tone group and
per sex with lesion-grouped bootstrap 95 % intervals and the gaps between groups; generation
quality in the independent evaluator's space; the λ = 0 ablation; the fairness experiment
(synthetic brown / darker images added to a classifier's training set); saliency inside the
expert lesion masks.

Intervals resample LESIONS, not images: HAM10000 has several images of one lesion, and
resampling images would treat near-duplicates as independent evidence (intervals too narrow).
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classndiff.evaluation.bootstrap import (
    GROUP_METRICS,
    MALIGNANT,
    auc,
    bootstrap,
    fast_metrics,
    lesion_codes,
    lesion_resample,
)
from classndiff.labels import DX_CODES, MALIGNANT_DX, TONE_GROUPS
from classndiff.plots import pyplot, save_figure

logger = logging.getLogger(__name__)

HEADLINE = ("accuracy", "balanced_accuracy", "macro_auc", "malignant_auc")
# Gaps between fixed pairs (reference first), so each has the same meaning in every resample.
GAP_PAIRS = {"tone": [("lighter", "brown"), ("lighter", "darker")], "sex": [("female", "male")]}


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


# ------------------------------------------------------------------ formatting
def fmt(ci: dict[str, Any] | None, digits: int = 3) -> str:
    """0.812 [0.790, 0.833]; n/a when undefined."""
    if not ci or ci.get("value") is None:
        return "n/a"
    text = f"{ci['value']:.{digits}f}"
    if ci.get("lo") is not None and ci.get("hi") is not None:
        text += f" [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"
    return text


def num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------ the pieces
# (id(pipe), id(dataset)) → (pipe, dataset, logits): the objects are held so that their ids
# cannot be reused while cached; build_report empties it when done.
_LOGITS: dict[tuple[int, int], tuple[Any, Any, torch.Tensor]] = {}


def predict_probs(pipe: Any, dataset: Any, calibrated: bool = True, batch_size: int = 128
                  ) -> np.ndarray:
    """Probabilities for a dataset; logits are computed once per (model, dataset) and the
    temperature applied here, so calibrated and raw probabilities cost one pass."""
    key = (id(pipe), id(dataset))
    if key not in _LOGITS:
        _LOGITS[key] = (pipe, dataset, torch.cat([
            pipe.logits(dataset.images[i:i + batch_size].float() / 127.5 - 1).cpu()
            for i in range(0, len(dataset), batch_size)]))
    temperature = pipe.temperature if calibrated else 1.0
    return torch.softmax(_LOGITS[key][2] / temperature, 1).numpy()


def classification_section(
    pipe: Any, test: Any, val: Any | None, reps: int, seed: int,
    other_probs: np.ndarray | None = None,
) -> dict[str, Any]:
    """Headline metrics, thresholds, group metrics with CIs (and paired differences
    against `other_probs`, a second model's test probabilities)."""
    from classndiff.metrics import classification_metrics

    labels = test.dx.numpy()
    probs = predict_probs(pipe, test)
    metrics = classification_metrics(probs, labels)
    if pipe.calibrated:
        metrics["ece_uncalibrated"] = classification_metrics(
            predict_probs(pipe, test, calibrated=False), labels)["ece"]
    threshold = 0.5
    if val is not None and 0 < MALIGNANT[val.dx.numpy()].sum() < len(val):
        threshold = youden_threshold(predict_probs(pipe, val), val.dx.numpy())
    at = {}
    for name, t in (("0.5", 0.5), ("youden_val", threshold)):
        m = fast_metrics(probs, labels, t)
        at[name] = {"threshold": round(t, 4), "sensitivity": m["sensitivity"],
                    "specificity": m["specificity"]}
    attributes = {"tone": np.array([r.get("skin_tone_group") or "unknown" for r in test.rows]),
                  "sex": np.array([r.get("sex") or "unknown" for r in test.rows])}
    stat = group_statistic(probs, labels, attributes, threshold, other_probs)
    cis = nest(bootstrap(stat, test.lesion_ids, reps, seed))
    sizes = {a: group_sizes(g, test.lesion_ids, labels) for a, g in attributes.items()}
    correct = probs.argmax(1) == labels
    for attribute, groups in attributes.items():
        for group, row in sizes[attribute].items():
            k = int(correct[groups == group].sum())
            row["correct"] = k
            row["accuracy_wilson"] = [round(x, 4) for x in wilson(k, row["images"])]
    sizes["overall"] = {"images": len(labels), "lesions": len(set(test.lesion_ids)),
                        "malignant_images": int(MALIGNANT[labels].sum())}
    return {"metrics": metrics, "thresholds": at, "threshold_used_for_groups": threshold,
            "ci": cis, "sizes": sizes, "probs": probs, "labels": labels,
            "attributes": attributes}


def load_compare(compare: str | Path, pipe: Any) -> tuple[Any, dict[str, Any]]:
    """The model to compare with. A full weights folder loads as is. A folder holding only
    `denoiser.safetensors` (how the λ = 0 ablation ships) is paired with THIS model's
    classifier: its generation is compared, its classification cannot be, and the
    classification metrics its own run recorded (metrics.json, no intervals) are quoted."""
    import copy

    from safetensors.torch import load_file

    from classndiff.config import ClassNDiffConfig
    from classndiff.pipelines.pipeline import ClassNDiffPipeline

    folder = Path(compare)
    if (folder / "model.safetensors").is_file() or not (folder / "denoiser.safetensors").is_file():
        other = ClassNDiffPipeline.from_pretrained(compare, fallback=False)
        mine = pipe.model.classifier.state_dict()
        shared = all(torch.equal(v.float(), mine[k].float())
                     for k, v in other.model.classifier.state_dict().items())
        if not shared:
            return other, {"own_classifier": True}
        # Its classifier tensors are copies of this model's (how the ablation folder was
        # completed): comparing them would show a difference of exactly 0, so don't.
        info = {"own_classifier": False, "lambda_cls": other.config.train.lambda_cls,
                "training": other.config.extra.get("training"),
                "classifier": "a copy of this model's classifier"}
        other.config.sampling = copy.deepcopy(pipe.config.sampling)
        return other, {**info, **_recorded(folder)}
    config = ClassNDiffConfig.from_json(folder / "config.json")
    config.sampling = copy.deepcopy(pipe.config.sampling)  # same sampler settings for both
    model = copy.deepcopy(pipe.model)
    state = {k.removeprefix("denoiser."): v.float()
             for k, v in load_file(str(folder / "denoiser.safetensors")).items()}
    model.denoiser.load_state_dict(state, strict=True)
    other = ClassNDiffPipeline(model, config, pipe.device, pipe.vae,
                               source=f"local folder {folder} (denoiser only)", extras=pipe.extras)
    info: dict[str, Any] = {"own_classifier": False,
                            "lambda_cls": config.train.lambda_cls,
                            "training": config.extra.get("training"),
                            "classifier": "this model's (the folder ships only a denoiser)"}
    return other, {**info, **_recorded(folder)}


def _recorded(folder: Path) -> dict[str, Any]:
    """Classification metrics the compared model's own run wrote (no intervals)."""
    import json

    for path in [*sorted(folder.glob("metrics_*classifier*.json")), folder / "metrics.json"]:
        if path.is_file():
            recorded = json.loads(path.read_text())
            return {"recorded_classification": recorded.get("classification", recorded),
                    "recorded_by": f"{path.name} in the folder (its own classifier; no "
                                   "intervals)"}
    return {}


def _load_evaluator(directory: str | Path | None) -> Any:
    from classndiff.training.evaluator import load_evaluator

    if directory is None or not Path(directory).exists():
        return None
    return load_evaluator(directory)


def generation_section(
    pipe: Any, evaluator: Any, test: Any, per_cell: int, seed: int, out_dir: Path, name: str,
    cas_steps: int, fd_reps: int, real_feats: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate per (dx × {any, lighter, brown, darker}), score in evaluator space, CAS,
    sample grid. Returns (metrics, the generated set) — the set feeds the fairness run."""
    from classndiff.evaluation.generation import (
        classification_accuracy_score,
        frechet_distance,
        generate_cells,
        generation_quality,
        sample_grid,
    )

    started = time.perf_counter()
    cells = [(code, tone) for code in DX_CODES for tone in (None, *TONE_GROUPS)]
    generated = generate_cells(pipe, cells, per_cell, seed=seed)
    gen_seconds = time.perf_counter() - started
    if real_feats is None:
        real_feats, _ = evaluator.embed(test.images)
    gen_feats, gen_probs = evaluator.embed(generated["images"])
    real_tone = test.tone.numpy()
    quality = generation_quality(real_feats, test.dx.numpy(), real_tone, gen_feats, gen_probs,
                                 generated["dx"], generated["tone"], seed=seed)
    # Spread of the macro per-class FD: real images resampled by lesion within each class,
    # generated images by image; same draws for every model (same seed).
    rng = np.random.default_rng(seed)
    codes = lesion_codes(test.lesion_ids)
    labels = test.dx.numpy()
    lighter_or_any = (generated["tone"] == TONE_GROUPS.index("lighter")) | (
        generated["tone"] == len(TONE_GROUPS))
    draws = []
    for _ in range(fd_reps):
        real_idx = lesion_resample(codes, rng)
        fds = []
        for c in range(len(DX_CODES)):
            r = real_idx[labels[real_idx] == c]
            g = np.flatnonzero(lighter_or_any & (generated["dx"] == c))
            if len(r) >= 10 and len(g) >= 2:
                g = rng.choice(g, len(g))
                fds.append(frechet_distance(real_feats[r], gen_feats[g]))
        draws.append(np.mean(fds) if fds else np.nan)
    ok = np.array([d for d in draws if not np.isnan(d)])
    quality["fd_macro_ci"] = ([float(x) for x in np.percentile(ok, [2.5, 97.5])]
                              if len(ok) >= 5 else None)
    hits = gen_probs.argmax(1) == generated["dx"]
    by_class = [hits[generated["dx"] == c] for c in np.unique(generated["dx"])]
    fid_draws = [np.mean([h[rng.integers(0, len(h), len(h))].mean() for h in by_class])
                 for _ in range(max(fd_reps, 200))]
    quality["fidelity_macro_ci"] = [float(x) for x in np.percentile(fid_draws, [2.5, 97.5])]
    quality["seconds_generating"] = round(gen_seconds, 1)
    quality["seconds_per_image"] = round(gen_seconds / max(1, len(generated["dx"])), 3)
    quality["per_cell"] = per_cell
    quality["feature_dim"] = int(real_feats.shape[1])
    quality["sampler"] = {"sampler": pipe.config.sampling.sampler,
                          "steps": pipe.config.sampling.steps,
                          "guidance_scale": pipe.config.sampling.guidance_scale, "seed": seed}
    if cas_steps > 0:
        quality["cas"] = classification_accuracy_score(
            generated["images"], generated["dx"], test.images, labels, steps=cas_steps, seed=seed)
    grid = sample_grid(generated["images"], generated["dx"], generated["tone"],
                       out_dir / f"samples_{name}.png", per_cell=min(4, per_cell))
    quality["grid"] = grid.name
    return quality, generated


def cas_real_reference(train: Any, test: Any, count_per_class: int, steps: int, seed: int
                       ) -> dict[str, Any]:
    """CAS's yardstick: the same recipe and budget on the same number of REAL train images
    per class (or all of a class when it has fewer)."""
    from classndiff.evaluation.generation import classification_accuracy_score

    rng = np.random.default_rng(seed)
    labels = train.dx.numpy()
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:count_per_class]
                             for c in range(len(DX_CODES)) if (labels == c).any()])
    return classification_accuracy_score(train.images[chosen], labels[chosen], test.images,
                                         test.dx.numpy(), steps=steps, seed=seed)


def fairness_experiment(
    train: Any, test: Any, synthetic: dict[str, Any], per_class: int, steps: int, reps: int,
    seed: int,
) -> dict[str, Any]:
    """Train the small classifier on real train images, with and without `per_class`
    synthetic images per class of each of the brown and darker tone cells; compare per-tone
    metrics on real test (lesion-bootstrap CIs, paired differences augmented − baseline)."""
    from classndiff.training.evaluator import EvaluatorConfig, predict, train_classifier

    brown, darker = TONE_GROUPS.index("brown"), TONE_GROUPS.index("darker")
    chosen = []
    for c in range(len(DX_CODES)):
        for g in (brown, darker):
            idx = np.flatnonzero((synthetic["dx"] == c) & (synthetic["tone"] == g))
            chosen.extend(idx[:per_class].tolist())
    chosen = np.array(chosen, dtype=int)
    from classndiff.training.evaluator import downsample_uint8

    size = EvaluatorConfig().image_size
    real_images = downsample_uint8(train.images, size)
    syn_images = downsample_uint8(synthetic["images"][chosen], size)
    config = EvaluatorConfig(steps=steps, warmup_steps=max(1, min(100, steps // 5)), seed=seed,
                             batch_size=min(64, len(real_images)))
    runs = {}
    for name, images, labels in (
        ("baseline", real_images, train.dx),
        ("augmented", torch.cat([real_images, syn_images]),
         torch.cat([train.dx, torch.as_tensor(synthetic["dx"][chosen])])),
    ):
        result = train_classifier(images, labels, config)
        runs[name] = {"probs": predict(result.model, test.images),
                      "seconds": round(result.seconds, 1), "train_images": int(len(labels))}
    labels = test.dx.numpy()
    attributes = {"tone": np.array([r.get("skin_tone_group") or "unknown" for r in test.rows])}
    train_tones = [r.get("skin_tone_group") or "unknown" for r in train.rows]
    out: dict[str, Any] = {"synthetic_per_class_per_tone": per_class,
                           "real_train_images_by_tone": {g: train_tones.count(g) for g in
                                                         sorted(set(train_tones))},
                           "synthetic_images": int(len(chosen)), "steps": steps,
                           "classifier": f"{config.backbone} @ {config.image_size} px"}
    for name, run in runs.items():
        other = runs["baseline"]["probs"] if name == "augmented" else None
        stat = group_statistic(run["probs"], labels, attributes, 0.5, other)
        right = run["probs"].argmax(1) == labels
        out[name] = {"ci": nest(bootstrap(stat, test.lesion_ids, reps, seed)),
                     "seconds": run["seconds"], "train_images": run["train_images"],
                     "correct_by_tone": {g: [int(right[attributes["tone"] == g].sum()),
                                             int((attributes["tone"] == g).sum())]
                                         for g in TONE_GROUPS}}
    # Per-group paired difference augmented − baseline, on the same resamples.
    base, aug = runs["baseline"]["probs"], runs["augmented"]["probs"]
    tones = attributes["tone"]

    def diff(index: np.ndarray) -> dict[str, float]:
        d = {}
        for group in ("lighter", "brown", "darker"):
            m = index[tones[index] == group]
            a, b = fast_metrics(aug[m], labels[m]), fast_metrics(base[m], labels[m])
            for k in ("accuracy", "balanced_accuracy", "macro_auc", "malignant_auc"):
                d[f"{group}/{k}"] = a[k] - b[k]
        return d

    out["difference"] = nest(bootstrap(diff, test.lesion_ids, reps, seed))
    return out


def saliency_section(pipe: Any, data_dir: Any, methods: Sequence[str], limit: int | None
                     ) -> dict[str, Any]:
    from classndiff.evaluation.saliency import measure_mask_energy

    out = {}
    for method in methods:
        started = time.perf_counter()
        try:
            result = measure_mask_energy(pipe, data_dir=data_dir, split="test", method=method,
                                         limit=limit)
        except (FileNotFoundError, RuntimeError, ValueError) as error:
            result = {"error": str(error)}
        result["seconds"] = round(time.perf_counter() - started, 1)
        out[method] = result
    return out


# ------------------------------------------------------------------ the report
def build_report(
    weights: str | Path,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    evaluator_dir: str | Path | None = "weights/evaluator",
    compare: str | Path | None = None,
    compare_name: str = "lambda0",
    generate_per_cell: int = 0,
    limit: int | None = None,
    fairness_augment: int = 0,
    reps: int = 1000,
    seed: int = 0,
    cas_steps: int = 300,
    fairness_steps: int = 600,
    fd_reps: int = 30,
    saliency_methods: Sequence[str] = ("gradcam", "gradcam++"),
    saliency_limit: int | None = None,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Everything above for one model (and optionally a second to compare), written to
    out_dir. Returns the metrics dictionary that metrics.json holds."""
    from classndiff import __version__
    from classndiff.data import LesionDataset
    from classndiff.evaluation.evaluate import write_json
    from classndiff.pipelines.pipeline import ClassNDiffPipeline

    say = progress or (lambda text: logger.info(text))
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 1)
        say(f"{name}: {timings[name]} s")
        return time.perf_counter()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = ClassNDiffPipeline.from_pretrained(weights, fallback=False)
    size = pipe.config.model.pixel_size
    test = LesionDataset(data_dir, "test", image_size=size, limit=limit)
    val = LesionDataset(data_dir, "val", image_size=size, limit=limit)
    t = lap("load", started)

    other_pipe = other_probs = None
    compare_info: dict[str, Any] = {}
    if compare:
        other_pipe, compare_info = load_compare(compare, pipe)
        if compare_info["own_classifier"]:
            other_probs = predict_probs(other_pipe, test)
    cls = classification_section(pipe, test, val, reps, seed, other_probs)
    t = lap("classification", t)
    names = {"model": Path(str(weights)).name or str(weights), "compare": compare_name}
    plot_confusion(cls["labels"], cls["probs"], out_dir / "confusion_matrix.png",
                   f"confusion matrix, test n={len(cls['labels'])}")
    plot_roc(cls["labels"], cls["probs"], out_dir / "roc.png", cls["threshold_used_for_groups"])
    plot_reliability(cls["labels"], cls["probs"], out_dir / "reliability.png",
                     cls["metrics"]["ece"])
    compare_cls = None
    if other_pipe is not None and compare_info["own_classifier"]:
        compare_cls = classification_section(other_pipe, test, val, reps, seed)
    for attribute in ("tone", "sex"):
        series = {names["model"]: cls["ci"]}
        if compare_cls:
            series[compare_name] = compare_cls["ci"]
        plot_groups(cls["ci"], cls["sizes"][attribute], attribute,
                    out_dir / f"groups_{attribute}.png", series)
    t = lap("plots and comparison", t)

    generation: dict[str, Any] = {}
    generated = None
    evaluator = _load_evaluator(evaluator_dir)
    if generate_per_cell > 0 and evaluator is None:
        generation["skipped"] = f"no evaluator at {evaluator_dir}"
    elif generate_per_cell > 0:
        real_feats, _ = evaluator.embed(test.images)
        generation[names["model"]], generated = generation_section(
            pipe, evaluator, test, generate_per_cell, seed, out_dir, "model", cas_steps, fd_reps,
            real_feats)
        t = lap("generation (model)", t)
        if other_pipe is not None:
            generation[compare_name], _ = generation_section(
                other_pipe, evaluator, test, generate_per_cell, seed, out_dir, compare_name,
                cas_steps, fd_reps, real_feats)
            t = lap(f"generation ({compare_name})", t)
        if cas_steps > 0:
            from classndiff.training.evaluator import load_split

            train = load_split(data_dir, "train", 64, limit)
            generation["cas_real_reference"] = cas_real_reference(
                train, test, 4 * generate_per_cell, cas_steps, seed)
            t = lap("CAS real reference", t)

    fairness: dict[str, Any] = {}
    if fairness_augment > 0:
        from classndiff.training.evaluator import load_split

        if generated is None or generate_per_cell < fairness_augment:
            cells = [(code, tone) for code in DX_CODES for tone in ("brown", "darker")]
            from classndiff.evaluation.generation import generate_cells

            generated = generate_cells(pipe, cells, fairness_augment, seed=seed + 1)
        train = load_split(data_dir, "train", 64, limit)
        fairness = fairness_experiment(train, test, generated, fairness_augment,
                                       fairness_steps, reps, seed)
        t = lap("fairness experiment", t)

    saliency = saliency_section(pipe, data_dir, saliency_methods, saliency_limit) \
        if saliency_methods else {}
    t = lap("saliency", t)

    data_root = str(test.root)
    result: dict[str, Any] = {
        "command": command,
        "names": names,
        "weights": pipe.source,
        "data_dir": data_root,
        "split": "test",
        "limit": limit,
        "calibrated": pipe.calibrated,
        "classification": {**cls["metrics"], "thresholds": cls["thresholds"]},
        "groups": {"threshold": cls["threshold_used_for_groups"], "sizes": cls["sizes"],
                   "ci": cls["ci"]},
        "bootstrap": {"reps": reps, "unit": "lesion (lesion_id)", "interval": "percentile 95 %",
                      "seed": seed},
        "compare": None if other_pipe is None else {
            "name": compare_name, "weights": other_pipe.source, **compare_info,
            "classification": None if compare_cls is None else {
                **compare_cls["metrics"], "thresholds": compare_cls["thresholds"]},
            "ci": None if compare_cls is None else compare_cls["ci"]},
        "generation": generation,
        "fairness_experiment": fairness,
        "saliency": saliency,
        "evaluator": str(evaluator_dir) if evaluator is not None else None,
        "timings_s": {**timings, "total": round(time.perf_counter() - started, 1)},
        "environment": {"classndiff": __version__, "torch": torch.__version__,
                        "python": platform.python_version(),
                        "threads": torch.get_num_threads()},
    }
    write_json(result, out_dir / "metrics.json")
    (out_dir / "report.md").write_text(render_markdown(result, names))
    _LOGITS.clear()
    return result


# ------------------------------------------------------------------ markdown
def _group_rows(ci: dict[str, Any], sizes: dict[str, Any], attribute: str) -> list[list[str]]:
    rows = []
    for group, metrics in ci.get(attribute, {}).items():
        s = sizes.get(attribute, {}).get(group, {})
        cells = [fmt(metrics.get(m)) for m in GROUP_METRICS]
        if s.get("lesions", 99) < 20 and "accuracy_wilson" in s:
            lo, hi = s["accuracy_wilson"]
            cells[0] += f"; {s['correct']}/{s['images']} right, Wilson [{lo:.2f}, {hi:.2f}]"
        rows.append([group, f"{s.get('images', '?')} / {s.get('lesions', '?')} / "
                            f"{s.get('malignant_images', '?')}"] + cells)
    return rows


def render_markdown(r: dict[str, Any], names: dict[str, str]) -> str:
    c = r["classification"]
    sizes = r["groups"]["sizes"]
    ci = r["groups"]["ci"]
    lines = [
        f"# Evaluation report: `{r['weights']}`",
        "",
        "Regenerate with:",
        "",
        "```",
        r.get("command") or "classndiff evaluate WEIGHTS --report DIR",
        "```",
        "",
        f"Test split of `{r['data_dir']}`: {sizes['overall']['images']} images of "
        f"{sizes['overall']['lesions']} lesions"
        + (f" (first {r['limit']} only)" if r.get("limit") else "")
        + f". Probabilities {'temperature-scaled' if r['calibrated'] else 'uncalibrated'}. "
        f"Every interval is a percentile 95 % bootstrap over {r['bootstrap']['reps']} "
        "resamples of LESIONS (all images of a drawn lesion come along), so near-duplicate "
        "images of one lesion are not counted as independent evidence.",
        "",
        *_findings_md(r, names),
        "## Headline",
        "",
        table(["measure", "value [95 % CI]"], [
            ["accuracy", fmt(ci["overall"]["accuracy"])],
            ["balanced accuracy", fmt(ci["overall"]["balanced_accuracy"])],
            ["macro one-vs-rest AUC", fmt(ci["overall"]["macro_auc"])],
            ["malignant vs benign AUC", fmt(ci["overall"]["malignant_auc"])],
            [f"sensitivity @ P(malignant) ≥ {c['thresholds']['youden_val']['threshold']:.3f} "
             "(Youden point on val)", fmt(ci["overall"]["sensitivity"])],
            ["specificity @ the same threshold", fmt(ci["overall"]["specificity"])],
            ["sensitivity / specificity @ 0.5",
             f"{num(c['thresholds']['0.5']['sensitivity'])} / "
             f"{num(c['thresholds']['0.5']['specificity'])}"],
            ["ECE (15 bins)" + (", after temperature scaling" if r["calibrated"] else ""),
             num(c["ece"])],
        ] + ([["ECE before temperature scaling", num(c["ece_uncalibrated"])]]
             if "ece_uncalibrated" in c else [])),
        "",
        "Per-class one-vs-rest AUC: " + ", ".join(
            f"{code} {num(c.get(f'auc_{code}'))}" for code in DX_CODES) + ".",
        "",
        "![confusion matrix](confusion_matrix.png) ![ROC](roc.png) "
        "![reliability](reliability.png)",
        "",
        *_bars_md(r, names),
        "## Fairness: per skin-tone group and per sex",
        "",
        "Columns: images / lesions / malignant images, then each metric with its 95 % CI. "
        f"Sensitivity and specificity at P(malignant) ≥ {r['groups']['threshold']:.3f}. "
        "n/a: undefined in that group (e.g. an AUC needs both classes present).",
        "",
        table(["tone group", "n (img/lesion/malig.)", *GROUP_METRICS],
              _group_rows(ci, sizes, "tone")),
        "",
        table(["sex", "n (img/lesion/malig.)", *GROUP_METRICS], _group_rows(ci, sizes, "sex")),
        "",
        "Gaps (reference group minus the other; an interval that contains 0 means no "
        "difference was detected, not that there is none; intervals of gaps against a group "
        "of a few lesions understate the uncertainty, as the bootstrap cannot vary that group "
        "much):",
        "",
    ]
    gap_rows = []
    for attribute, pairs in ci.get("gap", {}).items():
        for pair, metrics in pairs.items():
            a, b = pair.split("-")
            na = sizes.get(attribute, {}).get(a, {}).get("images", "?")
            nb = sizes.get(attribute, {}).get(b, {}).get("images", "?")
            gap_rows.append([f"{pair} (n {na} vs {nb})"] + [fmt(metrics.get(m))
                                                          for m in GROUP_METRICS])
    lines += [table(["gap", *GROUP_METRICS], gap_rows), "",
              "![per tone](groups_tone.png)", "", "![per sex](groups_sex.png)", ""]
    darker = sizes.get("tone", {}).get("darker", {"images": 0, "lesions": 0})
    brown = sizes.get("tone", {}).get("brown", {"images": 0, "lesions": 0})
    lines += [
        f"**How much the darker-skin numbers can say.** The test split holds "
        f"{darker['images']} darker-skin images of {darker['lesions']} lesions "
        f"(classes: {darker.get('classes', {})}) and {brown['images']} brown-skin images of "
        f"{brown['lesions']} lesions. With a handful of lesions, all of one or two classes, "
        "AUCs are undefined or rest on one or two positives, and an honest accuracy interval "
        "spans most of [0, 1] (where the bootstrap collapses to a point because every image is "
        "right or every one wrong, the Wilson interval next to it is the honest one): "
        "darker-skin results are anecdotal and cannot show that the model is "
        "fair or unfair to darker skin. The brown group is large enough for accuracy, not for "
        "per-class claims. Skin tone is an ITA estimate from the image, not a self-reported "
        "Fitzpatrick type.",
        "",
    ]
    cmp = r.get("compare")
    if cmp:
        lines += _ablation_md(r, names)
    lines += _generation_md(r, names)
    lines += _fairness_md(r)
    lines += _saliency_md(r)
    lines += ["## Run", "",
              f"Seconds per part: {r['timings_s']}. Environment: {r['environment']}.", ""]
    return "\n".join(lines)


def _verdict(ci: dict[str, Any] | None) -> str:
    """In words: does a difference interval exclude 0?"""
    if not ci or ci.get("lo") is None or ci.get("hi") is None:
        return "undefined"
    if ci["lo"] > 0 or ci["hi"] < 0:
        return "the interval excludes 0"
    return "the interval contains 0, no difference detected"


def _findings_md(r: dict[str, Any], names: dict[str, str]) -> list[str]:
    """A few sentences computed from the numbers below, so they cannot drift from them."""
    ci, sizes = r["groups"]["ci"], r["groups"]["sizes"]
    o = ci["overall"]
    out = [f"- Classification on real test images: accuracy {fmt(o['accuracy'])}, balanced "
           f"accuracy {fmt(o['balanced_accuracy'])}, macro AUC {fmt(o['macro_auc'])}, "
           f"malignant AUC {fmt(o['malignant_auc'])}."]
    tone_gap = ci.get("gap", {}).get("tone", {}).get("lighter-brown")
    if tone_gap:
        nv = {g: sizes["tone"][g]["classes"].get("nv", 0) / max(1, sizes["tone"][g]["images"])
              for g in ("lighter", "brown")}
        out.append(f"- Lighter vs brown skin (n {sizes['tone']['lighter']['images']} vs "
                   f"{sizes['tone']['brown']['images']} images): accuracy gap "
                   f"{fmt(tone_gap['accuracy'])}: {_verdict(tone_gap['accuracy'])}; balanced "
                   f"accuracy gap {fmt(tone_gap['balanced_accuracy'])}: "
                   f"{_verdict(tone_gap['balanced_accuracy'])}; malignant AUC gap "
                   f"{fmt(tone_gap['malignant_auc'])}: {_verdict(tone_gap['malignant_auc'])}. "
                   f"Read with the class mix: {nv['brown']:.0%} of brown-skin test images are "
                   f"nv (the easiest, majority class) against {nv['lighter']:.0%} of lighter-skin "
                   "ones, and brown has only "
                   f"{sizes['tone']['brown']['malignant_images']} malignant images, so a gap in "
                   "brown's favour says more about which lesions were photographed on brown "
                   "skin than about the model treating skin tones differently.")
    darker = sizes.get("tone", {}).get("darker")
    if darker:
        lo, hi = darker.get("accuracy_wilson", [float("nan")] * 2)
        out.append(f"- Darker skin: {darker['images']} test images of {darker['lesions']} "
                   f"lesions ({darker.get('classes')}); {darker.get('correct')} classified "
                   f"right (Wilson 95 % CI {lo:.2f}–{hi:.2f}). Nothing about darker skin can be "
                   "concluded from this test set.")
    sex_gap = ci.get("gap", {}).get("sex", {}).get("female-male")
    if sex_gap:
        out.append(f"- Female vs male: accuracy gap {fmt(sex_gap['accuracy'])}: "
                   f"{_verdict(sex_gap['accuracy'])}.")
    cmp = r.get("compare")
    gen = r.get("generation") or {}
    a = gen.get(names.get("model", ""))
    if cmp:
        b = gen.get(cmp["name"])
        if ci.get("diff"):
            out.append(f"- Ablation, classification: {names['model']} − {cmp['name']} accuracy "
                       f"{fmt(ci['diff']['accuracy'])}: {_verdict(ci['diff']['accuracy'])}; "
                       f"macro AUC {fmt(ci['diff']['macro_auc'])}: "
                       f"{_verdict(ci['diff']['macro_auc'])}.")
        if a and b and a.get("fd_macro_over_classes") is not None \
                and b.get("fd_macro_over_classes") is not None:
            better = a["fd_macro_over_classes"] < b["fd_macro_over_classes"]
            ia, ib = a.get("fd_macro_ci"), b.get("fd_macro_ci")
            overlap = bool(ia and ib and ia[0] <= ib[1] and ib[0] <= ia[1])
            out.append(
                f"- Ablation, generation: per-class FD (macro) {a['fd_macro_over_classes']:.2f} "
                f"for {names['model']} vs {b['fd_macro_over_classes']:.2f} for {cmp['name']} "
                f"({'lower' if better else 'higher'} for {names['model']}; intervals "
                f"{'overlap' if overlap else 'do not overlap'}); class fidelity "
                f"{a['fidelity']['macro']:.3f} vs {b['fidelity']['macro']:.3f}.")
    elif a:
        out.append(f"- Generation: per-class FD (macro) {num(a['fd_macro_over_classes'], 2)}, "
                   f"class fidelity {a['fidelity']['macro']:.3f}.")
    f = r.get("fairness_experiment") or {}
    if f.get("difference"):
        d = f["difference"].get("brown", {}).get("accuracy")
        out.append(f"- Fairness experiment: adding {f['synthetic_images']} synthetic brown/darker "
                   f"images changed brown-skin accuracy by {fmt(d)}: {_verdict(d)}.")
    sal = (r.get("saliency") or {}).get("gradcam") or {}
    if sal.get("mean_energy_in_mask") is not None:
        out.append(f"- Grad-CAM puts {sal['mean_energy_in_mask']:.2f} of its energy inside the "
                   f"expert lesion masks on average (a uniform map: "
                   f"{sal['uniform_map_baseline']:.2f}).")
    out += [f"- Note: {note}" for note in r.get("notes", [])]
    return ["## Findings", "", *out, ""]


def _bars_md(r: dict[str, Any], names: dict[str, str]) -> list[str]:
    """The quality bars of DESIGN.md next to this run's numbers."""
    c = r["classification"]
    gen = (r.get("generation") or {}).get(names["model"]) or {}
    sal = (r.get("saliency") or {}).get("gradcam") or {}
    rows = [("accuracy (7-class)", c["accuracy"], "≥ 0.80", c["accuracy"] >= 0.80),
            ("macro one-vs-rest AUC", c["macro_auc"], "≥ 0.93", c["macro_auc"] >= 0.93),
            ("malignant vs benign AUC", c["malignant_auc"], "≥ 0.90", c["malignant_auc"] >= 0.90),
            ("balanced accuracy", c["balanced_accuracy"], "≥ 0.65",
             c["balanced_accuracy"] >= 0.65),
            ("ECE" + (" after temperature scaling" if r["calibrated"] else " (uncalibrated)"),
             c["ece"], "≤ 0.05", c["ece"] <= 0.05)]
    if gen.get("fidelity"):
        rows.append(("class fidelity, macro (independent evaluator)", gen["fidelity"]["macro"],
                     "≥ 0.70", gen["fidelity"]["macro"] >= 0.70))
    if sal.get("mean_energy_in_mask") is not None:
        rows.append(("Grad-CAM energy inside the lesion mask, mean", sal["mean_energy_in_mask"],
                     "≥ 0.6", sal["mean_energy_in_mask"] >= 0.6))
    return ["Against the quality bars of DESIGN.md (point estimates; intervals above):", "",
            table(["measure", "value", "bar", "met"],
                  [[m, num(v), bar, "yes" if ok else "**no**"] for m, v, bar, ok in rows]), ""]


def _ablation_md(r: dict[str, Any], names: dict[str, str]) -> list[str]:
    cmp = r["compare"]
    ci, other = r["groups"]["ci"], cmp["ci"]
    rows = []
    notes = []
    if other is not None:
        for m in (*HEADLINE, "sensitivity", "specificity"):
            rows.append([m, fmt(ci["overall"].get(m)), fmt(other["overall"].get(m)),
                         fmt(ci.get("diff", {}).get(m))])
        rows.append(["ECE", num(r["classification"]["ece"]), num(cmp["classification"]["ece"]),
                     ""])
        for pair, metrics in ci.get("gap", {}).get("tone", {}).items():
            for m in ("accuracy", "balanced_accuracy"):
                rows.append([f"tone gap {pair}: {m}", fmt(metrics.get(m)),
                             fmt(other.get("gap", {}).get("tone", {}).get(pair, {}).get(m)), ""])
    else:
        recorded = cmp.get("recorded_classification") or {}
        for m in (*HEADLINE, "ece"):
            value = ci["overall"].get(m) if m != "ece" else {"value": r["classification"]["ece"]}
            rows.append([m, fmt(value), num(recorded.get(m)) + (" (recorded)" if recorded else ""),
                         ""])
        notes.append(
            f"`{cmp['name']}` (λ = {cmp.get('lambda_cls')}) carries {cmp.get('classifier')} "
            "beside its own denoiser, so its classification numbers are the ones its own "
            f"classifier recorded ({cmp.get('recorded_by', 'not available')}) — no intervals, "
            "no paired difference. Its generation is its own denoiser's, sampled with this "
            "model's settings; the classifier does not enter the evaluator's measures.")
    gen = r.get("generation", {})
    a, b = gen.get(names["model"]), gen.get(cmp["name"])
    if a and b:
        def fd(g: dict[str, Any]) -> str:
            lo_hi = g.get("fd_macro_ci")
            return num(g["fd_macro_over_classes"], 2) + (
                f" [{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]" if lo_hi else "")

        def fid(g: dict[str, Any]) -> str:
            lo, hi = g["fidelity_macro_ci"]
            return f"{g['fidelity']['macro']:.3f} [{lo:.3f}, {hi:.3f}]"

        rows.append(["FD per class, macro (evaluator space; lower is better)", fd(a), fd(b), ""])
        rows.append(["KID per class, macro", num(a["kid_macro_over_classes"], 4),
                     num(b["kid_macro_over_classes"], 4), ""])
        rows.append(["class fidelity, macro", fid(a), fid(b), ""])
        if "cas" in a and "cas" in b:
            for m in ("accuracy", "balanced_accuracy", "macro_auc"):
                rows.append([f"CAS {m}", num(a["cas"][m]), num(b["cas"][m]), ""])
        for tone in ("brown", "darker"):
            fa = a["fidelity_by_tone"].get(tone, {}).get("macro")
            fb = b["fidelity_by_tone"].get(tone, {}).get("macro")
            rows.append([f"class fidelity, {tone} cells", num(fa), num(fb), ""])
    return [
        f"## Ablation: this model vs `{cmp['name']}` (`{cmp['weights']}`)",
        "",
        "Same test images, same lesion resamples (the difference column is a paired "
        "bootstrap), same generation seeds and counts.",
        "",
        table(["measure", names["model"], cmp["name"], "difference [95 % CI]"], rows),
        "",
        *[n + "\n" for n in notes],
        "Classification: compare the paired difference interval with 0. Generation: FD "
        "intervals come from resampling real lesions and generated images; they overlap "
        "unless the difference is large.",
        "",
    ]


def _generation_md(r: dict[str, Any], names: dict[str, str]) -> list[str]:
    gen = r.get("generation") or {}
    if not gen:
        return ["## Generation quality", "", "Not measured in this run (--generate-per-cell 0).",
                ""]
    if "skipped" in gen:
        return ["## Generation quality", "", f"Skipped: {gen['skipped']}.", ""]
    lines = ["## Generation quality (independent evaluator's feature space)", ""]
    for name, g in gen.items():
        if name == "cas_real_reference" or not isinstance(g, dict) or "per_class" not in g:
            continue
        s = g["sampler"]
        lines += [
            f"### `{name}`",
            "",
            f"{g['per_cell']} images per (dx, tone) cell for tone ∈ {{any, lighter, brown, "
            f"darker}}: {g['n_generated']} images ({4 * g['per_cell']} per class), "
            f"{s['sampler']} {s['steps']} steps, guidance {s['guidance_scale']}, seeds from "
            f"{s['seed']}; {g['seconds_per_image']} s per image. Per-class FD/KID use the "
            "any + lighter cells against real test images of that class; per-tone FD uses "
            "that tone cell (all classes, balanced) against real test images of that tone "
            "(mostly nv), so class mix differs there. FD with fewer images than the "
            f"{g['feature_dim']} feature dimensions is biased upward: compare models only at "
            "equal counts, as here.",
            "",
            f"Macro over classes: FD {num(g['fd_macro_over_classes'], 2)}"
            + (f" [{g['fd_macro_ci'][0]:.2f}, {g['fd_macro_ci'][1]:.2f}]"
               if g.get("fd_macro_ci") else "")
            + f", KID {num(g['kid_macro_over_classes'], 4)}; pooled FD (all generated vs all "
            f"real test) {num(g['fd_pooled'], 2)}. Class fidelity (evaluator argmax = "
            f"requested dx) macro {g['fidelity']['macro']:.3f} [{g['fidelity_macro_ci'][0]:.3f}, "
            f"{g['fidelity_macro_ci'][1]:.3f}].",
            "",
            table(["class", "n real / gen", "FD", "KID", "fidelity"],
                  [[code, f"{row['n_real']} / {row['n_generated']}", num(row["fd"], 2),
                    num(row["kid"], 4), num(g["fidelity"]["per_class"].get(code))]
                   for code, row in g["per_class"].items()]),
            "",
            table(["tone cell", "n real / gen", "FD", "KID", "fidelity (macro)"],
                  [[tone, f"{g['per_tone'][tone]['n_real']} / "
                          f"{g['per_tone'][tone]['n_generated']}" if tone in g["per_tone"]
                    else "—", num(g["per_tone"].get(tone, {}).get("fd"), 2),
                    num(g["per_tone"].get(tone, {}).get("kid"), 4),
                    num(fid.get("macro"))]
                   for tone, fid in g["fidelity_by_tone"].items()]),
            "",
        ]
        if "cas" in g:
            cas = g["cas"]
            lines += [f"Classification accuracy score (a {cas['steps']}-step classifier trained "
                      f"on the {cas['train_images']} generated images only, tested on real "
                      f"test): accuracy {num(cas['accuracy'])}, balanced accuracy "
                      f"{num(cas['balanced_accuracy'])}, macro AUC {num(cas['macro_auc'])}.", ""]
        lines += [f"![samples {name}]({g['grid']})", ""]
    ref = gen.get("cas_real_reference")
    if ref:
        lines += [f"CAS yardstick: the same recipe on {ref['train_images']} REAL train images "
                  f"(same count per class, capped by the class size): accuracy "
                  f"{num(ref['accuracy'])}, balanced accuracy {num(ref['balanced_accuracy'])}, "
                  f"macro AUC {num(ref['macro_auc'])}.", ""]
    return lines


def _fairness_md(r: dict[str, Any]) -> list[str]:
    f = r.get("fairness_experiment") or {}
    if not f:
        return ["## Fairness experiment", "", "Not run (--fairness-augment 0).", ""]
    sizes = r["groups"]["sizes"].get("tone", {})
    rows = []
    for group in ("lighter", "brown", "darker"):
        s = sizes.get(group, {})
        for m in ("accuracy", "balanced_accuracy", "macro_auc", "malignant_auc"):
            cells = [fmt(f[run]["ci"].get("tone", {}).get(group, {}).get(m))
                     for run in ("baseline", "augmented")]
            if m == "accuracy" and s.get("lesions", 99) < 20:
                for i, run in enumerate(("baseline", "augmented")):
                    k, n = f[run].get("correct_by_tone", {}).get(group, (0, 0))
                    lo, hi = wilson(k, n)
                    cells[i] += f"; {k}/{n}, Wilson [{lo:.2f}, {hi:.2f}]"
            rows.append([f"{group} (n {s.get('images', 0)} img / {s.get('lesions', 0)} les.)", m,
                         *cells, fmt(f["difference"].get(group, {}).get(m))])
    for pair in ("lighter-brown", "lighter-darker"):
        for m in ("accuracy", "balanced_accuracy"):
            gaps = [f[run]["ci"].get("gap", {}).get("tone", {}).get(pair, {}).get(m)
                    for run in ("baseline", "augmented")]
            rows.append([f"gap {pair}", m, fmt(gaps[0]), fmt(gaps[1]), ""])
    darker = sizes.get("darker", {"images": 0, "lesions": 0})
    return [
        "## Fairness experiment: synthetic brown and darker images in training",
        "",
        f"A small classifier ({f['classifier']}, {f['steps']} steps, the evaluator's recipe) "
        f"trained on the {f['baseline']['train_images']} real train images, against the same "
        f"with {f['synthetic_images']} synthetic images added ({f['synthetic_per_class_per_tone']}"
        " per class for each of the brown and darker cells, made by this model; the real "
        f"train split holds {f.get('real_train_images_by_tone')} images by tone). Same seed, "
        "same steps; tested on real test images; differences are paired bootstraps "
        "(augmented − baseline).",
        "",
        table(["group", "metric", "baseline", "augmented", "difference"], rows),
        "",
        f"The darker group has {darker['images']} test images of {darker['lesions']} lesions: "
        "whatever the difference there, it cannot be distinguished from chance, and only "
        "accuracy is defined for it; when all its images are right (or all wrong) the "
        "bootstrap collapses, so the lighter−darker gap intervals above only carry the "
        "lighter group's uncertainty and understate the real one (see the Wilson intervals). "
        "The brown group carries the evidence; an interval that "
        "contains 0 means augmentation made no detectable difference.",
        "",
    ]


def _saliency_md(r: dict[str, Any]) -> list[str]:
    s = r.get("saliency") or {}
    if not s:
        return []
    rows = []
    for method, m in s.items():
        if "error" in m:
            rows.append([method, "error: " + m["error"], *[""] * 7])
            continue
        rows.append([method, str(m.get("n")), str(m.get("n_empty_maps", "—")),
                     num(m.get("mean_energy_in_mask")),
                     num(m.get("uniform_map_baseline")), num(m.get("mean_iou_at_0.5")),
                     num(m.get("mean_lesion_coverage_at_0.5")),
                     ", ".join(f"{k} {num(v)}" for k, v in (m.get("per_dx") or {}).items())])
    return ["## Saliency: share of CAM energy inside the expert lesion masks", "",
            "CAM for the predicted class on real test images; the uniform-map baseline is the "
            "mean mask area (what a map that ignores the image would score). Bar: ≥ 0.6 mean. "
            "Energy alone rewards a map squeezed into one spot of the lesion, so the IoU of "
            "the map's hot region (≥ 0.5 of its maximum) with the mask and the share of the "
            "lesion it covers are given beside it.",
            "", table(["method", "n", "empty maps", "mean share in mask (non-empty)",
                       "uniform baseline", "IoU at 0.5",
                       "lesion covered at 0.5", "per class (share in mask)"], rows), ""]


def rerender(directory: str | Path) -> Path:
    """Rewrite DIR/report.md from DIR/metrics.json (after a wording change, no recompute)."""
    import json

    directory = Path(directory)
    r = json.loads((directory / "metrics.json").read_text())
    names = r.get("names") or {}
    if "model" not in names:
        keys = [k for k in (r.get("generation") or {}) if k not in
                ("cas_real_reference", (r.get("compare") or {}).get("name"), "skipped")]
        names = {"model": keys[0] if keys else "model",
                 "compare": (r.get("compare") or {}).get("name", "compare")}
    (directory / "report.md").write_text(render_markdown(r, names))
    return directory / "report.md"


if __name__ == "__main__":
    import sys

    print(rerender(sys.argv[1]))

__all__ = ["build_report", "group_statistic", "nest", "render_markdown", "youden_threshold"]
