"""The same denoiser contract on diffusers' UNet2DModel. No I/O here."""

from __future__ import annotations

import torch
import torch.nn as nn

from classndiff.config import ModelConfig
from classndiff.labels import DX_CODES, SEXES, TONE_GROUPS
from classndiff.models.dit import LabelEmbedder


class UNetDenoiser(nn.Module):
    """The same denoiser contract as `DiT` on diffusers' `UNet2DModel` (ADM-style residual
    blocks, self-attention at the coarsest resolutions). The three conditions are embedded as
    in DiT (with their null tokens for classifier-free guidance), summed, and added to the
    UNet's timestep embedding through its "identity" class embedding."""

    def __init__(self, config: ModelConfig, cond_drop_prob: float = 0.1):
        super().__init__()
        from diffusers import UNet2DModel  # imported here: only UNet weights need it

        channels = tuple(config.unet_channels)
        plain = len(channels) - config.unet_attention_levels
        if not 0 <= plain <= len(channels) or config.image_size % 2 ** (len(channels) - 1):
            raise ValueError(f"unet_attention_levels {config.unet_attention_levels} and "
                             f"{len(channels)} resolutions do not fit image_size "
                             f"{config.image_size}")
        self.unet = UNet2DModel(
            sample_size=config.image_size, in_channels=config.in_channels,
            out_channels=config.in_channels, block_out_channels=channels,
            layers_per_block=config.unet_layers_per_block,
            down_block_types=("DownBlock2D",) * plain
            + ("AttnDownBlock2D",) * config.unet_attention_levels,
            up_block_types=("AttnUpBlock2D",) * config.unet_attention_levels
            + ("UpBlock2D",) * plain,
            attention_head_dim=min([64, *channels[plain:]]),
            norm_num_groups=32 if min(channels) >= 32 else 8,
            class_embed_type="identity")
        embed_dim = channels[0] * 4  # UNet2DModel's timestep-embedding width
        self.dx_embedder = LabelEmbedder(len(DX_CODES), embed_dim, cond_drop_prob)
        self.tone_embedder = LabelEmbedder(len(TONE_GROUPS), embed_dim, cond_drop_prob)
        self.sex_embedder = LabelEmbedder(len(SEXES), embed_dim, cond_drop_prob)
        for embedder in (self.dx_embedder, self.tone_embedder, self.sex_embedder):
            nn.init.normal_(embedder.embedding_table.weight, std=0.02)

    def forward(self, x: torch.Tensor, t: torch.Tensor, dx: torch.Tensor, tone: torch.Tensor,
                sex: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """As `DiT.forward`."""
        drop_dx, drop_tone, drop_sex = drop.unbind(1) if drop is not None else (None,) * 3
        condition = (self.dx_embedder(dx, self.training, drop_dx)
                     + self.tone_embedder(tone, self.training, drop_tone)
                     + self.sex_embedder(sex, self.training, drop_sex))
        return self.unet(x, t, class_labels=condition).sample


