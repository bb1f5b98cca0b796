"""Run under `accelerate launch --num_processes N --cpu` by tests/test_training.py: a tiny
joint training, step by step; after each step every process writes a digest of its
weights, and the last step's weights (rank 0's and each rank's digest) land in OUT."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from classndiff.config import ClassNDiffConfig
from classndiff.training.trainer import Trainer


def digest(model: torch.nn.Module) -> list[float]:
    return [float(p.detach().double().sum()) for p in model.parameters()]


def main() -> None:
    config = ClassNDiffConfig.from_json(sys.argv[1])
    out = Path(sys.argv[2])
    steps = int(sys.argv[3])
    trainer = Trainer(config, out / "run")
    digests = []
    for step in range(1, steps + 1):
        trainer.train(max_steps=steps, stop_at=step)
        digests.append(digest(trainer.net))
    rank = trainer.accelerator.process_index
    (out / f"digests-{rank}.json").write_text(json.dumps(
        {"world": trainer.accelerator.num_processes, "digests": digests}))
    if rank == 0:
        save_file({k: v.contiguous() for k, v in trainer.net.state_dict().items()},
                  str(out / "weights.safetensors"))


if __name__ == "__main__":
    main()
