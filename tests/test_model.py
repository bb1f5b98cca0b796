"""The model and the joint loss: shapes, conditioning, guidance, gradients, training."""

from __future__ import annotations

import pytest
import torch

from classndiff.config import ClassNDiffConfig
from classndiff.labels import DX_NULL, SEX_NULL, TONE_NULL
from classndiff.models.diffusion import NoiseSchedule, make_scheduler, sample
from classndiff.models.joint import ClassNDiff
from classndiff.training.losses import Batch, joint_loss, upstream_style_loss


def tiny(tiny_config: ClassNDiffConfig, **train) -> tuple[ClassNDiff, ClassNDiffConfig]:
    config = tiny_config.override({f"train.{k}": v for k, v in train.items()})
    torch.manual_seed(0)
    return ClassNDiff(config.model, config.train.cond_drop_prob), config


def fixed_batch(config: ClassNDiffConfig, n: int = 8) -> Batch:
    g = torch.Generator().manual_seed(0)
    m = config.model
    pixels = torch.rand(n, 3, m.pixel_size, m.pixel_size, generator=g) * 2 - 1
    small = torch.nn.functional.interpolate(pixels, size=m.image_size, mode="bilinear")
    return Batch(small, pixels, torch.arange(n) % 7, torch.arange(n) % 3, torch.arange(n) % 2)


def test_denoiser_output_shape_matches_input(tiny_config):
    model, config = tiny(tiny_config)
    b = fixed_batch(config)
    t = torch.randint(0, 100, (8,))
    assert model(b.x0, t, b.dx, b.tone, b.sex).shape == b.x0.shape
    assert model.classify(b.cls_input).shape == (8, 7)


def test_training_steps_lower_the_loss_on_a_fixed_batch(tiny_config):
    model, config = tiny(tiny_config, lambda_cls=0.2)
    schedule = NoiseSchedule(config.model)
    batch = fixed_batch(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()

    def loss_at_fixed_noise() -> float:
        # Train mode (batch-norm on batch statistics: 8 images give no useful running
        # statistics) with the condition dropout's RNG fixed too, so both calls see the
        # same draw.
        torch.manual_seed(2)
        with torch.no_grad():
            return joint_loss(model, batch, schedule, config.train,
                              generator=torch.Generator().manual_seed(1))["loss"].item()

    before = loss_at_fixed_noise()
    for _ in range(30):
        out = joint_loss(model, batch, schedule, config.train,
                         generator=torch.Generator().manual_seed(1))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    assert loss_at_fixed_noise() < 0.8 * before


# The x̂0 branch's gradients, term by term: tests/test_training.py.


def test_fast_and_upstream_style_steps_both_run_and_backpropagate(tiny_config):
    model, config = tiny(tiny_config)
    schedule = NoiseSchedule(config.model)
    batch = fixed_batch(config)
    for loss_fn in (joint_loss, upstream_style_loss):
        model.zero_grad()
        out = loss_fn(model, batch, schedule, config.train)
        out["loss"].backward()
        assert torch.isfinite(out["loss"])
        assert any(p.grad is not None for p in model.denoiser.parameters())
    out = upstream_style_loss(model, batch, schedule, config.train, branch_probability=1.0)
    assert out["took_branch"].item() == 1.0 and out["cls_x0"].item() > 0


def _perturbed(tiny_config):
    model, config = tiny(tiny_config)
    for p in model.denoiser.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    return model.eval(), config


def _draw(model, config, dx, tone, sex, scale, seeds=(0, 1), sampler="dpm++",
          interval=(0.0, None)):
    n = len(seeds)
    return sample(model, make_scheduler(sampler, config.model),
                  torch.full((n,), dx), torch.full((n,), tone), torch.full((n,), sex),
                  steps=4, guidance_scale=scale, guidance_interval=interval,
                  generators=[torch.Generator().manual_seed(s) for s in seeds])


def test_guidance_interpolates_between_unconditional_and_conditional(tiny_config):
    """ε = ε(∅) + s·(ε(c) − ε(∅)): scale 0 is the unconditional path (diagnosis null, no
    guidance), and guidance changes nothing when the diagnosis is already null."""
    model, config = _perturbed(tiny_config)
    torch.testing.assert_close(_draw(model, config, 4, 1, 0, 0.0),
                               _draw(model, config, DX_NULL, 1, 0, 1.0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_draw(model, config, DX_NULL, 1, 0, 3.0),
                               _draw(model, config, DX_NULL, 1, 0, 1.0), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(_draw(model, config, 4, 1, 0, 1.0),
                              _draw(model, config, 4, 1, 0, 3.0))


def test_guidance_acts_only_inside_its_noise_interval(tiny_config):
    """guidance_interval (σ_lo, σ_hi]: an interval that holds every step's σ is plain
    guidance, one that holds none is the conditional pass alone, and one that holds only
    some steps is neither."""
    model, config = _perturbed(tiny_config)
    guided = _draw(model, config, 4, 1, 0, 3.0)
    conditional = _draw(model, config, 4, 1, 0, 1.0)
    torch.testing.assert_close(_draw(model, config, 4, 1, 0, 3.0, interval=(0.0, 1e9)), guided)
    torch.testing.assert_close(_draw(model, config, 4, 1, 0, 3.0, interval=(1e8, 1e9)),
                               conditional)
    scheduler = make_scheduler("dpm++", config.model)
    scheduler.set_timesteps(4)
    alphas_cumprod = scheduler.alphas_cumprod.double()
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()[scheduler.timesteps.long()]
    middle = float(sigmas[1] + sigmas[2]) / 2  # the last two steps only
    part = _draw(model, config, 4, 1, 0, 3.0, interval=(0.0, middle))
    assert not torch.allclose(part, guided) and not torch.allclose(part, conditional)


def test_each_condition_changes_the_output(tiny_config):
    model, config = _perturbed(tiny_config)
    base = _draw(model, config, 4, 0, 0, 2.0)
    assert (base - _draw(model, config, 4, 2, 0, 2.0)).abs().max() > 1e-4  # tone only
    assert (base - _draw(model, config, 4, 0, 1, 2.0)).abs().max() > 1e-4  # sex only
    assert (base - _draw(model, config, 1, 0, 0, 2.0)).abs().max() > 1e-4  # dx only
    nulls = _draw(model, config, DX_NULL, TONE_NULL, SEX_NULL, 1.0)
    assert torch.isfinite(nulls).all()


def test_every_sampler_is_reproducible_per_image(tiny_config):
    model, config = _perturbed(tiny_config)
    for sampler in ("dpm++", "ddim", "ddpm"):
        a = _draw(model, config, 4, 0, 0, 2.0, seeds=(5, 6), sampler=sampler)
        b = _draw(model, config, 4, 0, 0, 2.0, seeds=(5, 6), sampler=sampler)
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a[0], a[1])
    one = _draw(model, config, 4, 0, 0, 2.0, seeds=(6,), sampler="dpm++")
    two = _draw(model, config, 4, 0, 0, 2.0, seeds=(5, 6), sampler="dpm++")
    torch.testing.assert_close(one[0], two[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_x0_from_the_exact_target_recovers_the_clean_image(tiny_config,
                                                           prediction_type: str) -> None:
    config = tiny_config.override({"model.prediction_type": prediction_type})
    schedule = NoiseSchedule(config.model)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1
    noise = torch.randn(6, 3, 16, 16, generator=g)
    t = torch.tensor([0, 5, 20, 50, 90, 99])
    x_t = schedule.add_noise(x0, noise, t)
    recovered = schedule.predict_x0(x_t, schedule.target(x0, noise, t), t)
    torch.testing.assert_close(recovered, x0, atol=1e-3, rtol=1e-3)
    if prediction_type == "epsilon":
        assert torch.equal(schedule.target(x0, noise, t), noise)


def test_a_unet_denoiser_trains_exports_and_generates_under_the_same_contract(tiny_config,
                                                                           tmp_path):
    """`model.denoiser: "unet"` (diffusers' UNet2DModel): the same conditions, guidance and
    training as the DiT, through the exported weights and the public pipeline."""
    from classndiff import ClassNDiffPipeline
    from classndiff.models.unet import UNetDenoiser
    from classndiff.training.trainer import train

    config = tiny_config.override({"model.denoiser": "unet", "model.unet_channels": [8, 16],
                                   "model.unet_layers_per_block": 1,
                                   "model.unet_attention_levels": 1})
    torch.manual_seed(0)
    model = ClassNDiff(config.model, config.train.cond_drop_prob)
    assert isinstance(model.denoiser, UNetDenoiser)
    for p in model.denoiser.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    model.eval()
    base = _draw(model, config, 4, 0, 0, 2.0)
    assert base.shape == (2, 3, 16, 16)
    for other in ((4, 2, 0), (4, 0, 1), (1, 0, 0)):  # tone, sex, diagnosis each matter
        assert (base - _draw(model, config, *other, 2.0)).abs().max() > 1e-4
    torch.testing.assert_close(_draw(model, config, 4, 1, 0, 0.0),
                               _draw(model, config, DX_NULL, 1, 0, 1.0), rtol=1e-4, atol=1e-5)

    train(config, tmp_path)
    pipe = ClassNDiffPipeline.from_pretrained(tmp_path)
    assert pipe.config.model.denoiser == "unet"
    images = pipe.generate("mel", "darker", num_images=2, steps=3).images
    assert len(images) == 2 and images[0].size == (16, 16)


def test_an_unknown_denoiser_is_refused(tiny_config):
    with pytest.raises(ValueError, match="unknown denoiser"):
        ClassNDiff(tiny_config.override({"model.denoiser": "gan"}).model)
