"""Training augmentations on uint8-range image batches (a mask channel, when present, moves
with the image): dihedral flips for the denoiser, strong photometric and geometric jitter for
the classifier, and the skin re-tint of the fairness experiment. Every draw comes from the
given generator, so a run is reproducible."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from classndiff.trust.skintone import retint_field_torch, retint_skin_torch


def augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Light, label-preserving augmentation for dermoscopy: random flips and 90° turns,
    drawn per image (on the CPU generator, applied batch-wise on the images' device)."""
    n = images.shape[0]
    flips = (torch.rand(n, 2, generator=generator) < 0.5).to(images.device)
    turns = torch.randint(0, 4, (n,), generator=generator).to(images.device)
    shape = (n,) + (1,) * (images.ndim - 1)
    out = torch.where(flips[:, 0].view(shape), images.flip(-1), images)
    out = torch.where(flips[:, 1].view(shape), out.flip(-2), out)
    if images.shape[-1] != images.shape[-2]:  # 90° turns only keep square images' shape
        return out
    turned = out
    for k in (1, 2, 3):
        turned = torch.where((turns == k).view(shape), torch.rot90(out, k, dims=(-2, -1)), turned)
    return turned


def strong_augment(images: torch.Tensor, generator: torch.Generator | None = None,
                   colour_channels: int = 3) -> torch.Tensor:
    """What lets a classifier survive other dermatoscopes: a random rotation (any angle),
    zoom (random resized crop, 0.65–1 of the side) and shift, then per-image brightness,
    contrast, saturation, gamma and colour temperature, and sometimes a slight blur. Float
    images in [-1, 1], (N, C, H, W); channels past `colour_channels` (a {0, 1} mask riding
    along) are only moved, never recoloured. Every draw comes from `generator`."""
    n, device = images.shape[0], images.device

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return (low + (high - low) * torch.rand(n, *shape, generator=generator)).to(device)

    angle = uniform(-math.pi, math.pi)
    scale = uniform(0.65, 1.0)
    shift = uniform(-0.1, 0.1, 2)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                        align_corners=False)
    rgb, rest = (out[:, :colour_channels] + 1) / 2, out[:, colour_channels:]
    if rest.shape[1]:
        rest = (rest > 0.5).to(out.dtype)  # masks stay binary
    view = (n, 1, 1, 1)
    grey = rgb.mean(1, keepdim=True)
    rgb = grey + (rgb - grey) * uniform(0.7, 1.3).view(view)  # saturation
    mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
    rgb = mean + (rgb - mean) * uniform(0.75, 1.25).view(view)  # contrast
    rgb = rgb * uniform(0.8, 1.2).view(view)  # brightness
    rgb = rgb.clamp(0, 1) ** uniform(0.8, 1.25).view(view)  # gamma
    warm = uniform(-0.06, 0.06)  # colour temperature: red up, blue down (or the reverse)
    rgb = rgb * torch.stack([1 + warm, torch.ones_like(warm), 1 - warm], 1).view(n, 3, 1, 1)
    blur = (torch.rand(n, generator=generator) < 0.2).to(device).view(view)
    blurred = F.avg_pool2d(F.pad(rgb, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    rgb = torch.where(blur, 0.5 * rgb + 0.5 * blurred, rgb)
    return torch.cat([rgb.clamp(0, 1) * 2 - 1, rest], 1)


# Re-tint targets for training: the whole range of the data's tone groups, lighter to darker
# (ITA in degrees; b* of skin in dermoscopy), drawn uniformly.
RETINT_ITA_RANGE = (-30.0, 55.0)
RETINT_B_RANGE = (12.0, 26.0)


def retint_augment(images: torch.Tensor, probability: float,
                   generator: torch.Generator | None = None,
                   whole_field: float = 0.0) -> torch.Tensor:
    """Re-tint the skin around the lesion of a random `probability` share of the images to a
    random skin tone (`skintone.retint_skin_torch`); a `whole_field` share of those instead
    over the whole field, lesion included (`skintone.retint_field_torch`). `images`
    (N, 4, H, W): RGB in [-1, 1] and the expert mask as the fourth channel (all ones, i.e.
    no skin: left as is). Every draw is made for every image, so the generator advances the
    same whatever happens (the whole-field draw only when `whole_field` > 0, so runs without
    it draw as before)."""
    n = images.shape[0]
    chosen = torch.rand(n, generator=generator) < probability
    ita = torch.empty(n).uniform_(*RETINT_ITA_RANGE, generator=generator)
    b_star = torch.empty(n).uniform_(*RETINT_B_RANGE, generator=generator)
    field = (torch.rand(n, generator=generator) < whole_field if whole_field > 0
             else torch.zeros(n, dtype=torch.bool))
    if images.shape[1] < 4:
        raise ValueError("retint_augment needs the lesion mask as a fourth channel")
    if not chosen.any():
        return images
    device = images.device
    picked = chosen.nonzero().squeeze(1).to(device)
    rgb = (images[picked, :3] + 1) / 2
    lesion = images[picked, 3:4] > 0.5
    ita, b_star = ita[chosen].to(device), b_star[chosen].to(device)
    on_field = field[chosen].to(device)
    moved = torch.empty_like(rgb)
    # Each picked image re-tinted once, by the one re-tint drawn for it.
    for retint, which in ((retint_skin_torch, ~on_field), (retint_field_torch, on_field)):
        if which.any():
            moved[which] = retint(rgb[which], lesion[which], ita[which],
                                  b_star[which]).to(moved.dtype)
    out = images.clone()
    out[picked, :3] = moved.to(images.dtype) * 2 - 1
    return out
