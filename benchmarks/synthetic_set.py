"""Write generated lesions as a folder laid out like the data (metadata.csv + images/), so a
training can mix them in (`train.synthetic_dir`): `per_class` images for each class in each
requested skin-tone group, through the public `generate` with default settings.

    python benchmarks/synthetic_set.py --weights weights/embedded --per-class 40 \\
        --tones brown darker --output ~/.cache/classndiff/synthetic-brown-darker

Every image is generated (no dataset image is copied); `split` is "train". Ends with ONE
JSON line."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from _bench import emit, environment, load_pipe, parser, setup


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--tones", nargs="+", default=["brown", "darker"])
    p.add_argument("--output", type=Path, help="the folder (a temporary one with --quick)")
    args = p.parse_args()
    setup(args)
    if args.output is None:
        if not args.quick:
            raise SystemExit("--output is required (the folder to write)")
        import tempfile

        args.output = Path(tempfile.mkdtemp(prefix="classndiff-synthetic-"))
    from PIL import Image

    from classndiff.evaluation.generation import generate_cells
    from classndiff.labels import DX_CODES, TONE_GROUPS

    pipe = load_pipe(args)
    cells = [(code, tone) for code in DX_CODES for tone in args.tones]
    out = generate_cells(pipe, cells, 2 if args.quick else args.per_class, seed=args.seed)
    (args.output / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, dx, tone) in enumerate(zip(out["images"], out["dx"], out["tone"])):
        name = f"images/synthetic_{i:05d}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(args.output / name)
        rows.append({"image": name, "image_id": f"synthetic_{i:05d}",
                     "lesion_id": f"synthetic_{i:05d}", "dx": DX_CODES[dx], "split": "train",
                     "skin_tone_group": TONE_GROUPS[tone], "sex": "", "synthetic": 1})
    with (args.output / "metadata.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    emit({"benchmark": "synthetic_set", "images": len(rows), "cells": len(cells),
          "tones": args.tones, "output": str(args.output), **environment(args, pipe)})


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
