"""The model card's pieces, each from a file a command wrote: the classification bars, the
training stages, the saliency paragraph, the neutral generation yardstick, the camera-shift
test, the skin-tone counterfactual, the fairness table, the diffusion counterfactuals and the
abstention rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from classndiff.config import Abstention, Calibration, TrainingStage
from classndiff.evaluation.bars import BARS
from classndiff.explain.saliency import CAM_NAMES
from classndiff.labels import DX_CODES, DX_NAMES
from classndiff.trust.fairness import band_label


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
            "discarded, which is why IoU, coverage and empty maps are reported beside it. "
            "A map on the lesion says where the evidence was pooled — each cell of the last "
            "map sees most of the image — not that the reasoning is right.\n")
    return text + "\n"


def _yardstick_section(report: Path) -> str:
    """The neutral generation yardstick (benchmarks/generator_yardstick.py)."""
    gen = _load_json(report / "generator_yardstick.json")
    if not gen:
        return ""
    rows = ["| measure | generated | real floor | bar |", "|---|---|---|---|"]
    model, floor = gen["model"], gen["real_floor"]
    for key, name, bar in (("fd", "Fréchet distance (ImageNet Lite0 features)",
                            f"≤ {3 * floor['fd']:.1f} (3 × floor)"),
                           ("kid", "KID", "—"), ("precision", "precision (k = 5)", "≥ 0.60"),
                           ("recall", "recall (k = 5)", "≥ 0.25"),
                           ("diversity_ratio", "within-class diversity ÷ real", "≥ 0.75"),
                           ("blockiness", "blockiness (grid ÷ off-grid steps)", "≤ 1.15"),
                           ("class_fidelity_macro", "class fidelity (independent "
                            "evaluator), macro", "≥ 0.70"),
                           ("fd_evaluator", "Fréchet distance (the evaluator's features, "
                            "trained on dermoscopy alone)", "—"),
                           # Against the real images re-weighted to the generated (balanced)
                           # class mix: realism apart from how many of each class there are.
                           ("fd_mix_matched", "Fréchet distance (ImageNet Lite0), real "
                            "images re-weighted to the generated class mix", "—"),
                           ("fd_evaluator_mix_matched", "Fréchet distance (the evaluator's "
                            "features), real images re-weighted to the generated class mix",
                            "—")):
        if key in model:  # records from before a measure existed lack it
            rows.append(f"| {name} | {_fmt(model[key])} | {_fmt(floor.get(key))} | {bar} |")
    tones = gen.get("tone_median_ita", {})
    return (
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


def _camera_shift_section(report: Path) -> str:
    """The camera-shift test (benchmarks/camera_shift.py)."""
    shift = _load_json(report / "camera_shift.json")
    if not shift:
        return ""
    threshold = shift.get("malignant_call_threshold")
    call_head = (f" malignant call (P ≥ {threshold:.3f}): sensitivity / specificity |"
                 if threshold is not None else "")
    rows = ["| shift | accuracy | balanced accuracy | malignant AUC | malignant sensitivity "
            f"(P ≥ 0.5) |{call_head} answers changed |",
            "|---|---|---|---|---|" + ("---|" if call_head else "") + "---|"]

    def call(v: dict[str, Any]) -> str:
        c = v.get("malignant_call")
        return f" {_fmt(c['sensitivity'])} / {_fmt(c['specificity'])} |" if c else " — |"

    rows += [f"| {k} | {_fmt(v['accuracy'])} | {_fmt(v['balanced_accuracy'])} | "
             f"{_fmt(v['malignant_auc'])} | {_fmt(v.get('malignant_sensitivity'))} |"
             f"{call(v) if call_head else ''} "
             f"{_percent(v.get('answers_changed'))} |" for k, v in shift["shifts"].items()]
    return ("### Camera-shift test\nThe test images under photometric shifts other "
            "dermatoscopes produce (`python benchmarks/camera_shift.py --weights "
            "weights/embedded --output reports/embedded/camera_shift.json`). A proxy: "
            "real images from other devices differ in more ways. \"Answers changed\": the share "
            "of images whose top class differs from the unshifted reading; the quarter turn "
            "carries no information at all, so its figure is the churn any change of input "
            "causes, the scale for the skin-tone flips below.\n\n" + "\n".join(rows))


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def _skin_tone_section(report: Path) -> str:
    """The skin-tone counterfactual (benchmarks/skin_tone_counterfactual.py)."""
    tone = _load_json(report / "skin_tone_counterfactual.json")
    if not tone:
        return ""
    reports = [(k, v) for k, v in tone["targets"].items()] + [
        (f"{k}, whole field", v) for k, v in tone.get("whole_field", {}).items()]
    threshold = next((v["malignant_call_threshold"] for _, v in reports
                      if "malignant_call_threshold" in v), None)
    call_head = (f" malignant call (P ≥ {threshold:.3f}) sensitivity before → after |"
                 if threshold is not None else "")
    rows = ["| skin re-tinted to | images | diagnosis flips | mean ΔP(malignant) | "
            "accuracy before → after | malignant AUC before → after | malignant sensitivity "
            f"(P ≥ 0.5) before → after |{call_head}",
            "|---|---|---|---|---|---|---|" + ("---|" if call_head else "")]

    def call(v: dict[str, Any]) -> str:
        if not call_head:
            return ""
        return (f" {_fmt(v.get('malignant_call_sensitivity_before'))} → "
                f"{_fmt(v.get('malignant_call_sensitivity_after'))} |")

    rows += [f"| {k} (median skin ITA {_fmt(v['median_skin_ita'], 1)}°) | {v['n']} | "
             f"{100 * v['flip_rate']:.1f} % | {v['malignant_change_mean']:+.3f} | "
             f"{_fmt(v['accuracy_before'])} → {_fmt(v['accuracy_after'])} | "
             f"{_fmt(v['malignant_auc_before'])} → {_fmt(v['malignant_auc_after'])} | "
             f"{_fmt(v.get('malignant_sensitivity_before'))} → "
             f"{_fmt(v.get('malignant_sensitivity_after'))} |{call(v)}"
             for k, v in reports]
    return ("### Skin-tone counterfactual\nEvery test image with an expert mask, its "
            "skin re-tinted in CIELAB to the brown or darker group's ITA, the lesion's "
            "pixels untouched (`python benchmarks/skin_tone_counterfactual.py "
            "--weights weights/embedded --output "
            "reports/embedded/skin_tone_counterfactual.json`). Bars: flips ≤ 10 % and "
            "malignant AUC change ≥ −0.02 under the darker re-tint. What it does not "
            "show: HAM10000 has almost no darker-skin lesions, so a re-tinted lesion "
            "is a proxy, not evidence on patients with dark skin. \"Whole field\": the "
            "lesion darkened with its skin, its contrast with the skin kept (one gain per "
            "colour channel in linear light), a second proxy beside the bar's.\n\n"
            + "\n".join(rows) + _flips_by_confidence(tone["targets"].get("darker", {}))
            + _flips_by_contrast(tone["targets"].get("darker", {})))


def _flips_by_confidence(darker: dict) -> str:
    """Where the darker re-tint moves the top class, by the original's top probability."""
    bands = [b for b in darker.get("flip_rate_by_confidence", []) if b["n"]]
    if not bands:
        return ""
    parts = [f"{100 * b['flip_rate']:.1f} % of the {b['n']} images read with a top-class "
             f"probability in {band_label(*b['top_probability'])}" for b in bands]
    return ("\n\nFlips to darker skin by how sure the model was of the original: "
            + "; ".join(parts) + ".")


def _flips_by_contrast(darker: dict) -> str:
    """The darker flips apart for the lesions the skin-only re-tint made paler than their
    new skin (their contrast inverted) and the rest."""
    groups = darker.get("flip_rate_by_contrast", {})
    kept, inverted = groups.get("kept", {}), groups.get("inverted", {})
    if not (kept.get("n") and inverted.get("n")):
        return ""
    return (f" The skin-only re-tint to darker skin leaves {inverted['n']} of the "
            f"{darker['n']} lesions paler than their new skin (a faint lesion on light skin; "
            f"no pigmented lesion looks so): {_percent(inverted['flip_rate'])} of those "
            f"flip, against {_percent(kept['flip_rate'])} of the {kept['n']} that stay "
            "darker than their skin.")


def _fairness_section(report: Path) -> str:
    """The fairness table (benchmarks/fairness_table.py)."""
    table = report / "fairness_table.md"
    fairness = _load_json(report / "fairness_table.json")
    if not (fairness and table.exists()):
        return ""
    return (
        "### Fairness table\nOne row per training arm, all fine-tuned from the same "
        "classifier for the same steps; the arm marked shipped was chosen on the validation "
        "split by a rule fixed beforehand (when a later table follows, the classifier "
        "shipped now continues that arm) (`python benchmarks/fairness_table.py --arm NAME=DIR "
        "... --output reports/embedded/fairness_table.json --markdown "
        "reports/embedded/fairness_table.md`; the arms' training commands are in the "
        "README). The adversarial arm's tone head accuracy should fall towards the share "
        "of the majority tone group.\n\n" + table.read_text().strip() + _shipped_chain(report))


def _shipped_chain(report: Path) -> str:
    """The second fairness table: from the arm the table above chose to the classifier that
    ships now (fairness_table_shipped.md, same script, rows reused from the studies)."""
    table = report / "fairness_table_shipped.md"
    if not table.exists():
        return ""
    return ("\n\n#### From that arm to the shipped classifier\nLater studies continued the "
            "chosen arm's classifier (README, *Fairness*); each row is one step, measured the "
            "same way (`bash benchmarks/fairness_shipped.sh`).\n\n" + table.read_text().strip())


def _counterfactual_section(report: Path) -> str:
    """The diffusion counterfactuals (benchmarks/counterfactuals.py)."""
    cf = _load_json(report / "counterfactuals.json")
    if not cf:
        return ""
    measured = any("feature_distance" in v for arms in cf["pairs"].values()
                   for v in arms.values())
    extra_head = (" ImageNet-feature distance to the original | FD to real images of the "
                  "target (real floor) |" if measured else "")
    rows = ["| pair | arm | validity (independent evaluator) | change inside / outside "
            "the lesion (0–255) |" + extra_head + " seconds |",
            "|---|---|---|---|" + ("---|---|" if measured else "") + "---|"]
    for pair, arms in cf["pairs"].items():
        for arm, v in arms.items():
            extra = (f" {_fmt(v.get('feature_distance'), 1)} | "
                     f"{_fmt(v.get('fd_to_real_target'), 0)} ({_fmt(v.get('fd_real_floor'), 0)}) |"
                     if measured else "")
            rows.append(f"| {pair} | {arm} | {_fmt(v.get('validity'))} | "
                        f"{_fmt(v['change_inside'], 1)} / {_fmt(v['change_outside'], 1)} |"
                        f"{extra} {_fmt(v['seconds_median'], 2)} |")
    sweep = ""
    if cf.get("sweep"):
        levels = list(next(iter(cf["sweep"].values()))["validity_by_strength"])
        lines = ["| pair | " + " | ".join(f"strength {k}" for k in levels)
                 + " | smallest strength with validity ≥ 0.5 |",
                 "|---|" + "---|" * (len(levels) + 1)]
        for pair, curve in cf["sweep"].items():
            lowest = curve["min_strength_for_50pct"]
            lines.append(f"| {pair} | " + " | ".join(
                _fmt(v) for v in curve["validity_by_strength"].values())
                + f" | {'none' if lowest is None else lowest} |")
        sweep = ("\n\nValidity by strength (target arm, the same images):\n\n"
                 + "\n".join(lines))
    guidance = (f", guidance {cf['guidance_scale']}" if "guidance_scale" in cf else "")
    if "margin" in cf:
        guidance += f", the redrawn region reaching {cf['margin']} px beyond the lesion"
        if cf.get("margin_share"):
            guidance += (f" (less where that ring would cover more than "
                         f"{cf['margin_share']:.0%} of the skin around it)")
    if cf.get("candidates", 1) > 1:
        guidance += (f", {cf['candidates']} redraws of which the model's own classifier picks "
                     "the one most like the target")
    if cf.get("detail"):
        guidance += (f", {cf['detail']:.0%} of the upload's own fine detail (finer than the "
                     "generator draws) laid back over the redraw")
    strength = f"strength {cf['strength']}"
    own = {t: v for t, v in cf.get("strength_by_target", {}).items() if v != cf["strength"]}
    if own:  # targets with a strength of their own
        strength += " (" + ", ".join(f"{v} towards {t}" for t, v in own.items()) + ")"
    steered = {t: v for t, v in cf.get("classifier_scale_by_target", {}).items() if v}
    if steered:  # the joint classifier's guidance on x̂0, where a target uses it
        guidance += (", the joint classifier's guidance on x̂0 with step "
                     + ", ".join(f"{v} towards {t}" for t, v in steered.items()))
    return ("### Counterfactuals (\"what would it look like as …\")\n"
            f"Real test images, {strength}{guidance}, graded by the independent "
            "evaluator, never by the model itself; \"plain noise\" is the same edit "
            "with guidance 0 (no target) "
            "(`python benchmarks/counterfactuals.py --weights weights/embedded "
            "--output reports/embedded/counterfactuals.json`).\n\n" + "\n".join(rows) + sweep)


def _measured_sections(report: Path | None) -> str:
    """The neutral generation yardstick, the camera-shift test, the skin-tone counterfactual,
    the fairness table and the diffusion counterfactuals, from what their benchmarks wrote."""
    if report is None:
        return ""
    parts = (section(report) for section in (_yardstick_section, _camera_shift_section,
                                             _skin_tone_section, _fairness_section,
                                             _counterfactual_section))
    return "\n\n".join(part for part in parts if part)


def _malignant_call_text(calibration: Calibration | None, report: dict[str, Any]) -> str:
    """The malignant call's threshold, how it was fitted, and what it gives on test (from the
    evaluation report, read at that threshold), as a paragraph of its own; empty for
    weights without one."""
    if calibration is None or calibration.malignant_threshold is None:
        return ""
    text = (f"\n\n**The malignant call** (what the app shows beside P(malignant)): P(malignant) ≥ "
            f"{calibration.malignant_threshold:.3f}, the highest threshold whose sensitivity on "
            f"the {calibration.split} split reaches {calibration.malignant_target_sensitivity:.2f} "
            f"(fitted by `classndiff calibrate`; there: sensitivity "
            f"{_fmt(calibration.malignant_sensitivity)}, specificity "
            f"{_fmt(calibration.malignant_specificity)}).")
    at = report.get("classification", {}).get("thresholds", {}).get("model_call")
    overall = report.get("groups", {}).get("ci", {}).get("overall", {})
    if at and abs(at["threshold"] - round(calibration.malignant_threshold, 4)) < 1e-9:
        def ci(key: str) -> str:
            v = overall.get(key, {})
            return (f"{_fmt(v.get('value'))} [{_fmt(v.get('lo'))}, {_fmt(v.get('hi'))}]"
                    if v.get("value") is not None else _fmt(at.get(key)))

        text += (f" On the test split: sensitivity {ci('sensitivity')}, specificity "
                 f"{ci('specificity')} (lesion-bootstrap 95 % intervals).")
    else:
        text += " Its test-split figures: not measured with this threshold yet."
    return text


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


def classification_rows(cls: dict[str, Any]) -> str:
    """The headline classification measures against their bars."""
    rows = []
    for key, name in (("accuracy", "accuracy, 7 classes"), ("balanced_accuracy",
                      "balanced accuracy"), ("macro_auc", "macro one-vs-rest AUC"),
                      ("malignant_auc", "malignant vs benign AUC"), ("ece", "ECE")):
        bar = BARS[key]
        value = cls.get(key)
        met = "—" if value is None else bar.verdict(value)
        rows.append(f"| {name} | {_fmt(value)} | {bar} | {met} |")
    return "\n".join(rows)


def per_class_table(cls: dict[str, Any]) -> str:
    return "\n".join(
        ["| class | sensitivity | specificity | one-vs-rest AUC |", "|---|---|---|---|",
         *(f"| {dx} ({DX_NAMES[dx]}) | {_fmt(cls.get(f'sensitivity_{dx}'))} | "
           f"{_fmt(cls.get(f'specificity_{dx}'))} | {_fmt(cls.get(f'auc_{dx}'))} |"
           for dx in DX_CODES)])


def generation_rows(generation: dict[str, Any] | None) -> list[str]:
    """The report's generation measures (FD per class, fidelity, CAS), when it has them."""
    if not isinstance(generation, dict):
        return []
    fid = generation.get("fidelity", {})
    fid_ci = generation.get("fidelity_macro_ci") or []
    fd_ci = generation.get("fd_macro_ci") or []
    cas = generation.get("cas", {})

    def ci(values: list, digits: int = 3) -> str:
        return (f" [{_fmt(values[0], digits)}, {_fmt(values[1], digits)}]"
                if len(values) == 2 else "")

    return [
        f"| Fréchet distance per class, macro (lower is better) | "
        f"{_fmt(generation.get('fd_macro_over_classes'), 1)}{ci(fd_ci, 1)} | reported |",
        f"| class fidelity (evaluator agrees with the requested class), macro | "
        f"{_fmt(fid.get('macro') if isinstance(fid, dict) else None)}{ci(fid_ci)} | ≥ 0.70 |",
        f"| classification accuracy score (trained on {cas.get('train_images', '—')} "
        f"generated images only): accuracy / balanced accuracy | "
        f"{_fmt(cas.get('accuracy'))} / {_fmt(cas.get('balanced_accuracy'))} | — |",
    ]


def stage_table(stages: list[TrainingStage]) -> str:
    """One row per training stage, with the command that ran it."""
    rows = ["| stage | what | hardware | steps | images seen | wall time | command |",
            "|---|---|---|---|---|---|---|"]
    for i, st in enumerate(stages, start=1):
        wall = st.wall_seconds
        rows.append(
            f"| {i} | {st.what or st.step_kind} | {st.hardware or '—'} | "
            f"{st.step} | {st.images_seen} | "
            f"{'—' if wall is None else f'{wall / 60:.1f} min'} | `{st.command or '—'}` |")
    return "\n".join(rows)
