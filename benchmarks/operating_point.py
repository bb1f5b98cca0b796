"""Malignant sensitivity and specificity at P(malignant) ≥ 0.5, and at the threshold where an
arm calls as many malignant lesions as the first (reference) arm does at 0.5: does an arm
that calls fewer lesions malignant rank them worse, or only sit at another operating point?
Read like the fairness table (every image of the split with an expert mask).

    python benchmarks/operating_point.py --arm "0 generated=RUNS/arm-0/last" \\
        --arm "consistency 3=RUNS/consistency-3/last" --split val --output OUT.json

--target-sensitivity S: also each arm's own threshold as `classndiff calibrate` fits it (the
highest whose sensitivity reaches S), cross-fitted over --folds halves of the split by lesion
(fitted on the others, applied to each, pooled), so that it is not judged where it was fitted.

Ends with ONE JSON line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from _bench import MaskedSplit, emit, environment, load_pipe, parser, print_table, probabilities

from classndiff.trust.threshold import cross_fitted_rates, fit_threshold, rates


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--arm", action="append", default=[], metavar="NAME=WEIGHTS",
                   help="a weights folder; the first is the reference")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--output", type=Path)
    p.add_argument("--target-sensitivity", type=float,
                   help="also each arm's own fitted threshold for this sensitivity")
    p.add_argument("--folds", type=int, default=2, help="cross-fitting folds (by lesion)")
    args = p.parse_args()
    from sklearn.metrics import roc_auc_score

    from classndiff.labels import malignant_mask

    arms = dict(a.rsplit("=", 1) for a in args.arm)
    if not arms:
        if not args.quick:
            p.error("name at least one --arm NAME=WEIGHTS")
        arms = {"tiny random model": ""}  # --quick: load_pipe's tiny model
    malignant = np.asarray(malignant_mask())
    split = None
    result = {"benchmark": "operating_point", "split": args.split, "arms": {}}
    target = None
    for name, weights in arms.items():
        args.weights = weights
        pipe = load_pipe(args)
        if split is None:
            split = MaskedSplit(args.data_dir, args.split, pipe.config.model.pixel_size,
                                limit=40 if args.quick else None)
            truth = malignant[split.labels]
        p_malignant = probabilities(pipe, split.images)[:, malignant].sum(1)
        sensitivity, specificity = rates(p_malignant, truth, 0.5)
        if target is None:
            target = sensitivity  # the reference arm's at 0.5
        matched = fit_threshold(p_malignant, truth, target)
        sensitivity_matched, specificity_matched = rates(p_malignant, truth, matched)
        result["arms"][name] = {
            "weights": weights, "n": int(len(truth)),
            "malignant_auc": float(roc_auc_score(truth, p_malignant)),
            "sensitivity_at_0.5": sensitivity, "specificity_at_0.5": specificity,
            "threshold_matching_reference": float(matched),
            "specificity_at_matched": specificity_matched,
            "sensitivity_at_matched": sensitivity_matched}
        if args.target_sensitivity is not None:
            own = fit_threshold(p_malignant, truth, args.target_sensitivity)
            result["arms"][name]["fitted"] = {
                "threshold": own, "in_sample": dict(zip(("sensitivity", "specificity"),
                                                        rates(p_malignant, truth, own))),
                "cross_fitted": cross_fitted_rates(p_malignant, truth, split.lesion_ids,
                                                   args.target_sensitivity, args.folds)}
    print_table(["arm", "malignant AUC", "sens. / spec. at 0.5", "threshold matching",
                 "sens. / spec. there"],
                [[n, round(r["malignant_auc"], 3),
                  f"{r['sensitivity_at_0.5']:.3f} / {r['specificity_at_0.5']:.3f}",
                  round(r["threshold_matching_reference"], 3),
                  f"{r['sensitivity_at_matched']:.3f} / {r['specificity_at_matched']:.3f}"]
                 for n, r in result["arms"].items()])
    if args.target_sensitivity is not None:
        print_table(["arm", f"threshold (sensitivity ≥ {args.target_sensitivity:g})",
                     "sens. / spec. in sample", f"sens. / spec. cross-fitted ({args.folds} folds)"],
                    [[n, round(r["fitted"]["threshold"], 3),
                      "{sensitivity:.3f} / {specificity:.3f}".format(**r["fitted"]["in_sample"]),
                      "{sensitivity:.3f} / {specificity:.3f}".format(**r["fitted"]["cross_fitted"])]
                     for n, r in result["arms"].items()])
    result.update(environment(args, pipe))
    emit(result, args.output)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
