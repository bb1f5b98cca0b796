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
                 step_kind: str = "joint", tone_teacher: nn.Module | None = None):
        super().__init__()
        if step_kind not in STEP_KINDS:
            raise ValueError(f"unknown step kind {step_kind!r}: {', '.join(STEP_KINDS)}")
        if tone_teacher is not None and step_kind != "joint":
            raise ValueError("a tone-consistency teacher needs the joint step")
        self.model = model
        self.schedule = schedule
        self.train_config = train
        self.step_kind = step_kind
        # A frozen classifier (train.tone_consistency_teacher); a submodule so that it moves
        # with the objective to the device, never trained (no gradient, not in the optimiser).
        self.tone_teacher = (None if tone_teacher is None
                             else tone_teacher.eval().requires_grad_(False))

    def train(self, mode: bool = True) -> TrainingObjective:
        # The teacher stays in eval mode (as autoencoder.ClassConsistency's classifier does):
        # its batch-norm statistics must not follow the batch.
        super().train(mode)
        if self.tone_teacher is not None:
            self.tone_teacher.eval()
        return self

    def forward(self, batch: Batch,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        extra = {} if self.tone_teacher is None else {"tone_teacher": self.tone_teacher}
        return STEP_KINDS[self.step_kind](self.model, batch, self.schedule, self.train_config,
                                          generator=generator, **extra)
