"""report.md from the report's data: headline, findings, bars, classification and group
tables (the longer sections are in markdown_sections.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from classndiff.evaluation.bars import BARS
from classndiff.evaluation.bootstrap import GROUP_METRICS
from classndiff.evaluation.report.format import fmt, num, table
from classndiff.evaluation.report.markdown_sections import (
    ablation_md,
    fairness_md,
    fairness_tables_md,
    generation_md,
    saliency_md,
)
from classndiff.evaluation.report.statistics import operating_point
from classndiff.labels import DX_CODES


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


def _intro_md(r: dict[str, Any]) -> list[str]:
    sizes = r["groups"]["sizes"]
    return [
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
    ]


def _threshold_name(thresholds: dict[str, Any]) -> str:
    key = operating_point(thresholds)
    if key == "model_call":
        target = thresholds[key].get("target_sensitivity")
        return ("the model's malignant call, fitted on val for sensitivity ≥ "
                f"{target:.2f}" if target is not None else "the model's malignant call")
    return "Youden point on val" if key == "youden_val" else "0.5"


def _other_operating_points(thresholds: dict[str, Any]) -> list[list[str]]:
    """Rows for the thresholds the intervals were not read at (Youden point, 0.5)."""
    rows = []
    for key in ("youden_val", "0.5"):
        if key in thresholds and key != operating_point(thresholds):
            at = thresholds[key]
            name = f"{at['threshold']:.3f} (Youden point on val)" if key == "youden_val" else key
            rows.append([f"sensitivity / specificity @ {name}",
                         f"{num(at['sensitivity'])} / {num(at['specificity'])}"])
    return rows


def _headline_md(r: dict[str, Any]) -> list[str]:
    c = r["classification"]
    ci = r["groups"]["ci"]
    return [
        "## Headline",
        "",
        table(["measure", "value [95 % CI]"], [
            ["accuracy", fmt(ci["overall"]["accuracy"])],
            ["balanced accuracy", fmt(ci["overall"]["balanced_accuracy"])],
            ["macro one-vs-rest AUC", fmt(ci["overall"]["macro_auc"])],
            ["malignant vs benign AUC", fmt(ci["overall"]["malignant_auc"])],
            [f"sensitivity @ P(malignant) ≥ {r['groups']['threshold']:.3f} "
             f"({_threshold_name(c['thresholds'])})", fmt(ci["overall"]["sensitivity"])],
            ["specificity @ the same threshold", fmt(ci["overall"]["specificity"])],
            *_other_operating_points(c["thresholds"]),
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
    ]


def _groups_md(r: dict[str, Any]) -> list[str]:
    """Every metric per skin-tone group and per sex, the gaps, and what the darker-skin
    numbers can say."""
    sizes = r["groups"]["sizes"]
    ci = r["groups"]["ci"]
    lines = [
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
    return lines


def render_markdown(r: dict[str, Any], names: dict[str, str],
                    directory: Path | None = None) -> str:
    """report.md; `directory` (the report's folder) lends the fairness tables found there."""
    lines = [*_intro_md(r), *_findings_md(r, names), *_headline_md(r), *_bars_md(r, names),
             *_groups_md(r)]
    if r.get("compare"):
        lines += ablation_md(r, names)
    lines += generation_md(r, names)
    lines += fairness_tables_md(directory)
    lines += fairness_md(r)
    lines += saliency_md(r)
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


# Report text: one block per finding, read top to bottom like the report itself.
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
    measures = [("accuracy (7-class)", "accuracy", c["accuracy"]),
                ("macro one-vs-rest AUC", "macro_auc", c["macro_auc"]),
                ("malignant vs benign AUC", "malignant_auc", c["malignant_auc"]),
                ("balanced accuracy", "balanced_accuracy", c["balanced_accuracy"]),
                ("ECE" + (" after temperature scaling" if r["calibrated"] else " (uncalibrated)"),
                 "ece", c["ece"])]
    if gen.get("fidelity"):
        measures.append(("class fidelity, macro (independent evaluator)", "class_fidelity",
                         gen["fidelity"]["macro"]))
    if sal.get("mean_energy_in_mask") is not None:
        measures.append(("Grad-CAM energy inside the lesion mask, mean", "energy_in_mask",
                         sal["mean_energy_in_mask"]))
    rows = [[name, num(value), str(BARS[key]), BARS[key].verdict(value)]
            for name, key, value in measures]
    return ["Against the quality bars of DESIGN.md (point estimates; intervals above):", "",
            table(["measure", "value", "bar", "met"], rows), ""]
