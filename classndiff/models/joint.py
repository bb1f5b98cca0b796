"""The joint model: a denoiser and a classifier trained together. No I/O here
(saving and loading live in hub.py)."""

from __future__ import annotations

import torch
import torch.nn as nn

from classndiff.config import ModelConfig
from classndiff.models.classifier import LesionClassifier, ToneAdversary
from classndiff.models.dit import DiT
from classndiff.models.unet import UNetDenoiser


def build_denoiser(config: ModelConfig, cond_drop_prob: float = 0.1) -> nn.Module:
    """The denoiser `config.denoiser` names."""
    if config.denoiser == "dit":
        return DiT(config, cond_drop_prob)
    if config.denoiser == "unet":
        return UNetDenoiser(config, cond_drop_prob)
    raise ValueError(f"unknown denoiser {config.denoiser!r}: dit or unet")


class ClassNDiff(nn.Module):
    """The joint model: `denoiser` (DiT or UNet) and `classifier` (timm), trained together; with
    `config.tone_adversary`, also the adversarial skin-tone head (training only)."""

    def __init__(self, config: ModelConfig, cond_drop_prob: float = 0.1,
                 initial_weights: bool = True):
        super().__init__()
        self.config = config
        self.denoiser = build_denoiser(config, cond_drop_prob)
        self.classifier = LesionClassifier(config, initial_weights)
        self.tone_adversary = (ToneAdversary(self.classifier.backbone.num_features)
                               if config.tone_adversary else None)

    def forward(self, x, t, dx, tone, sex):  # noqa: ANN001, ANN201 - the denoiser's signature
        return self.denoiser(x, t, dx, tone, sex)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)
