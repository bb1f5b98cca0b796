"""Counterfactuals measured on real test images: validity by the INDEPENDENT evaluator
(weights/evaluator, trained on real images only, never the model itself), proximity (mean
absolute change inside and outside the expert lesion mask, 0–255), seconds per
counterfactual, and the same with guidance 0 (plain SDEdit noise, no target) as the
baseline, so the effect of the target is visible.

    python benchmarks/counterfactuals.py --weights weights/embedded --per-pair 24 \\
        --output reports/embedded/counterfactuals.json --figure reports/embedded/counterfactuals.png
    python benchmarks/counterfactuals.py --quick

Bars: validity ≥ 0.70 for benign → mel and mel → nv; change outside ≤ 1/3 of inside;
≤ 5 s each. Ends with ONE JSON line."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from _bench import ROOT, emit, environment, load_pipe, parser, print_table, save_rows, setup

PAIRS = (("nv", "mel"), ("bkl", "mel"), ("mel", "nv"))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--per-pair", type=int, default=24)
    p.add_argument("--strength", type=float, default=0.6)
    p.add_argument("--evaluator", default=str(ROOT / "weights/evaluator"))
    p.add_argument("--output", type=Path)
    p.add_argument("--figure", type=Path)
    args = p.parse_args()
    setup(args)

    from classndiff.data import LesionDataset
    from classndiff.evaluation.generation import pil_to_uint8
    from classndiff.labels import DX_CODES
    from classndiff.pipelines.inputs import to_pil
    from classndiff.training.evaluator import load_evaluator, predict

    pipe = load_pipe(args)
    per_pair = 2 if args.quick else args.per_pair
    data = LesionDataset(args.data_dir, "test", image_size=pipe.config.model.pixel_size,
                         masks=True, limit=200 if args.quick else None)
    evaluator = None if args.quick else load_evaluator(args.evaluator)
    originals = to_pil(data.images.float() / 127.5 - 1)
    result = {"benchmark": "counterfactuals", "strength": args.strength, "pairs": {}}
    figure_rows = []
    for source, target in PAIRS:
        chosen = np.flatnonzero((data.dx.numpy() == DX_CODES.index(source))
                                & data.has_mask.numpy())[:per_pair]
        row = {}
        for arm, guidance in (("target", 3.0), ("plain noise", 0.0)):
            images, inside, outside, seconds, abstained = [], [], [], [], 0
            for i in chosen:
                start = time.perf_counter()
                cf = pipe.counterfactual(originals[i], target_dx=target, strength=args.strength,
                                         guidance_scale=guidance, seed=int(i))
                seconds.append(time.perf_counter() - start)
                if cf.image is None:
                    abstained += 1
                    continue
                change = np.abs(np.asarray(cf.image, float) -
                                np.asarray(cf.original, float)).mean(-1)
                mask = data.masks[i, 0].numpy().astype(bool)
                inside.append(change[mask].mean())
                outside.append(change[~mask].mean() if (~mask).any() else 0.0)
                images.append(cf.image)
                if arm == "target" and len(figure_rows) < 9 and len(images) <= 3:
                    figure_rows.append(np.concatenate(
                        [np.asarray(cf.original), np.asarray(cf.image),
                         np.asarray(cf.difference)], 1))
            stats = {"n": len(images), "abstained": abstained,
                     "change_inside": float(np.mean(inside)) if inside else float("nan"),
                     "change_outside": float(np.mean(outside)) if outside else float("nan"),
                     "seconds_median": float(np.median(seconds)) if seconds else float("nan")}
            stats["outside_over_inside"] = stats["change_outside"] / stats["change_inside"] \
                if inside and stats["change_inside"] else float("nan")
            if evaluator is not None and images:
                predicted = predict(evaluator, pil_to_uint8(images)).argmax(1)
                stats["validity"] = float((predicted == DX_CODES.index(target)).mean())
            row[arm] = stats
        result["pairs"][f"{source}->{target}"] = row
    print_table(["pair", "arm", "n", "validity", "inside", "outside", "out/in", "s"],
                [[pair, arm, s["n"], round(s.get("validity", float("nan")), 3),
                  round(s["change_inside"], 1), round(s["change_outside"], 1),
                  round(s["outside_over_inside"], 3), round(s["seconds_median"], 2)]
                 for pair, arms in result["pairs"].items() for arm, s in arms.items()])
    if args.figure and figure_rows:
        save_rows(args.figure, figure_rows)
    result.update(environment(args, pipe))
    emit(result, args.output)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
