"""Counterfactuals measured on real images: validity by the INDEPENDENT evaluator
(weights/evaluator, trained on real images only, never the model itself), proximity (mean
absolute change inside and outside the expert lesion mask, 0–255, and the distance in
ImageNet Lite0 features to the original), realism (Fréchet distance of the counterfactuals to
real images of the target class, beside the same distance for real images of that class from
the training split: the floor at this count), seconds per counterfactual, and the same with
guidance 0 (plain SDEdit noise, no target, no classifier guidance) as the baseline, so the
effect of the target is visible. A sweep over strengths gives validity by strength and the
smallest strength at which it reaches 50 %.

    python benchmarks/counterfactuals.py --weights weights/embedded --per-pair 24 \\
        --output reports/embedded/counterfactuals.json --figure reports/embedded/counterfactuals.png
    python benchmarks/counterfactuals.py --split val ...   # choosing defaults: never the test split
    python benchmarks/counterfactuals.py --quick

Defaults: the weights' own (`config.sampling.counterfactual_strength`, `_guidance`,
`_classifier_scale` and `_candidates`; `--classifier-scale S` tries the joint classifier's
guidance on x̂0, `--candidates K` shows the model's pick of K redraws).
Bars: validity ≥ 0.70 for benign → mel and mel → nv; change outside ≤ 1/3 of inside; ≤ 5 s
each. Ends with ONE JSON line."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from _bench import (
    ROOT,
    emit,
    environment,
    first_masked_of_class,
    load_pipe,
    parser,
    print_table,
    save_rows,
    setup,
)

PAIRS = (("nv", "mel"), ("bkl", "mel"), ("mel", "nv"))
SWEEP = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def edit_stats(pipe, originals, data, chosen, target: str, strength: float,  # noqa: ANN001
               guidance: float, classifier_scale: float | None = None,
               candidates: int | None = None) -> tuple[dict, list]:
    """Counterfactuals of the images `chosen`: change inside / outside the mask, seconds,
    abstentions; and the counterfactuals (None where the upload was refused)."""
    edits, inside, outside, seconds, abstained = [], [], [], [], 0
    for i in chosen:
        start = time.perf_counter()
        cf = pipe.counterfactual(originals[i], target_dx=target, strength=strength,
                                 guidance_scale=guidance, seed=int(i),
                                 classifier_scale=classifier_scale, candidates=candidates)
        seconds.append(time.perf_counter() - start)
        if cf.image is None:
            abstained += 1
            edits.append(None)
            continue
        change = np.abs(np.asarray(cf.image, float) - np.asarray(cf.original, float)).mean(-1)
        mask = data.masks[i, 0].numpy().astype(bool)
        inside.append(change[mask].mean())
        outside.append(change[~mask].mean() if (~mask).any() else 0.0)
        edits.append(cf)
    stats = {"n": len(inside), "abstained": abstained,
             "change_inside": float(np.mean(inside)) if inside else float("nan"),
             "change_outside": float(np.mean(outside)) if outside else float("nan"),
             "seconds_median": float(np.median(seconds)) if seconds else float("nan")}
    stats["outside_over_inside"] = (stats["change_outside"] / stats["change_inside"]
                                    if inside and stats["change_inside"] else float("nan"))
    return stats, edits


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--per-pair", type=int, default=24)
    p.add_argument("--strength", type=float, default=None, help="default: the weights' own")
    p.add_argument("--guidance", type=float, default=None, help="default: the weights' own")
    p.add_argument("--classifier-scale", type=float, default=None,
                   help="the joint classifier's guidance on x̂0; default: the weights' own")
    p.add_argument("--margin", type=int, default=None,
                   help="pixels the redrawn region reaches beyond the lesion; default: the "
                        "weights' own")
    p.add_argument("--margin-share", type=float, default=None,
                   help="the margin stops before its ring covers this share of the skin "
                        "around the lesion (≤ 0: no limit); default: the weights' own")
    p.add_argument("--detail", type=float, default=None,
                   help="share of the upload's fine detail laid back over the redraw (0–1); "
                        "default: the weights' own")
    p.add_argument("--candidates", type=int, default=None,
                   help="redraws per counterfactual, the model's pick shown (default: the "
                        "weights' own; the plain-noise arm always draws one)")
    p.add_argument("--sweep", type=float, nargs="*", default=list(SWEEP),
                   help="strengths for validity by strength (none: skip)")
    p.add_argument("--pairs", nargs="*", default=None, metavar="SOURCE->TARGET",
                   help=f"a subset of {', '.join(f'{a}->{b}' for a, b in PAIRS)}")
    p.add_argument("--evaluator", default=str(ROOT / "weights/evaluator"))
    p.add_argument("--output", type=Path)
    p.add_argument("--figure", type=Path)
    args = p.parse_args()
    setup(args)

    from classndiff.data import LesionDataset
    from classndiff.evaluation.generation import frechet_distance, pil_to_uint8
    from classndiff.labels import DX_CODES
    from classndiff.pipelines.inputs import to_pil
    from classndiff.training.evaluator import load_evaluator, predict

    pairs = PAIRS if args.pairs is None else tuple(tuple(pair.split("->")) for pair in args.pairs)
    if not set(pairs) <= set(PAIRS):
        p.error(f"--pairs: choose among {', '.join(f'{a}->{b}' for a, b in PAIRS)}")
    pipe = load_pipe(args)
    sampling = pipe.config.sampling  # the weights' own defaults, as the app and API use
    if args.margin is not None:
        sampling.counterfactual_margin = args.margin
    if args.margin_share is not None:
        sampling.counterfactual_margin_share = args.margin_share if args.margin_share > 0 else None
    if args.detail is not None:
        sampling.counterfactual_detail = args.detail
    if args.candidates is not None:
        sampling.counterfactual_candidates = args.candidates
    general = sampling.counterfactual_strength if args.strength is None else args.strength

    def strength_for(target: str) -> float:  # the weights' own (per target) unless given
        return sampling.counterfactual_strength_for(target) if args.strength is None \
            else general

    guidance = sampling.counterfactual_guidance if args.guidance is None else args.guidance

    general_scale = (sampling.counterfactual_classifier_scale if args.classifier_scale is None
                     else args.classifier_scale)

    def classifier_scale_for(target: str) -> float:  # likewise
        return sampling.counterfactual_classifier_scale_for(target) \
            if args.classifier_scale is None else general_scale

    per_pair = 2 if args.quick else args.per_pair
    size = pipe.config.model.pixel_size
    data = LesionDataset(args.data_dir, args.split, image_size=size, masks=True,
                         limit=200 if args.quick else None)
    evaluator = features = reference = None
    if not args.quick:
        from classndiff.evaluation.yardstick import ImageNetFeatures

        evaluator = load_evaluator(args.evaluator)
        features = ImageNetFeatures()
        reference = LesionDataset(args.data_dir, "train", image_size=size)
    originals = to_pil(data.images.float() / 127.5 - 1)
    result = {"benchmark": "counterfactuals", "split": args.split,
              "strength": general,
              "strength_by_target": {t: strength_for(t) for t in sorted({t for _, t in pairs})},
              "guidance_scale": guidance,
              "classifier_scale": general_scale,
              "classifier_scale_by_target": {t: classifier_scale_for(t)
                                             for t in sorted({t for _, t in pairs})},
              "margin": sampling.counterfactual_margin,
              "margin_share": sampling.counterfactual_margin_share,
              "detail": sampling.counterfactual_detail,
              "candidates": sampling.counterfactual_candidates, "pairs": {},
              "sweep": {}}
    figure_rows = []

    def validity(edits: list, target: str) -> float:
        made = [cf.image for cf in edits if cf is not None]
        if evaluator is None or not made:
            return float("nan")
        return float((predict(evaluator, pil_to_uint8(made)).argmax(1)
                      == DX_CODES.index(target)).mean())

    for source, target in pairs:
        chosen = first_masked_of_class(data, source, per_pair)
        strength, classifier_scale = strength_for(target), classifier_scale_for(target)
        row = {}
        real = before = None  # features of the real target-class images, of the originals
        # The plain-noise arm knows nothing of the target: no guidance, one redraw, no pick.
        for arm, arm_guidance, arm_classifier, arm_candidates in (
                ("target", guidance, classifier_scale, None), ("plain noise", 0.0, 0.0, 1)):
            stats, edits = edit_stats(pipe, originals, data, chosen, target, strength,
                                      arm_guidance, arm_classifier, arm_candidates)
            stats["validity"] = validity(edits, target)
            stats["strength"] = strength
            stats["classifier_scale"] = arm_classifier
            made = [cf for cf in edits if cf is not None]
            if features is not None and made:
                after = features(pil_to_uint8([cf.image for cf in made]))
                if real is None:  # the same for both arms: the same images are refused
                    target_idx = DX_CODES.index(target)
                    real = features(data.images[data.dx == target_idx])
                    before = features(pil_to_uint8([cf.original for cf in made]))
                    floor = reference.images[reference.dx == target_idx][:len(made)]
                    floor_fd = frechet_distance(features(floor), real)
                stats["feature_distance"] = float(np.linalg.norm(after - before, axis=1).mean())
                stats["fd_to_real_target"] = frechet_distance(after, real)
                stats["fd_real_floor"] = floor_fd
            if arm == "target":
                for cf in made[:3]:
                    if len(figure_rows) < 9:
                        figure_rows.append(np.concatenate(
                            [np.asarray(cf.original), np.asarray(cf.image),
                             np.asarray(cf.difference)], 1))
            row[arm] = stats
        result["pairs"][f"{source}->{target}"] = row
        curve, ratios = {}, {}
        for level in args.sweep:
            if level == strength:  # the target arm above: the same edits, the same seeds
                curve[f"{level:g}"] = row["target"]["validity"]
                ratios[f"{level:g}"] = row["target"]["outside_over_inside"]
                continue
            stats, edits = edit_stats(pipe, originals, data, chosen, target, level, guidance,
                                      classifier_scale)
            curve[f"{level:g}"] = validity(edits, target)
            ratios[f"{level:g}"] = stats["outside_over_inside"]
        reached = [float(k) for k, v in curve.items() if v >= 0.5]
        result["sweep"][f"{source}->{target}"] = {
            "validity_by_strength": curve,
            "outside_over_inside_by_strength": ratios,
            "min_strength_for_50pct": min(reached) if reached else None}
    print_table(["pair", "arm", "n", "validity", "inside", "outside", "out/in", "feat. dist",
                 "FD (floor)", "s"],
                [[pair, arm, s["n"], round(s["validity"], 3), round(s["change_inside"], 1),
                  round(s["change_outside"], 1), round(s["outside_over_inside"], 3),
                  round(s.get("feature_distance", float("nan")), 2),
                  f"{s.get('fd_to_real_target', float('nan')):.0f} "
                  f"({s.get('fd_real_floor', float('nan')):.0f})",
                  round(s["seconds_median"], 2)]
                 for pair, arms in result["pairs"].items() for arm, s in arms.items()])
    if result["sweep"]:
        print_table(["pair", *[f"s={k}" for k in map(str, args.sweep)], "min s for 50 %"],
                    [[pair, *[round(v, 3) for v in sw["validity_by_strength"].values()],
                      sw["min_strength_for_50pct"]] for pair, sw in result["sweep"].items()])
    if args.figure and figure_rows:
        save_rows(args.figure, figure_rows)
    result.update(environment(args, pipe))
    emit(result, args.output)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
