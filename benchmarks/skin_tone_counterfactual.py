"""The skin-tone counterfactual test on a weights folder: every test image with an expert
mask, its skin re-tinted (CIELAB, lesion untouched: classndiff/trust/fairness.py) to the brown and
the darker group's ITA; how often the diagnosis flips, the change in P(malignant), accuracy
and malignant AUC before and after. The flips are also counted apart for the lesions the
re-tint made paler than their new skin (a faint lesion on light skin; its contrast inverted),
and the same targets are measured with the whole field re-tinted, lesion included, its
contrast with the skin kept (`whole_field`: skintone.retint_field_torch). The figure's
columns: original, brown, darker, darker with the whole field.

    python benchmarks/skin_tone_counterfactual.py --weights weights/embedded \\
        --output reports/embedded/skin_tone_counterfactual.json \\
        --figure reports/embedded/skin_tone_counterfactual.png
    python benchmarks/skin_tone_counterfactual.py --quick

--apply writes the whole-field figures into WEIGHTS/config.json (`extra.skin_tone_check`), so
a diagnosis on brown or darker skin carries what this test says about answers like it.

Bars: flip rate lighter → darker ≤ 10 %; malignant AUC change under the darker re-tint
≥ −0.02. A re-tinted lesion is a proxy, not evidence on patients with dark skin. Ends with
ONE JSON line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from _bench import (
    MaskedSplit,
    edit_weights_config,
    emit,
    environment,
    load_pipe,
    parser,
    print_table,
    probabilities,
    save_rows,
    setup,
)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--output", type=Path)
    p.add_argument("--figure", type=Path)
    p.add_argument("--skin-reference", type=float, nargs=2, default=None, metavar=("ITA", "B"),
                   help="skin-tone normalisation at inference to (ITA°, b*) instead of the "
                   "weights' own (model.classifier_skin_reference)")
    p.add_argument("--apply", action="store_true",
                   help="write the whole-field figures into the weights' config.json")
    p.add_argument("--no-skin-reference", action="store_true",
                   help="no skin-tone normalisation, whatever the weights say")
    args = p.parse_args()
    if args.apply and (args.skin_reference or args.no_skin_reference or args.quick):
        p.error("--apply records the weights as they ship: not with --skin-reference, "
                "--no-skin-reference or --quick")
    setup(args)
    from classndiff.trust.fairness import (
        band_label,
        flip_report,
        lesion_paler_than_skin,
        skin_ita,
        skin_tone_check_record,
    )

    pipe = load_pipe(args)
    if args.skin_reference or args.no_skin_reference:
        pipe.config.model.classifier_skin_reference = args.skin_reference
    data = MaskedSplit(args.data_dir, args.split, pipe.config.model.pixel_size,
                       limit=40 if args.quick else None)
    images, masks, labels = data.images, data.masks, data.labels

    original = probabilities(pipe, images)
    result = {"benchmark": "skin_tone_counterfactual", "split": args.split,
              "skin_reference": pipe.config.model.classifier_skin_reference, "targets": {},
              "whole_field": {}}
    paler_before = np.array([lesion_paler_than_skin(im, m) for im, m in zip(images, masks)])
    for key, tinted in (("targets", data.retinted), ("whole_field", data.whole_field)):
        for target, retinted in tinted.items():
            inverted = ~paler_before & np.array([lesion_paler_than_skin(im, m)
                                                 for im, m in zip(retinted, masks)])
            report = flip_report(original, probabilities(pipe, retinted), labels, inverted,
                                 getattr(pipe, "malignant_threshold", None))
            report["median_skin_ita"] = float(np.median([skin_ita(im, m) for im, m in
                                                         zip(retinted[:200], masks[:200])]))
            result[key][target] = report
    result["median_skin_ita_original"] = float(np.median([skin_ita(im, m) for im, m in
                                                          zip(images[:200], masks[:200])]))
    darker = result["targets"]["darker"]
    result["bar_flip_rate_10pct"] = bool(darker["flip_rate"] <= 0.10)
    result["bar_malignant_auc_change"] = bool(
        darker["malignant_auc_after"] - darker["malignant_auc_before"] >= -0.02)
    reports = [(t, r) for t, r in result["targets"].items()] + [
        (f"{t}, whole field", r) for t, r in result["whole_field"].items()]
    print_table(["re-tint to", "n", "flip rate", "ΔP(malignant)", "accuracy", "malignant AUC",
                 "median ITA"],
                [[t, r["n"], f"{100 * r['flip_rate']:.1f} %",
                  f"{r['malignant_change_mean']:+.3f}",
                  f"{r['accuracy_before']:.3f} → {r['accuracy_after']:.3f}",
                  f"{r['malignant_auc_before']:.3f} → {r['malignant_auc_after']:.3f}",
                  round(r["median_skin_ita"], 1)] for t, r in reports])
    print_table(["re-tint to", "flips, lesion contrast kept", "flips, lesion made paler"],
                [[t, *(f"{100 * c['flip_rate']:.1f} % of {c['n']}" if c["n"] else "—"
                       for c in r["flip_rate_by_contrast"].values())] for t, r in reports])
    bands = [b["top_probability"] for b in darker["flip_rate_by_confidence"]]
    print_table(["re-tint to", *(f"flips, top P in {band_label(*band)}" for band in bands)],
                [[t, *(f"{100 * b['flip_rate']:.1f} % of {b['n']}" if b["n"] else "—"
                       for b in r["flip_rate_by_confidence"])]
                 for t, r in reports])
    if args.figure:
        shown = range(min(6, len(images)))
        save_rows(args.figure, [np.concatenate([images[i], *(retinted[i] for retinted in
                                                             data.retinted.values()),
                                                data.whole_field["darker"][i]], 1)
                                for i in shown])
    result.update(environment(args, pipe))
    if args.apply:
        apply(pipe, skin_tone_check_record(result["whole_field"], args.split,
                                           pipe.temperature, pipe.test_views))
    emit(result, args.output)


def apply(pipe, record) -> None:  # noqa: ANN001
    """Write `record` (a SkinToneCheck) into the weights folder's config.json."""
    def edit(config) -> str:  # noqa: ANN001
        config.skin_tone_check = record
        return f"extra.skin_tone_check written ({record.split}, {record.n} images)"

    edit_weights_config(pipe, edit)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
