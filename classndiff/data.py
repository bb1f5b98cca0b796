"""A dataset over any folder laid out like the shared HAM10000 copy: `metadata.csv` with
`image`, `dx`, `split` (and optionally `skin_tone_group`, `sex`, `lesion_id`, `malignant`)
columns, and the images it names. Images are decoded once and kept in memory as uint8."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from classndiff.images import center_square
from classndiff.labels import DX_CODES, encode_dx, encode_sex, encode_tone

DEFAULT_DATA_DIR = "../shared/data/ham10000"


def default_data_dir() -> Path:
    """CLASSNDIFF_DATA, else ../shared/data/ham10000 (relative to the working directory,
    then to the repository)."""
    env = os.environ.get("CLASSNDIFF_DATA")
    if env:
        return Path(env)
    here = Path(DEFAULT_DATA_DIR)
    if here.exists():
        return here
    return Path(__file__).resolve().parent.parent / DEFAULT_DATA_DIR


def read_metadata(root: str | Path, split: str | Sequence[str] | None = None) -> list[dict]:
    root = Path(root)
    path = root / "metadata.csv"
    if not path.exists():
        raise FileNotFoundError(
            f"no metadata.csv in {root}: point --data-dir (or CLASSNDIFF_DATA) at a folder "
            "laid out like ../shared/data/ham10000"
        )
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if split is not None:
        wanted = {split} if isinstance(split, str) else set(split)
        rows = [r for r in rows if r.get("split") in wanted]
    return rows


def load_rgb(path: Path, size: int) -> np.ndarray:
    """An image, centre-cropped and resized (Lanczos), uint8 HWC."""
    with Image.open(path) as im:
        square = center_square(im.convert("RGB"), size, Image.Resampling.LANCZOS)
        return np.asarray(square, dtype=np.uint8)


def load_mask(path: Path, size: int) -> np.ndarray | None:
    """A lesion mask as uint8 {0, 1} (size, size), cropped and resized as the images are
    (nearest neighbour); None when the file is missing."""
    if not path.exists():
        return None
    with Image.open(path) as im:
        square = center_square(im.convert("L"), size, Image.Resampling.NEAREST)
        return (np.asarray(square) > 0).astype(np.uint8)


class LesionDataset(Dataset):
    """Images in [-1, 1] (C, H, W) with their condition ids.

    Unknown skin tone or sex map to the null id, so the model learns them as "blank"."""

    def __init__(
        self,
        root: str | Path | None = None,
        split: str | Sequence[str] | None = "train",
        image_size: int = 128,
        limit: int | None = None,
        masks: bool = False,
    ):
        self.root = Path(root) if root is not None else default_data_dir()
        rows = read_metadata(self.root, split)
        if limit is not None:
            rows = rows[:limit]
        if not rows:
            raise ValueError(f"no images for split {split!r} in {self.root / 'metadata.csv'}")
        self.rows = rows
        self.image_size = image_size
        self.dx = torch.tensor([encode_dx(r["dx"]) for r in rows])
        self.tone = torch.tensor([encode_tone(r.get("skin_tone_group")) for r in rows])
        self.sex = torch.tensor([encode_sex(r.get("sex")) for r in rows])
        self.lesion_ids = [r.get("lesion_id") or r.get("image_id") or r["image"] for r in rows]
        self.image_ids = [r.get("image_id") or Path(r["image"]).stem for r in rows]
        self.images = torch.from_numpy(
            np.stack([load_rgb(self.root / r["image"], image_size) for r in rows])
        ).permute(0, 3, 1, 2).contiguous()  # uint8 (N, 3, H, W): 10k images ≈ 0.5 GB
        # Expert lesion masks (masks/<image_id>.png), uint8 (N, 1, H, W) in {0, 1}; an image
        # without one gets all ones (no constraint) and has_mask False.
        self.masks = self.has_mask = None
        if masks:
            loaded = [load_mask(self.root / "masks" / f"{i}.png", image_size)
                      for i in self.image_ids]
            self.has_mask = torch.tensor([m is not None for m in loaded])
            full = np.ones((image_size, image_size), dtype=np.uint8)
            self.masks = torch.from_numpy(
                np.stack([full if m is None else m for m in loaded]))[:, None].contiguous()

    def __len__(self) -> int:
        return len(self.rows)

    def extend(self, other: LesionDataset) -> None:
        """Append another dataset of the same image size (e.g. generated images to train on)."""
        if other.image_size != self.image_size or (other.masks is None) != (self.masks is None):
            raise ValueError("extend needs datasets of one image size, both with or without masks")
        self.rows = self.rows + other.rows
        for name in ("images", "dx", "tone", "sex", "masks", "has_mask"):
            mine = getattr(self, name)
            if mine is not None:
                setattr(self, name, torch.cat([mine, getattr(other, name)]))
        self.lesion_ids = self.lesion_ids + other.lesion_ids
        self.image_ids = self.image_ids + other.image_ids

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "image": self.images[i].float() / 127.5 - 1,
            "dx": self.dx[i],
            "tone": self.tone[i],
            "sex": self.sex[i],
            "index": torch.tensor(i),
        }

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.dx, minlength=len(DX_CODES))

    def sample_weights(self, balance_power: float, tone_power: float = 0.0) -> torch.Tensor:
        """Per-image weight ∝ count(dx)^-power · count(tone group)^-tone_power: 0 keeps the
        natural mix, 1 balances (94 % of HAM10000 is lighter skin: the generator needs to
        see the rest to learn what a tone request means)."""
        counts = self.class_counts().clamp(min=1).float()
        weights = counts[self.dx] ** (-balance_power)
        if tone_power:
            tones = torch.bincount(self.tone).clamp(min=1).float()
            weights = weights * tones[self.tone] ** (-tone_power)
        return weights


@torch.no_grad()
def encode_latents(
    images: torch.Tensor, vae, scaling_factor: float, batch_size: int = 16  # noqa: ANN001
) -> torch.Tensor:
    """Encode uint8 images once with a diffusers AutoencoderKL (latent mean × scale), so
    training never runs the VAE per step."""
    device = next(vae.parameters()).device
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device).float() / 127.5 - 1
        chunks.append(vae.encode(x).latent_dist.mean.cpu() * scaling_factor)
    return torch.cat(chunks)


def cached_latents(
    dataset: LesionDataset, vae, scaling_factor: float, cache_file: Path  # noqa: ANN001
) -> torch.Tensor:
    """Latents for every image of `dataset`, computed once and kept in a safetensors file."""
    from safetensors.torch import load_file, save_file

    if cache_file.exists():
        cached = load_file(str(cache_file))["latents"]
        if cached.shape[0] == len(dataset):
            return cached
    latents = encode_latents(dataset.images, vae, scaling_factor)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    save_file({"latents": latents.contiguous()}, str(cache_file))
    return latents
