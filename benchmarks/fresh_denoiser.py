"""An exported model with its denoiser re-initialised: the start of a from-scratch generator
run that keeps the exported autoencoder and classifier (session 34: the paper's claim where
the generator does not yet draw the classes, `joint_vs_plain.sh` from this start).

    python benchmarks/fresh_denoiser.py WEIGHTS OUTPUT [--seed 0]

Every file of WEIGHTS is copied; in model.safetensors only the `denoiser.` tensors change, to
a freshly built denoiser's (the model's own initialisation, seeded; the same
tensors a new ClassNDiff would draw, as it builds its denoiser first).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from classndiff.config import ClassNDiffConfig  # noqa: E402
from classndiff.models.joint import build_denoiser  # noqa: E402

PREFIX = "denoiser."


def fresh_denoiser(weights: Path, output: Path, seed: int = 0) -> int:
    """Write `weights` with a re-initialised denoiser to `output`; return the tensors replaced."""
    config = ClassNDiffConfig.from_json(weights / "config.json")
    torch.manual_seed(seed)
    # The denoiser alone: building the whole model would also load the classifier's ImageNet
    # weights and the autoencoder, only to throw them away.
    fresh = {PREFIX + k: v for k, v in build_denoiser(config.model).state_dict().items()}
    state = load_file(str(weights / "model.safetensors"))
    old = {k for k in state if k.startswith(PREFIX)}
    if old != set(fresh):
        raise ValueError(f"{weights}'s denoiser does not match its config "
                         f"({len(old ^ set(fresh))} tensors differ)")
    state.update({k: v.to(state[k].dtype).contiguous() for k, v in fresh.items()})
    shutil.copytree(weights, output, dirs_exist_ok=True)
    save_file(state, str(output / "model.safetensors"))
    return len(fresh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{fresh_denoiser(args.weights, args.output, args.seed)} denoiser tensors "
          f"re-initialised -> {args.output}")


if __name__ == "__main__":
    main()
