"""Diffusion counterfactuals: "what would this lesion have to look like to be called X?"

SDEdit (Meng et al., 2022) with the lesion's layout kept: the image is noised to a level set
by `strength`, then denoised conditioned on the target diagnosis with classifier-free
guidance; at every step the skin outside the lesion is reset to the original noised to the
same level (RePaint-style), so only the lesion is rewritten and the seam stays consistent.
The lesion mask comes from a simple segmentation (Otsu on darkness, largest blob, dilated),
not from the classifier, so the explanation does not lean on the model it explains."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from classndiff.labels import DX_NULL, SEX_NULL, TONE_NULL
from classndiff.models.diffusion import NoiseSchedule, denoiser_input, make_scheduler
from classndiff.models.joint import ClassNDiff


def lesion_mask(pixels: torch.Tensor, dilate: int = 3,
                max_ring_share: float | None = None) -> torch.Tensor:
    """A soft lesion mask (N, 1, H, W) in [0, 1] from images in [-1, 1]: darker-than-skin
    pixels by Otsu's threshold on a blurred darkness map, the largest connected blob,
    dilated by up to `dilate` pixels and feathered. With `max_ring_share`, the dilation stops
    before the ring it adds covers more than that share of the skin around the blob (a large
    lesion has little skin left: it gets a narrower margin). Falls back to a centred disc
    when nothing stands out."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    masks = []
    for image in pixels.float().cpu():
        rgb = (image.clamp(-1, 1) + 1) / 2
        darkness = 1 - (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])
        darkness = ndimage.gaussian_filter(darkness.numpy(), sigma=2)
        side = darkness.shape[0]
        yy, xx = np.mgrid[:side, :side]
        disc = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (0.3 * side) ** 2
        mask = disc
        if np.ptp(darkness) > 0.05:
            found = darkness > threshold_otsu(darkness)
            labels, count = ndimage.label(found)
            if count:
                sizes = ndimage.sum(found, labels, range(1, count + 1))
                blob = labels == (int(np.argmax(sizes)) + 1)
                if 0.01 * side * side < blob.sum() < 0.9 * side * side:
                    mask = ndimage.binary_fill_holes(blob)
        mask = _grow(mask, dilate, max_ring_share)
        soft = ndimage.gaussian_filter(mask.astype(np.float32), sigma=1.5)
        masks.append(torch.from_numpy(soft))
    return torch.stack(masks)[:, None].clamp(0, 1)


def _grow(mask: np.ndarray, pixels: int, max_ring_share: float | None) -> np.ndarray:
    """`mask` dilated one pixel at a time, `pixels` times or until the added ring would cover
    more than `max_ring_share` of the skin outside `mask`. (One call with iterations=k is the
    same dilation; scipy reads 0 iterations as "until nothing changes", hence the loop.)"""
    from scipy import ndimage

    skin = int((~mask).sum())
    grown = mask
    for _ in range(pixels):
        wider = ndimage.binary_dilation(grown)
        if max_ring_share is not None and (wider & ~mask).sum() > max_ring_share * skin:
            break
        grown = wider
    return grown


@torch.no_grad()
def sdedit(
    model: ClassNDiff,
    scheduler,  # noqa: ANN001 - a diffusers scheduler with add_noise (DDIM)
    x0: torch.Tensor,
    keep: torch.Tensor,
    dx: torch.Tensor,
    tone: torch.Tensor,
    sex: torch.Tensor,
    strength: float,
    steps: int,
    guidance_scale: float,
    generator: torch.Generator,
    classifier_scale: float = 0.0,
) -> torch.Tensor:
    """Re-draw `x0` (the denoiser's space) from noise level `strength` ∈ (0, 1] towards the
    labels, keeping x0 where `keep` (N, 1, h, w) is 1. Guidance nulls the diagnosis only.
    `classifier_scale` > 0 adds the joint classifier's guidance on x̂0 (`toward_target`)."""
    from diffusers.utils.torch_utils import randn_tensor

    schedule = NoiseSchedule(model.config) if classifier_scale > 0 else None
    scheduler.set_timesteps(steps, device=x0.device)
    start = max(1, min(steps, round(steps * strength)))
    timesteps = scheduler.timesteps[steps - start:]
    dtype = next(model.denoiser.parameters()).dtype
    noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=dtype)
    x = scheduler.add_noise(x0, noise, timesteps[:1])
    n = x0.shape[0]
    labels = (torch.cat([dx, torch.full_like(dx, DX_NULL)]), torch.cat([tone, tone]),
              torch.cat([sex, sex]))
    for i, t in enumerate(timesteps):
        tt = t.expand(2 * n).to(x0.device)
        cond, uncond = model.denoiser(torch.cat([x, x]), tt, *labels).chunk(2)
        out = uncond + guidance_scale * (cond - uncond)
        if classifier_scale > 0:
            out = toward_target(model, schedule, x, out, t, dx, (1 - keep) * classifier_scale)
        x = scheduler.step(out, t, x).prev_sample
        if i + 1 < len(timesteps):  # the kept region, noised to the next step's level
            known = scheduler.add_noise(x0, noise, timesteps[i + 1: i + 2])
        else:
            known = x0
        x = keep * known + (1 - keep) * x
    return x


def toward_target(model: ClassNDiff, schedule: NoiseSchedule, x: torch.Tensor,
                  out: torch.Tensor, t: torch.Tensor, dx: torch.Tensor, step_size: torch.Tensor,
                  ) -> torch.Tensor:
    """The joint classifier's guidance on x̂0 (the paper's link between its two halves): x̂0
    moves up the gradient of log p(target | x̂0), normalised to unit RMS per image and scaled
    by `step_size` (N, 1, h, w; zero where the image is kept), and the denoiser's output is
    rewritten to match (`schedule.output_for`). The gradient is taken at the denoiser's
    resolution (through the bundled autoencoder's decoder for a latent denoiser) and the
    classifier's own resize, so the nudge is low-pass; the next denoising steps redraw around
    it rather than keep pixel noise. No backpropagation through the denoiser (cheap on CPU)."""
    x_t = x.float()
    x0 = schedule.predict_x0(x_t, out.float(), t)
    with torch.enable_grad():
        # Pixels: the gradient at the clamped x̂0. Bundled latents: through the decoder.
        probe = (x0 if model.vae is not None else x0.clamp(-1, 1)).detach().requires_grad_(True)
        seen = model.decode(probe) if model.vae is not None else probe
        logits = model.classifier(seen.to(next(model.classifier.parameters()).dtype))
        picked = torch.log_softmax(logits.float(), dim=1).gather(1, dx[:, None]).sum()
        (grad,) = torch.autograd.grad(picked, probe)
    region = (step_size > 0).float()
    rms = ((grad * region).pow(2).sum(dim=(1, 2, 3), keepdim=True)
           / (region.sum(dim=(1, 2, 3), keepdim=True) * grad.shape[1]).clamp(min=1)).sqrt()
    x0 = x0 + step_size * grad / rms.clamp(min=1e-12)
    return schedule.output_for(x_t, x0, t).to(out.dtype)


@torch.no_grad()
def redraw_lesion(model: ClassNDiff, pixels: torch.Tensor, target: int, strength: float,
                  steps: int, guidance_scale: float, seed: int, classifier_scale: float = 0.0,
                  margin: int = 3, margin_share: float | None = None, detail: float = 0.0,
                  candidates: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The lesion in `pixels` (1, 3, H, W) in [-1, 1] redrawn as diagnosis id `target` by
    `sdedit` at the denoiser's size, brought back to full size; outside the lesion mask
    (grown by `margin` pixels, less where the ring would cover more than `margin_share` of the
    skin) the result is the upload itself. `detail` ∈ [0, 1]: the share of the upload's fine
    detail (`fine_detail`) laid back over the redraw. `candidates` redraws are made in one
    batch from one seeded noise draw (the first is the redraw `candidates=1` gives).
    Returns (results (candidates, 3, H, W), mask (1, 1, H, W)), at full size."""
    config = model.config
    mask = lesion_mask(pixels, dilate=margin, max_ring_share=margin_share).to(pixels.device)
    x0 = denoiser_input(pixels, config)
    if model.vae is not None:  # the bundled autoencoder's latents
        x0 = model.encode(x0)
    keep = 1 - resize_mask(mask, x0.shape[-1])
    x0, keep = x0.expand(candidates, -1, -1, -1), keep.expand(candidates, -1, -1, -1)
    labels = [torch.full((candidates,), i, dtype=torch.long, device=pixels.device)
              for i in (target, TONE_NULL, SEX_NULL)]
    drawn = sdedit(model, make_scheduler("ddim", config),
                   x0.to(next(model.parameters()).dtype), keep, *labels,
                   strength=strength, steps=steps, guidance_scale=guidance_scale,
                   generator=torch.Generator("cpu").manual_seed(seed),
                   classifier_scale=classifier_scale).float()
    if model.vae is not None:
        drawn = model.decode(drawn)
    size = pixels.shape[-1]
    up = F.interpolate(drawn, size=(size, size), mode="bicubic", align_corners=False)
    if detail > 0:
        up = up + detail * fine_detail(pixels, drawn.shape[-1])
    return mask * up.clamp(-1, 1) + (1 - mask) * pixels, mask


def fine_detail(pixels: torch.Tensor, coarse_size: int) -> torch.Tensor:
    """What `pixels` hold beyond `coarse_size`: the image minus itself brought down to that
    size (area average) and back up (bicubic). Close to, not the same as, the redraw's own
    round trip (`denoiser_input` goes down by antialiased bilinear); this is the version
    measured and chosen on validation (benchmarks/counterfactual_detail.sh)."""
    size = pixels.shape[-1]
    if coarse_size >= size:
        return torch.zeros_like(pixels)
    coarse = F.interpolate(pixels, size=(coarse_size, coarse_size), mode="area")
    return pixels - F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False)


def difference_image(before: torch.Tensor, after: torch.Tensor) -> Image.Image:
    """Mean absolute change per pixel (0–255 scale), shown with a perceptually uniform,
    colour-blind-safe map (cividis: dark = unchanged)."""
    from matplotlib import colormaps

    change = (after - before).abs().mean(0).clamp(0, 1).numpy()
    rgb = colormaps["cividis"](change)[..., :3]
    return Image.fromarray((rgb * 255).round().astype(np.uint8))
