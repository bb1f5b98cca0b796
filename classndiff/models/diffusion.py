"""Noise schedule, x̂0, and the sampling loop with three-condition classifier-free guidance.

Schedulers come from diffusers; the joint loss that trains the model is in
`classndiff.training.losses`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from classndiff.config import ModelConfig
from classndiff.labels import DX_NULL, TONE_NULL
from classndiff.models.joint import ClassNDiff

SAMPLERS = ("dpm++", "ddim", "ddpm")
GUIDED = ("dx", "dx+tone")  # the conditions classifier-free guidance amplifies


def make_scheduler(name: str, config: ModelConfig):  # noqa: ANN201 - a diffusers scheduler
    """A diffusers scheduler for `name` over the model's training noise schedule.
    (diffusers is imported here, not at module load: diagnosis never needs it, and the
    app's first diagnosis should not wait for it.)"""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    common = dict(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        prediction_type=config.prediction_type,
    )
    pixel_space = not config.latent_denoiser
    if name == "dpm++":
        # Dynamic thresholding keeps pixel-space samples inside [-1, 1] at few steps.
        return DPMSolverMultistepScheduler(
            **common, algorithm_type="dpmsolver++", solver_order=2,
            thresholding=pixel_space, sample_max_value=1.0,
        )
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=pixel_space)
    if name == "ddpm":
        return DDPMScheduler(**common, clip_sample=pixel_space)
    raise ValueError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}")


class NoiseSchedule:
    """ᾱ_t of the training schedule, and the two formulas that use it."""

    def __init__(self, config: ModelConfig):
        from diffusers import DDPMScheduler

        self.scheduler = DDPMScheduler(
            num_train_timesteps=config.num_train_timesteps,
            beta_schedule=config.beta_schedule,
            beta_start=config.beta_start,
            beta_end=config.beta_end,
        )
        self.alphas_cumprod = self.scheduler.alphas_cumprod.float()
        self.num_timesteps = config.num_train_timesteps
        self.prediction_type = config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}")

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod.to(t.device)[t].view(-1, 1, 1, 1)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(x0, noise, t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser is trained to output: ε, or v = √ᾱ_t·ε − √(1−ᾱ_t)·x0."""
        if self.prediction_type == "epsilon":
            return noise
        a = self.alpha_bar(t).to(x0.dtype)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def predict_x0(self, x_t: torch.Tensor, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x̂0 from the denoiser's output: (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t for ε-prediction,
        √ᾱ_t·x_t − √(1−ᾱ_t)·v̂ for v-prediction."""
        a = self.alpha_bar(t).to(x_t.dtype)
        if self.prediction_type == "epsilon":
            return (x_t - (1 - a).sqrt() * out) / a.sqrt()
        return a.sqrt() * x_t - (1 - a).sqrt() * out

    def output_for(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The denoiser output whose `predict_x0` at (x_t, t) is `x0` (its inverse): what a
        sampler is given after x̂0 was moved, e.g. by classifier guidance."""
        a = self.alpha_bar(t).to(x_t.dtype)
        if self.prediction_type == "epsilon":
            return (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return (a.sqrt() * x_t - x0) / (1 - a).sqrt()

    def posterior_mean(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t−1} | x_t, x0): the one-step-denoised input of the upstream code."""
        a_t = self.alpha_bar(t)
        a_prev = self.alphas_cumprod.to(t.device)[(t - 1).clamp(min=0)].view(-1, 1, 1, 1)
        a_prev = torch.where(t.view(-1, 1, 1, 1) > 0, a_prev, torch.ones_like(a_prev))
        beta_t = 1 - a_t / a_prev
        coef_x0 = a_prev.sqrt() * beta_t / (1 - a_t)
        coef_xt = (1 - beta_t).sqrt() * (1 - a_prev) / (1 - a_t)
        return coef_x0 * x0 + coef_xt * x_t

    def classifier_weight(self, t: torch.Tensor, schedule: str) -> torch.Tensor:
        """w(t) for the x̂0 cross-entropy: informative at small t, ≈0 at pure noise."""
        a = self.alphas_cumprod.to(t.device)[t]
        if schedule == "alpha_bar":
            return a
        if schedule == "sqrt_alpha_bar":
            return a.sqrt()
        if schedule == "constant":
            return torch.ones_like(a)
        raise ValueError(f"unknown classifier weight schedule {schedule!r}")


@torch.no_grad()
def denoiser_input(images: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Full-size pixel images → the generator's pixel side (antialiased): the denoiser's own,
    or what its bundled autoencoder encodes."""
    size = config.generated_size
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)


def sample(
    model: ClassNDiff,
    scheduler,  # noqa: ANN001 - any diffusers scheduler
    dx: torch.Tensor,
    tone: torch.Tensor,
    sex: torch.Tensor,
    steps: int,
    guidance_scale: float,
    generators: list[torch.Generator],
    progress: Callable[[int, int], None] | None = None,
    guided: str = "dx",
    guidance_interval: tuple[float, float | None] = (0.0, None),
) -> torch.Tensor:
    """Draw one image per row of the label tensors. Returns the denoiser's space
    (pixels in [-1, 1], or scaled latents). Image i depends only on generators[i], so a
    batch is reproducible from its seeds whatever its size.

    Classifier-free guidance: ε = ε(∅) + s·(ε(c) − ε(∅)), where ∅ nulls the `guided`
    conditions ("dx", or "dx+tone" so that the requested skin tone is amplified too) and
    keeps the others; s = 1 runs the conditional pass only. Sex is never guided: it has no
    visible signature in dermoscopy. "dx+tone" needs weights trained with the joint drop of
    `draw_step_noise`; older weights saw that pattern too rarely to guide against.

    `guidance_interval` (σ_lo, σ_hi): guide only at noise levels σ = √((1−ᾱ)/ᾱ) in
    (σ_lo, σ_hi] (None: no upper limit), the conditional pass alone elsewhere. Guidance at
    the highest noise levels pulls every draw of a class towards one layout (less
    diversity); at the lowest it changes little (Kynkäänniemi et al. 2024)."""
    if guided not in GUIDED:
        raise ValueError(f"unknown guided conditions {guided!r}: {', '.join(GUIDED)}")
    from diffusers.utils.torch_utils import randn_tensor

    cfg = model.config
    denoiser = model.denoiser
    device = dx.device
    n = dx.shape[0]
    dtype = next(denoiser.parameters()).dtype
    shape = (n, cfg.in_channels, cfg.image_size, cfg.image_size)
    scheduler.set_timesteps(steps, device=device)
    x = randn_tensor(shape, generator=generators, device=device, dtype=dtype)
    x = x * scheduler.init_noise_sigma
    use_guidance = guidance_scale != 1.0
    if use_guidance:
        null_tone = torch.full_like(tone, TONE_NULL) if "tone" in guided else tone
        labels = (torch.cat([dx, torch.full_like(dx, DX_NULL)]), torch.cat([tone, null_tone]),
                  torch.cat([sex, sex]))
    sigmas = _noise_sigmas(scheduler)
    sigma_lo, sigma_hi = guidance_interval
    for i, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(x, t)
        sigma = float(sigmas[int(t)])
        if use_guidance and sigma > sigma_lo and (sigma_hi is None or sigma <= sigma_hi):
            tt = t.expand(2 * n).to(device)
            eps_cond, eps_uncond = denoiser(torch.cat([x_in, x_in]), tt, *labels).chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        else:
            eps = denoiser(x_in, t.expand(n).to(device), dx, tone, sex)
        x = scheduler.step(eps, t, x, generator=generators).prev_sample
        if progress is not None:
            progress(i + 1, len(scheduler.timesteps))
    return x


def _noise_sigmas(scheduler) -> torch.Tensor:  # noqa: ANN001 - any diffusers scheduler
    """σ_t = √((1−ᾱ_t)/ᾱ_t) for every training timestep t (the VP schedule's noise level)."""
    alphas_cumprod = scheduler.alphas_cumprod.double()
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
