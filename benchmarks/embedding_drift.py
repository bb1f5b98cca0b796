"""How far each row of the denoiser's diagnosis embedding table moved from a start: the L2
distance per row (seven diagnoses, then the dropped-condition row), for weight folders
exported by `classndiff train`/`graft`. Session 42's check on the x̂0 term's pushes.

    python benchmarks/embedding_drift.py START RUN [RUN ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from classndiff.training.losses import DX_TABLE


def table(folder: Path) -> torch.Tensor:
    """The diagnosis embedding table of the weights in `folder` (model.safetensors)."""
    weights = load_file(str(folder / "model.safetensors"))
    names = [k for k in weights if k.endswith(DX_TABLE)]
    if len(names) != 1:
        raise SystemExit(f"{folder}: expected one {DX_TABLE}, found {len(names)}")
    return weights[names[0]].float()


def row_drift(start: torch.Tensor, moved: torch.Tensor) -> list[float]:
    """L2 distance of each row of `moved` from the same row of `start`."""
    if start.shape != moved.shape:
        raise SystemExit(f"tables of different shapes: {tuple(start.shape)} and "
                         f"{tuple(moved.shape)}")
    return [round(float(d), 3) for d in (moved - start).norm(dim=1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("start", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    start = table(args.start)
    for run in args.runs:
        drift = row_drift(start, table(run))
        print(f"{run}: rows moved {min(drift):.2f}–{max(drift):.2f}  {drift}")


if __name__ == "__main__":
    main()
