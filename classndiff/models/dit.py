"""The DiT denoiser (facebookresearch/DiT's `models.py`, with U-ViT's conv head and long
skips as options), conditioned on diagnosis, skin tone and sex. No I/O here."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from timm.models.vision_transformer import Attention, Mlp, PatchEmbed

from classndiff.config import ModelConfig
from classndiff.labels import DX_CODES, SEXES, TONE_GROUPS


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


#################################################################################
#               Embedding layers for timesteps and condition labels              #
#################################################################################


class TimestepEmbedder(nn.Module):
    """Scalar timesteps → vectors: sinusoidal frequencies, then an MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class LabelEmbedder(nn.Module):
    """One condition → vector. The extra last row is the null token: it is what a blank
    condition maps to, and what a label is replaced by when dropped during training
    (which is what classifier-free guidance needs)."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Labels with the null id where `drop` is True (drawn here when not given)."""
        if drop is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        return torch.where(drop.to(labels.device), torch.full_like(labels, self.num_classes),
                           labels)

    def forward(self, labels: torch.Tensor, train: bool,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """`drop` (N,) bool: which labels to drop, drawn by the trainer so that a run is
        reproducible; None draws them here. Nothing is dropped outside training."""
        if train and (drop is not None or self.dropout_prob > 0):
            labels = self.token_drop(labels, drop)
        return self.embedding_table(labels)


#################################################################################
#                                 Core DiT Model                                #
#################################################################################


class DiTBlock(nn.Module):
    """A transformer block with adaptive layer norm zero (adaLN-Zero) conditioning."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(
            in_features=hidden_size,
            hidden_features=int(hidden_size * mlp_ratio),
            act_layer=lambda: nn.GELU(approximate="tanh"),
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c
        ).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN, then a linear layer from each token to its p×p patch."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class ConvHead(nn.Module):
    """U-ViT's output fix, a little wider: patch features plus the noisy input → 3×3 convs
    → the prediction. Patches now see their neighbours, so patch seams can be smoothed."""

    def __init__(self, feature_channels: int, in_channels: int, out_channels: int,
                 width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(feature_channels + in_channels, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)  # starts as zero, like DiT's final layer
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([features, x_t.to(features.dtype)], 1))


def sincos_pos_embed(embed_dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2D sin-cos positional embedding, (grid_size², embed_dim)."""
    coords = torch.arange(grid_size, dtype=torch.float64)
    grid_h, grid_w = torch.meshgrid(coords, coords, indexing="ij")

    def one_axis(pos: torch.Tensor, dim: int) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    emb = torch.cat([one_axis(grid_w, embed_dim // 2), one_axis(grid_h, embed_dim // 2)], dim=1)
    return emb.float()


class DiT(nn.Module):
    """Diffusion transformer predicting ε, conditioned on t + diagnosis + tone + sex."""

    def __init__(self, config: ModelConfig, cond_drop_prob: float = 0.1):
        super().__init__()
        self.in_channels = config.in_channels
        self.out_channels = config.in_channels
        self.patch_size = config.patch_size
        hidden = config.hidden_size

        self.x_embedder = PatchEmbed(
            config.image_size, config.patch_size, config.in_channels, hidden, bias=True
        )
        self.t_embedder = TimestepEmbedder(hidden)
        self.dx_embedder = LabelEmbedder(len(DX_CODES), hidden, cond_drop_prob)
        self.tone_embedder = LabelEmbedder(len(TONE_GROUPS), hidden, cond_drop_prob)
        self.sex_embedder = LabelEmbedder(len(SEXES), hidden, cond_drop_prob)
        num_patches = self.x_embedder.num_patches
        self.register_buffer(
            "pos_embed",
            sincos_pos_embed(hidden, int(num_patches**0.5)).unsqueeze(0),
            persistent=False,
        )
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden, config.num_heads, config.mlp_ratio) for _ in range(config.depth)]
        )
        # Long skips (U-ViT): the second half's blocks also see the first half's outputs.
        self.skip_projections = nn.ModuleList(
            [nn.Linear(2 * hidden, hidden) for _ in range(config.depth // 2)]
            if config.long_skips else [])
        if config.output_head not in ("linear", "conv"):
            raise ValueError(f"unknown output_head {config.output_head!r}: linear or conv")
        self.conv_head = None
        head_out = self.out_channels
        if config.output_head == "conv":
            head_out = config.head_channels
            self.conv_head = ConvHead(head_out, config.in_channels, self.out_channels,
                                      config.head_width)
        self.head_channels = head_out
        self.final_layer = FinalLayer(hidden, config.patch_size, head_out)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.constant_(self.x_embedder.proj.bias, 0)
        for embedder in (self.dx_embedder, self.tone_embedder, self.sex_embedder):
            nn.init.normal_(embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        # adaLN-Zero: every block starts as the identity, the output as zero.
        for block in self.blocks:
            nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        if self.conv_head is None:  # with a conv head, its last conv starts at zero instead
            nn.init.constant_(self.final_layer.linear.weight, 0)
            nn.init.constant_(self.final_layer.linear.bias, 0)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, p²·C) → (N, C, H, W)."""
        c, p = self.head_channels, self.patch_size
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        dx: torch.Tensor,
        tone: torch.Tensor,
        sex: torch.Tensor,
        drop: torch.Tensor | None = None,
        hidden_at: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: (N, C, H, W) noisy input; t: (N,) timesteps; labels: (N,) ids (null = last id).
        Conditions are dropped only in training mode: where `drop` (N, 3) bool says (dx,
        tone, sex), or at random when it is None. With `hidden_at` k, also the tokens after
        the first k blocks, (N, T, hidden): (output, tokens)."""
        if hidden_at is not None and not 1 <= hidden_at <= len(self.blocks):
            raise ValueError(f"hidden_at must be between 1 and the depth ({len(self.blocks)}), "
                             f"not {hidden_at}")
        drop_dx, drop_tone, drop_sex = drop.unbind(1) if drop is not None else (None,) * 3
        x_t = x
        x = self.x_embedder(x) + self.pos_embed
        c = (
            self.t_embedder(t)
            + self.dx_embedder(dx, self.training, drop_dx)
            + self.tone_embedder(tone, self.training, drop_tone)
            + self.sex_embedder(sex, self.training, drop_sex)
        )
        half = len(self.blocks) // 2 if self.skip_projections else 0
        skips = []
        hidden = None
        for i, block in enumerate(self.blocks):
            if half and i >= len(self.blocks) - half:
                project = self.skip_projections[len(self.blocks) - 1 - i]
                x = project(torch.cat([x, skips.pop()], -1))
            x = block(x, c)
            if i < half:
                skips.append(x)
            if i + 1 == hidden_at:
                hidden = x
        out = self.unpatchify(self.final_layer(x, c))
        out = out if self.conv_head is None else self.conv_head(out, x_t)
        return out if hidden_at is None else (out, hidden)


class AlignmentHead(nn.Module):
    """REPA's projector (Yu et al. 2024): an MLP from each denoiser token to the target
    encoder's feature at that token. Training only: it is never exported."""

    def __init__(self, hidden_size: int, target_channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.SiLU(),
            nn.Linear(hidden_size, hidden_size), nn.SiLU(),
            nn.Linear(hidden_size, target_channels),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)


