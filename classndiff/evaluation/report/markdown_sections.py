"""report.md's longer sections: the λ = 0 ablation, generation quality, the fairness
experiment, saliency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from classndiff.evaluation.report.format import fmt, num, table
from classndiff.evaluation.report.statistics import HEADLINE, wilson


# Report text, read top to bottom like the section it writes.
def ablation_md(r: dict[str, Any], names: dict[str, str]) -> list[str]:
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


# Report text, read top to bottom like the section it writes.
def generation_md(r: dict[str, Any], names: dict[str, str]) -> list[str]:
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


def fairness_tables_md(directory: Path | None) -> list[str]:
    """The fairness tables written beside the report, if any: the training arms compared
    (benchmarks/fairness_arms.sh + fairness_table.py) and the steps from the arm they chose to
    the classifier that ships (benchmarks/fairness_shipped.sh)."""
    if directory is None:
        return []
    parts = [(Path(directory) / "fairness_table.md",
              "Training arms compared on the skin-tone counterfactual (`bash "
              "benchmarks/fairness_arms.sh`, then `python benchmarks/fairness_table.py`):"),
             (Path(directory) / "fairness_table_shipped.md",
              "From the arm it chose to the shipped classifier (`bash "
              "benchmarks/fairness_shipped.sh START RUNS`):")]
    lines = []
    for path, caption in parts:
        if path.exists():
            lines += [caption, "", path.read_text().strip(), ""]
    return ["## Fairness tables", "", *lines] if lines else []


def fairness_md(r: dict[str, Any]) -> list[str]:
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


def saliency_md(r: dict[str, Any]) -> list[str]:
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
