"""A weight-space average of fine-tunes that share one start (model soups, Wortsman et al.
2022; WiSE-FT): every floating tensor is the weighted mean of the ingredients' tensors, integer
tensors (batch-norm step counts) come from the first. The folder written is a weights folder
like its first ingredient's (its config.json, the averaged model.safetensors).

    python benchmarks/weight_average.py --output RUNS/soup \\
        --ingredient RUNS/arm-0/last=0.5 --ingredient RUNS/consistency-10/last=0.5

Ingredients must have the same tensors (names and shapes); the weights are normalised to sum
to 1. Averaging only makes sense for fine-tunes of one start: there the averaged weights stay
in the basin both came from."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def parse_ingredient(text: str) -> tuple[Path, float]:
    """FOLDER or FOLDER=WEIGHT (weight 1 when not given)."""
    folder, _, weight = text.rpartition("=") if "=" in text else (text, "", "1")
    return Path(folder), float(weight)


def average(state_dicts: list[dict[str, torch.Tensor]], weights: list[float]
            ) -> dict[str, torch.Tensor]:
    """The weighted mean of every floating tensor (in float32, stored in the first's dtype)."""
    first = state_dicts[0]
    for other in state_dicts[1:]:
        if other.keys() != first.keys() or any(other[k].shape != first[k].shape for k in first):
            raise ValueError("the ingredients do not have the same tensors: average only "
                             "fine-tunes of one model")
    total = sum(weights)
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError("ingredient weights must be ≥ 0 and not all 0")
    out = {}
    for key, tensor in first.items():
        if not tensor.is_floating_point():
            out[key] = tensor
            continue
        mean = sum(w / total * sd[key].float() for w, sd in zip(weights, state_dicts))
        out[key] = mean.to(tensor.dtype).contiguous()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingredient", action="append", required=True,
                        metavar="FOLDER[=WEIGHT]")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    ingredients = [parse_ingredient(text) for text in args.ingredient]
    missing = [str(f) for f, _ in ingredients if not (f / "model.safetensors").exists()]
    if missing:
        raise SystemExit(f"no model.safetensors in: {', '.join(missing)}")
    states = [load_file(str(folder / "model.safetensors")) for folder, _ in ingredients]
    try:
        averaged = average(states, [w for _, w in ingredients])
    except ValueError as error:
        raise SystemExit(str(error)) from None
    args.output.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ingredients[0][0] / "config.json", args.output / "config.json")
    save_file(averaged, str(args.output / "model.safetensors"))
    total = sum(w for _, w in ingredients)
    (args.output / "ingredients.json").write_text(json.dumps(
        [{"weights": str(f), "share": w / total} for f, w in ingredients], indent=1) + "\n")
    print(f"{args.output}: average of {len(states)} ingredients")


if __name__ == "__main__":
    main()
