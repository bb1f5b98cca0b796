"""Diffusion counterfactuals: the API's contract (layout kept, probabilities before and
after, JSON-ready settings, clear errors, abstention like diagnose)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from classndiff.pipelines.counterfactual import fine_detail, lesion_mask, toward_target
from classndiff.pipelines.inputs import to_model_tensor
from classndiff.pipelines.pipeline import ClassNDiffArgumentError, Diagnosis


def lesion_photo(size: int = 96, scale: float = 1.0) -> Image.Image:
    rng = np.random.default_rng(0)
    image = np.ones((size, size, 3)) * np.array([225, 185, 165])
    yy, xx = np.mgrid[:size, :size]
    blob = ((yy - 50) / (22 * scale)) ** 2 + ((xx - 44) / (16 * scale)) ** 2 < 1
    image[blob] = [90, 50, 40]
    image += rng.normal(0, 5, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def test_lesion_mask_finds_the_dark_blob() -> None:
    photo = lesion_photo()
    pixels = to_model_tensor(photo, 96)
    mask = lesion_mask(pixels)[0, 0].numpy() > 0.5
    yy, xx = np.mgrid[:96, :96]
    truth = ((yy - 50) / 22) ** 2 + ((xx - 44) / 16) ** 2 < 1
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.6, iou
    assert mask.sum() >= truth.sum()  # dilated: covers the whole lesion


def test_margin_share_narrows_the_margin_only_around_a_large_lesion() -> None:
    """lesion_mask(max_ring_share=s): the added ring never covers more than s of the skin
    around the blob. A small lesion keeps its full margin; one that fills most of the frame
    gets a narrower one; no share is plain dilation by the margin."""
    def ring_share(photo: Image.Image, **kw) -> float:  # noqa: ANN003
        pixels = to_model_tensor(photo, 96)
        core = lesion_mask(pixels, dilate=0)[0, 0].numpy() > 0.5
        grown = lesion_mask(pixels, dilate=12, **kw)[0, 0].numpy() > 0.5
        return float((grown & ~core).sum() / (~core).sum())

    small, large = lesion_photo(scale=0.5), lesion_photo(scale=1.8)
    assert ring_share(small, max_ring_share=0.3) == pytest.approx(ring_share(small), abs=1e-9)
    assert ring_share(large) > 0.3  # the full margin would take most of the skin left
    assert ring_share(large, max_ring_share=0.3) <= 0.3 + 0.02  # (the feathered edge)
    assert ring_share(large, max_ring_share=0.3) > 0.1  # narrower, not none


def test_counterfactual_keeps_the_skin_and_reports_both_diagnoses(tiny_pipe) -> None:
    photo = lesion_photo(tiny_pipe.config.model.pixel_size)
    cf = tiny_pipe.counterfactual(photo, target_dx="mel", strength=0.8, steps=4, seed=1)
    assert cf.reason is None, cf.reason
    size = tiny_pipe.config.model.pixel_size
    assert cf.image.size == cf.original.size == cf.difference.size == (size, size)
    assert sum(cf.probabilities_before.values()) == pytest.approx(1, abs=1e-5)
    assert sum(cf.probabilities_after.values()) == pytest.approx(1, abs=1e-5)
    before = np.asarray(cf.original, dtype=int)
    after = np.asarray(cf.image, dtype=int)
    mask = lesion_mask(to_model_tensor(photo, size))[0, 0].numpy()
    outside, inside = mask < 1e-3, mask > 0.5
    assert np.abs(after - before)[outside].max() <= 1  # the skin is the upload's own
    assert np.abs(after - before)[inside].mean() > 1  # the lesion was redrawn
    settings = json.loads(json.dumps(cf.to_dict()))  # JSON-ready
    assert settings["settings"]["synthetic"] is True and settings["target"] == "mel"
    again = tiny_pipe.counterfactual(photo, target_dx="mel", strength=0.8, steps=4, seed=1)
    assert np.array_equal(np.asarray(again.image), np.asarray(cf.image))  # reproducible


def test_margin_lets_the_edit_reach_beyond_the_lesion(tiny_pipe) -> None:
    """sampling.counterfactual_margin grows the redrawn region: a ring of skin that a margin
    of 0 keeps exactly may change with a wide margin (and margin 0 is not scipy's 'dilate
    until nothing changes')."""
    size = tiny_pipe.config.model.pixel_size
    photo = lesion_photo(size)
    pixels = to_model_tensor(photo, size)
    wide = max(4, size // 5)
    assert lesion_mask(pixels, dilate=0).mean() < lesion_mask(pixels, dilate=wide).mean() < 0.9
    ring = (lesion_mask(pixels, dilate=wide)[0, 0].numpy() > 0.9) \
        & (lesion_mask(pixels, dilate=0)[0, 0].numpy() < 1e-3)
    assert ring.sum() > 10
    changes = {}
    for margin in (0, wide):
        tiny_pipe.config.sampling.counterfactual_margin = margin
        cf = tiny_pipe.counterfactual(photo, target_dx="mel", strength=0.8, steps=4, seed=1)
        changes[margin] = np.abs(np.asarray(cf.image, int) - np.asarray(cf.original, int))[ring]
        assert cf.settings["margin"] == margin
    tiny_pipe.config.sampling.counterfactual_margin = 3
    assert changes[0].max() <= 1 and changes[wide].mean() > 1


def test_fine_detail_is_what_the_coarse_size_cannot_hold() -> None:
    """fine_detail: zero for an image that is smooth at the coarse size, the hairline itself
    for a thin line (which the coarse round trip smears away), nothing at or above full size."""
    size, coarse = 64, 16
    smooth = torch.linspace(-1, 1, size).expand(1, 3, size, size).contiguous()
    assert fine_detail(smooth, coarse)[..., 4:-4].abs().max() < 0.02  # (edges: 0.03)
    hair = smooth.clone()
    hair[..., 30, :] = -1
    detail = fine_detail(hair, coarse)
    assert detail[..., 30, :].mean() < -0.5  # the line, darker than its coarse copy
    assert detail[..., 10, 4:-4].abs().max() < 0.02  # far from it: nothing
    assert fine_detail(hair, size).abs().max() == 0


def test_detail_lays_the_uploads_fine_detail_back_inside_the_redraw(tiny_pipe) -> None:
    """sampling.counterfactual_detail = 1: inside the redrawn region the result holds the
    upload's fine detail on top of the redraw (the hairline crossing the lesion survives);
    0: it does not; the skin outside is the upload's either way; settings name it."""
    size = tiny_pipe.config.model.pixel_size  # 32; the tiny denoiser draws at 16
    image = np.ones((size, size, 3)) * np.array([225, 185, 165])
    yy, xx = np.mgrid[:size, :size]
    image[((yy - 16) / 9) ** 2 + ((xx - 16) / 7) ** 2 < 1] = [90, 50, 40]
    image[16, 10:23] = 0  # a dark hair across the lesion
    photo = Image.fromarray(image.astype(np.uint8))
    results = {}
    for detail in (0.0, 1.0):
        tiny_pipe.config.sampling.counterfactual_detail = detail
        cf = tiny_pipe.counterfactual(photo, target_dx="mel", strength=0.8, steps=4, seed=1)
        assert cf.settings["detail"] == detail
        results[detail] = np.asarray(cf.image, int).mean(2)
    tiny_pipe.config.sampling.counterfactual_detail = 0.0
    hair_minus_beside = {d: (r[16, 12:21] - (r[13, 12:21] + r[19, 12:21]) / 2).mean()
                         for d, r in results.items()}
    assert hair_minus_beside[1.0] < hair_minus_beside[0.0] - 20, hair_minus_beside
    assert np.abs(results[1.0] - results[0.0])[:, :3].max() <= 1  # the skin at the edge


@pytest.mark.parametrize("setting, own, given", [("strength", 0.35, 0.8),
                                                   ("classifier_scale", 0.2, 0.05)])
def test_default_is_the_targets_own_where_the_weights_set_one(tiny_pipe, setting, own,
                                                              given) -> None:
    """sampling.counterfactual_{strength,classifier_scale}_by_target overrides the general
    default for its target only; an explicit value overrides both; the settings say which
    was used."""
    sampling = tiny_pipe.config.sampling
    photo = lesion_photo(tiny_pipe.config.model.pixel_size)
    kept = getattr(sampling, f"counterfactual_{setting}_by_target")
    setattr(sampling, f"counterfactual_{setting}_by_target", {"nv": own})
    try:
        to_nv = tiny_pipe.counterfactual(photo, target_dx="nv", steps=2, seed=1)
        to_mel = tiny_pipe.counterfactual(photo, target_dx="mel", steps=2, seed=1)
        chosen = tiny_pipe.counterfactual(photo, target_dx="nv", steps=2, seed=1,
                                          **{setting: given})
    finally:
        setattr(sampling, f"counterfactual_{setting}_by_target", kept)
    assert to_nv.settings[setting] == own
    assert to_mel.settings[setting] == getattr(sampling, f"counterfactual_{setting}") != own
    assert chosen.settings[setting] == given


@pytest.mark.parametrize("kwargs, words", [
    ({"target_dx": "melanoma"}, "unknown target_dx"),
    ({"strength": 0}, "strength"),
    ({"strength": 1.5}, "strength"),
    ({"steps": 0}, "steps"),
    ({"guidance_scale": -1}, "guidance_scale"),
    ({"classifier_scale": 2}, "classifier_scale"),
    ({"classifier_scale": True}, "classifier_scale"),
    ({"seed": -3}, "seed"),
    ({"candidates": 0}, "candidates"),
    ({"candidates": 17}, "candidates"),
    ({"candidates": 2.5}, "candidates"),
])
def test_bad_counterfactual_arguments_raise_clear_errors(tiny_pipe, kwargs, words) -> None:
    with pytest.raises(ClassNDiffArgumentError, match=words):
        tiny_pipe.counterfactual(lesion_photo(), **kwargs)


def test_candidates_are_redraws_of_one_seed_and_the_model_shows_its_pick(tiny_pipe) -> None:
    """candidates = K: K redraws in one batch, the first the redraw K = 1 gives, the others
    different; the result is the one the model's own classifier gives the highest P(target),
    with that P reported after; the settings say how many and which."""
    from classndiff.labels import DX_CODES
    from classndiff.pipelines.counterfactual import redraw_lesion

    size = tiny_pipe.config.model.pixel_size
    photo = lesion_photo(size)
    pixels = to_model_tensor(photo, size)
    redraw = {"target": DX_CODES.index("mel"), "strength": 0.8, "steps": 4,
              "guidance_scale": 3.0, "seed": 1}
    one, _ = redraw_lesion(tiny_pipe.model, pixels, **redraw)
    four, mask = redraw_lesion(tiny_pipe.model, pixels, candidates=4, **redraw)
    assert one.shape[0] == 1 and four.shape[0] == 4 and mask.shape[0] == 1
    assert torch.allclose(four[:1], one, atol=1e-5)
    assert (four[1:] - four[:1]).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    scores = tiny_pipe.predict_proba(four)[:, DX_CODES.index("mel")]
    cf = tiny_pipe.counterfactual(photo, target_dx="mel", strength=0.8, steps=4, seed=1,
                                  guidance_scale=3.0, candidates=4)  # margin 3 as above
    assert cf.settings["candidates"] == 4
    assert cf.settings["chosen_candidate"] == int(scores.argmax())
    assert cf.probabilities_after["mel"] == pytest.approx(float(scores.max()), abs=1e-5)


def test_abstained_upload_gets_the_diagnose_reason_and_no_image(tiny_pipe) -> None:
    blank = Image.new("RGB", (64, 64), (128, 128, 128))
    reason = tiny_pipe.diagnose(blank).reason
    assert reason
    cf = tiny_pipe.counterfactual(blank)
    assert cf.reason == reason and cf.image is None and cf.difference is None
    assert cf.probabilities_before == {} and cf.probabilities_after == {}


@pytest.mark.parametrize("predicted, expected", [("nv", "bcc"), ("mel", "nv")])
def test_default_target_is_the_other_side(tiny_pipe, monkeypatch, predicted, expected) -> None:
    """Benign prediction → the most likely malignant class; malignant → nv."""
    probabilities = {"akiec": 0.05, "bcc": 0.2, "bkl": 0.05, "df": 0.02, "mel": 0.1,
                     "nv": 0.55, "vasc": 0.03}
    fake = Diagnosis(probabilities=probabilities, malignant=0.35, prediction=predicted,
                     confidence=0.55)
    monkeypatch.setattr(tiny_pipe, "_diagnose", lambda *a, **k: fake)
    monkeypatch.setattr("classndiff.pipelines.counterfactual.sdedit",
                        lambda model, scheduler, x0, *a, **k: x0)  # the choice is all we test
    cf = tiny_pipe.counterfactual(lesion_photo(), steps=2)
    assert cf.target == expected


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_classifier_guidance_moves_x0_towards_the_target_only_where_drawn(
        tiny_pipe, prediction_type) -> None:
    from dataclasses import replace

    from diffusers import DDIMScheduler

    from classndiff.models.diffusion import NoiseSchedule

    model, config = tiny_pipe.model, tiny_pipe.config.model
    scheduler = DDIMScheduler(num_train_timesteps=config.num_train_timesteps,
                              beta_schedule=config.beta_schedule, beta_start=config.beta_start,
                              beta_end=config.beta_end, prediction_type=prediction_type,
                              clip_sample=False)
    scheduler.set_timesteps(4)
    generator = torch.Generator().manual_seed(0)
    side = config.image_size
    x = torch.randn(2, 3, side, side, generator=generator)
    out = torch.randn(2, 3, side, side, generator=generator)
    t = scheduler.timesteps[1]

    def x0_of(o: torch.Tensor) -> torch.Tensor:  # diffusers' own reading of the output
        return scheduler.step(o, t, x).pred_original_sample

    target = torch.tensor([4, 2])
    drawn = torch.zeros(2, 1, side, side)
    drawn[..., side // 4: 3 * side // 4, side // 4: 3 * side // 4] = 1
    with torch.no_grad():  # as in sampling
        schedule = NoiseSchedule(replace(config, prediction_type=prediction_type))
        moved = toward_target(model, schedule, x, out, t, target, 0.05 * drawn)
    change = (x0_of(moved) - x0_of(out)).abs()
    assert (change * (1 - drawn)).max() < 1e-4  # the kept region's x̂0 is untouched
    assert (change * drawn).sum() / (3 * drawn.sum()) > 1e-3

    def log_p(o: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = model.classifier(x0_of(o).clamp(-1, 1))
        return torch.log_softmax(logits, 1).gather(1, target[:, None])

    assert (log_p(moved) > log_p(out)).all()


def test_counterfactual_with_classifier_guidance(tiny_pipe) -> None:
    photo = lesion_photo(tiny_pipe.config.model.pixel_size)
    plain = tiny_pipe.counterfactual(photo, target_dx="mel", strength=0.8, steps=3, seed=1)
    guided = tiny_pipe.counterfactual(photo, target_dx="mel", strength=0.8, steps=3, seed=1,
                                      classifier_scale=0.5)
    assert plain.settings["classifier_scale"] == 0.0
    assert guided.settings["classifier_scale"] == 0.5
    assert not np.array_equal(np.asarray(guided.image), np.asarray(plain.image))
