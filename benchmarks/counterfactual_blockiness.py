"""Does the model's pick among K counterfactual redraws favour blocky drawings? Patch-seam
blockiness (`evaluation.yardstick.blockiness`, max over 4/8/16-px grids; natural images ≈ 1)
of the benign → melanoma counterfactuals with K = 1 and with K candidates, the same images
and seeds as benchmarks/counterfactuals.py (the first PER_PAIR of each source class with an
expert mask), beside the originals'.

    python benchmarks/counterfactual_blockiness.py --weights weights/embedded --split test

Ends with ONE JSON line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from _bench import emit, environment, first_masked_of_class, load_pipe, parser, print_table, setup


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--per-pair", type=int, default=24)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--output", type=Path)
    args = p.parse_args()
    setup(args)
    from classndiff.data import LesionDataset
    from classndiff.evaluation.yardstick import blockiness
    from classndiff.pipelines.inputs import to_pil

    pipe = load_pipe(args)
    per_pair = 2 if args.quick else args.per_pair
    data = LesionDataset(args.data_dir, args.split, image_size=pipe.config.model.pixel_size,
                         masks=True, limit=200 if args.quick else None)
    originals = to_pil(data.images.float() / 127.5 - 1)
    rows = {}
    for source in ("nv", "bkl"):
        chosen = first_masked_of_class(data, source, per_pair)
        row = {"n": len(chosen),
               "original": blockiness(np.stack([np.asarray(originals[i]) for i in chosen]))}
        for k in (1, args.candidates):
            edits = [pipe.counterfactual(originals[i], target_dx="mel", seed=int(i),
                                         candidates=k).image for i in chosen]
            row[f"K={k}"] = blockiness(np.stack([np.asarray(e) for e in edits if e is not None]))
        rows[f"{source}->mel"] = row
    print_table(["pair", *next(iter(rows.values()))],
                [[pair, *(round(v, 3) for v in r.values())] for pair, r in rows.items()])
    emit({"benchmark": "counterfactual_blockiness", "split": args.split, "pairs": rows,
          **environment(args, pipe)}, args.output)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
