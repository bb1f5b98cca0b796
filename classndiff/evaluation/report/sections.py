"""The report's measurements, one function per section: classification (with groups),
generation quality in the independent evaluator's space, the fairness experiment, saliency;
and the comparison runs (ablation) read from disk."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classndiff.evaluation.bootstrap import (
    MALIGNANT,
    bootstrap,
    fast_metrics,
    lesion_codes,
    lesion_resample,
)
from classndiff.evaluation.evaluate import probabilities, split_logits
from classndiff.evaluation.report.statistics import (
    group_sizes,
    group_statistic,
    nest,
    operating_point,
    wilson,
    youden_threshold,
)
from classndiff.labels import DX_CODES, TONE_GROUPS

# ------------------------------------------------------------------ the pieces
# (id(pipe), id(dataset)) → (pipe, dataset, logits): the objects are held so that their ids
# cannot be reused while cached; build_report empties it when done.
_LOGITS: dict[tuple[int, int], tuple[Any, Any, torch.Tensor]] = {}


def clear_prediction_cache() -> None:
    """Forget the cached logits (a new report starts from the weights on disk)."""
    _LOGITS.clear()


def predict_probs(pipe: Any, dataset: Any, calibrated: bool = True, batch_size: int = 128
                  ) -> np.ndarray:
    """Probabilities for a dataset; logits are computed once per (model, dataset) and the
    temperature applied here, so calibrated and raw probabilities cost one pass."""
    key = (id(pipe), id(dataset))
    if key not in _LOGITS:
        _LOGITS[key] = (pipe, dataset, split_logits(pipe, dataset, batch_size))
    return probabilities(pipe, _LOGITS[key][2], calibrated)


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
    # The operating point of the group metrics: the model's own malignant call when it has
    # one (fitted by `classndiff calibrate`), else the Youden point on val, else 0.5.
    candidates = {"0.5": 0.5}
    if val is not None and 0 < MALIGNANT[val.dx.numpy()].sum() < len(val):
        candidates["youden_val"] = youden_threshold(predict_probs(pipe, val), val.dx.numpy())
    if getattr(pipe, "malignant_threshold", None) is not None:
        candidates["model_call"] = pipe.malignant_threshold
    threshold = candidates[operating_point(candidates)]
    at = {}
    for name, t in candidates.items():
        m = fast_metrics(probs, labels, t)
        at[name] = {"threshold": round(t, 4), "sensitivity": m["sensitivity"],
                    "specificity": m["specificity"]}
    if "model_call" in at:
        target = pipe.config.calibration.malignant_target_sensitivity
        at["model_call"]["target_sensitivity"] = target
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
    if config.model.vae_config is not None:
        raise ValueError(f"{folder} holds only a denoiser, but its config names a bundled "
                         "autoencoder whose weights it lacks: compare with a full weights folder")
    # The folder's own denoiser (its architecture may differ from this model's, e.g. a pixel
    # ablation beside a latent model), under this model's classifier.
    from classndiff.models.joint import build_denoiser

    model = copy.deepcopy(pipe.model)
    model.denoiser = build_denoiser(config.model, config.train.cond_drop_prob)
    model.vae = None
    model.config = config.model
    state = {k.removeprefix("denoiser."): v.float()
             for k, v in load_file(str(folder / "denoiser.safetensors")).items()}
    model.denoiser.load_state_dict(state, strict=True)
    model.to(pipe.device).eval()
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


def load_evaluator(directory: str | Path | None) -> Any:
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
