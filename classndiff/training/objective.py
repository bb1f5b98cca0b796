"""The model and its training loss as one module. accelerate wraps THIS module, so the call
that computes the loss goes through DistributedDataParallel's forward, and the backward
averages gradients across processes (calling the unwrapped model would train each process
on its own). As in facebookresearch/DiT's train.py, the loss is called through the wrapper."""

from __future__ import annotations

import torch
import torch.nn as nn

from classndiff.config import TrainConfig
from classndiff.models.diffusion import NoiseSchedule
from classndiff.models.joint import ClassNDiff
from classndiff.training.losses import Batch, joint_loss, upstream_style_loss

STEP_KINDS = {"joint": joint_loss, "upstream": upstream_style_loss}


class TrainingObjective(nn.Module):
    """`forward(batch)` → the loss terms of one step ("joint": this project's one-pass joint
    loss; "upstream": the published code's step, for the ablation and benchmarks)."""

    def __init__(self, model: ClassNDiff, schedule: NoiseSchedule, train: TrainConfig,
                 step_kind: str = "joint"):
        super().__init__()
        if step_kind not in STEP_KINDS:
            raise ValueError(f"unknown step kind {step_kind!r}: {', '.join(STEP_KINDS)}")
        self.model = model
        self.schedule = schedule
        self.train_config = train
        self.step_kind = step_kind

    def forward(self, batch: Batch,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return STEP_KINDS[self.step_kind](self.model, batch, self.schedule, self.train_config,
                                          generator=generator)
