"""The joint model: a denoiser and a classifier trained together. No I/O here
(saving and loading live in hub.py)."""

from __future__ import annotations

import torch
import torch.nn as nn

from classndiff.config import ModelConfig
from classndiff.models.classifier import LesionClassifier, ToneAdversary
from classndiff.models.dit import AlignmentHead, DiT
from classndiff.models.unet import UNetDenoiser


def build_bundled_vae(config: ModelConfig) -> nn.Module | None:
    """The frozen autoencoder of `config.vae_config` (weights come with the model's state),
    or None."""
    if config.vae_config is None:
        return None
    from classndiff.models.autoencoder import autoencoder_class

    cls = autoencoder_class(config.vae_config)
    return cls.from_config(config.vae_config).eval().requires_grad_(False)


def build_denoiser(config: ModelConfig, cond_drop_prob: float = 0.1) -> nn.Module:
    """The denoiser `config.denoiser` names."""
    if config.denoiser == "dit":
        return DiT(config, cond_drop_prob)
    if config.denoiser == "unet":
        return UNetDenoiser(config, cond_drop_prob)
    raise ValueError(f"unknown denoiser {config.denoiser!r}: dit or unet")


class ClassNDiff(nn.Module):
    """The joint model: `denoiser` (DiT or UNet) and `classifier` (timm), trained together; with
    `config.tone_adversary`, also the adversarial skin-tone head (training only); with
    `config.vae_config`, the frozen autoencoder whose latents the denoiser works in."""

    def __init__(self, config: ModelConfig, cond_drop_prob: float = 0.1,
                 initial_weights: bool = True, alignment_head: bool = False):
        """`alignment_head`: also the training-only head of train.lambda_align (a DiT's
        tokens → the classifier's feature map), never exported."""
        super().__init__()
        self.config = config
        self.denoiser = build_denoiser(config, cond_drop_prob)
        self.classifier = LesionClassifier(config, initial_weights)
        self.tone_adversary = (ToneAdversary(self.classifier.backbone.num_features)
                               if config.tone_adversary else None)
        self.vae = build_bundled_vae(config)
        self.alignment_head = None
        if alignment_head:
            if not isinstance(self.denoiser, DiT):
                raise ValueError("train.lambda_align aligns a DiT's tokens: it needs "
                                 "model.denoiser 'dit'")
            self.alignment_head = AlignmentHead(config.hidden_size,
                                                self.classifier.backbone.num_features)

    def train(self, mode: bool = True) -> ClassNDiff:
        super().train(mode)
        if self.vae is not None:  # frozen: never in training mode
            self.vae.eval()
        return self

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] at the autoencoder's size → scaled latents (the mean)."""
        return self.vae.encode(pixels).latent_dist.mode() * self.config.vae_scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → pixels in [-1, 1] (differentiable: x̂0 reaches the classifier)."""
        return self.vae.decode(latents / self.config.vae_scaling_factor).sample.clamp(-1, 1)

    def x0_for_classifier(self, x0_hat: torch.Tensor) -> torch.Tensor:
        """The denoiser's x̂0 as the classifier reads it: pixels clamped to [-1, 1]; latents of
        the bundled autoencoder decoded to pixels (differentiably); Hub-VAE latents as they
        are (that classifier reads latents)."""
        if self.vae is not None:
            return self.decode(x0_hat)
        return x0_hat if self.config.latent_denoiser else x0_hat.clamp(-1, 1)

    def forward(self, x, t, dx, tone, sex):  # noqa: ANN001, ANN201 - the denoiser's signature
        return self.denoiser(x, t, dx, tone, sex)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)
