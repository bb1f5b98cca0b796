"""The skin-tone counterfactual: re-tint reaches its target ITA, keeps the lesion and the
skin's texture; the flip report's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from classndiff.trust.fairness import RETINT_TARGETS, flip_report, retint_skin, skin_ita


def photo(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = np.ones((64, 64, 3)) * np.array([232, 196, 180]) + rng.normal(0, 4, (64, 64, 3))
    yy, xx = np.mgrid[:64, :64]
    lesion = (yy - 32) ** 2 + (xx - 30) ** 2 < 14 ** 2
    image[lesion] = np.array([80, 45, 35]) + rng.normal(0, 4, (lesion.sum(), 3))
    return np.clip(image, 0, 255).astype(np.uint8), lesion


@pytest.mark.parametrize("target", list(RETINT_TARGETS))
def test_retint_reaches_the_target_tone_and_keeps_the_lesion(target: str) -> None:
    image, lesion = photo()
    out = retint_skin(image, lesion, target)
    assert skin_ita(image, lesion) > 50  # a light skin to start from
    assert skin_ita(out, lesion) == pytest.approx(RETINT_TARGETS[target][0], abs=3)
    assert np.array_equal(out[lesion], image[lesion])  # the lesion's pixels untouched
    # Texture kept: the skin's pixel-to-pixel variation survives the shift.
    before = image[~lesion].astype(float).std(0).mean()
    after = out[~lesion].astype(float).std(0).mean()
    assert 0.5 * before < after < 2 * before


def test_darker_is_darker_than_brown() -> None:
    image, lesion = photo(1)
    brown, darker = retint_skin(image, lesion, "brown"), retint_skin(image, lesion, "darker")
    assert skin_ita(image, lesion) > skin_ita(brown, lesion) > skin_ita(darker, lesion)
    assert darker[~lesion].mean() < brown[~lesion].mean() < image[~lesion].mean()


def test_flip_report_arithmetic() -> None:
    # classes: akiec bcc bkl df mel nv vasc; malignant = akiec, bcc, mel
    before = np.array([[0, 0, 0, 0, 0.9, 0.1, 0], [0, 0, 0, 0, 0.2, 0.8, 0],
                       [0, 0, 0, 0, 0.6, 0.4, 0], [0, 0, 0, 0, 0.1, 0.9, 0]])
    after = np.array([[0, 0, 0, 0, 0.8, 0.2, 0], [0, 0, 0, 0, 0.7, 0.3, 0],
                      [0, 0, 0, 0, 0.6, 0.4, 0], [0, 0, 0, 0, 0.1, 0.9, 0]])
    labels = np.array([4, 5, 4, 5])
    report = flip_report(before, after, labels)
    assert report["flip_rate"] == 0.25  # only image 1 changes its top class
    assert report["malignant_change_mean"] == pytest.approx((-0.1 + 0.5) / 4)
    assert report["accuracy_before"] == 1.0 and report["accuracy_after"] == 0.75
    assert report["malignant_auc_before"] == 1.0
    assert report["malignant_auc_after"] == pytest.approx(0.75)
    # top probabilities 0.9, 0.8, 0.6, 0.9: the one flip (0.8) is in the confident band
    assert [(b["n"], b["flip_rate"]) for b in report["flip_rate_by_confidence"]] == \
        [(0, None), (1, 0.0), (3, pytest.approx(1 / 3))]


def test_gradient_reversal_flips_and_scales_the_gradient() -> None:
    import torch

    from classndiff.models.classifier import GradientReversal

    x = torch.randn(4, 3, requires_grad=True)
    (GradientReversal.apply(x, 0.1) * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.1 * torch.arange(3.0).expand(4, 3))


def test_tone_adversary_trains_its_head_and_reverses_into_the_features(tiny_config) -> None:
    """λ_adv > 0: the head gets the ordinary gradient of its CE; the backbone gets that
    CE's gradient reversed and scaled by adv_scale."""
    import torch

    from classndiff.training.losses import _tone_adversary_loss
    from tests.test_training import _batch

    config = tiny_config.override({"model.tone_adversary": True, "train.lambda_adv": 1.0,
                                   "train.adv_scale": 0.5})
    from classndiff.models.joint import ClassNDiff

    torch.manual_seed(0)
    model = ClassNDiff(config.model).eval()
    batch = _batch(config, n=6)
    batch.tone = torch.tensor([0, 1, 2, 0, 3, 1])  # 3 = unknown: left out

    def backbone_grads(reverse: bool) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        _, feature_map = model.classifier.forward_with_maps(batch.cls_input)
        if reverse:
            loss, accuracy = _tone_adversary_loss(model, feature_map, batch, config.train)
            assert 0 <= float(accuracy) <= 1
        else:  # the same head without the reversal
            pooled = model.classifier.backbone.forward_head(feature_map, pre_logits=True)
            known = batch.tone < 3
            loss = torch.nn.functional.cross_entropy(
                model.tone_adversary.net(pooled[known]), batch.tone[known])
        loss.backward()
        head = [p.grad.clone() for p in model.tone_adversary.parameters()]
        return head, [p.grad.clone() for p in model.classifier.backbone.conv1.parameters()]

    head_rev, feats_rev = backbone_grads(True)
    head_plain, feats_plain = backbone_grads(False)
    for a, b in zip(head_rev, head_plain):
        torch.testing.assert_close(a, b)
    for a, b in zip(feats_rev, feats_plain):
        torch.testing.assert_close(a, -0.5 * b)
        assert b.abs().sum() > 0


def test_training_with_the_adversary_logs_its_accuracy(tiny_config, tmp_path) -> None:
    from classndiff.training.trainer import Trainer

    config = tiny_config.override({"model.tone_adversary": True, "train.lambda_adv": 0.5})
    Trainer(config, tmp_path).train()
    header, *rows = (tmp_path / "log.csv").read_text().splitlines()
    values = dict(zip(header.split(","), rows[0].split(",")))
    assert 0 <= float(values["adv_accuracy"]) <= 1 and float(values["adv"]) > 0


def test_a_margin_of_skin_inside_the_mask_moves_with_the_skin() -> None:
    """Expert masks are drawn generously: the skin inside the mask must be re-tinted too, and
    the lesion's rim (a blend of lesion and skin) in proportion, or the lesion gets a ring of
    the old skin colour (a halo the classifier could read)."""
    image, lesion = photo(2)
    yy, xx = np.mgrid[:64, :64]
    radius = np.sqrt((yy - 32) ** 2 + (xx - 30) ** 2)
    rim = (radius >= 14) & (radius < 16)
    image[rim] = (0.5 * image[rim] + 0.5 * np.array([80, 45, 35])).astype(np.uint8)
    mask = radius < 19  # the lesion, its rim and a margin of skin
    margin = mask & ~lesion & ~rim
    out = retint_skin(image, mask, "darker")
    lightness = out.astype(float).mean(-1)
    before = image.astype(float).mean(-1)
    skin_shift = (lightness - before)[~mask].mean()
    assert abs((lightness - before)[margin].mean() - skin_shift) < 0.15 * abs(skin_shift)
    assert 0.3 < (lightness - before)[rim].mean() / skin_shift < 0.7
    assert np.array_equal(out[lesion], image[lesion])


def test_retint_augmentation_draws_alike_and_tints_within_the_range() -> None:
    import torch

    from classndiff.training.augment import RETINT_ITA_RANGE, retint_augment

    image, lesion = photo(3)
    rgb = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1
    batch = torch.cat([rgb, torch.from_numpy(lesion)[None].float()])[None].repeat(6, 1, 1, 1)
    off, on = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(retint_augment(batch, 0.0, off), batch)
    tinted = retint_augment(batch, 1.0, on)
    assert torch.equal(off.get_state(), on.get_state())  # same draws whatever is applied
    assert torch.equal(tinted[:, 3], batch[:, 3])  # the mask rides along unchanged
    itas = []
    for x in tinted:
        pixels = ((x[:3].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
        itas.append(skin_ita(pixels, lesion))
        assert np.array_equal(pixels[lesion], image[lesion])
    low, high = RETINT_ITA_RANGE
    assert all(low - 3 < v < high + 3 for v in itas)
    assert np.ptp(itas) > 20  # different tones, not one


def test_retint_leaves_images_without_skin_or_lesion_finite() -> None:
    """A mask covering the whole image (no skin) is returned unchanged; one with no lesion
    is all skin; neither may produce NaN (it would poison a training batch)."""
    import torch

    from classndiff.trust.skintone import retint_skin_torch

    image, _ = photo(4)
    rgb = torch.from_numpy(image).permute(2, 0, 1)[None].float().repeat(2, 1, 1, 1) / 255
    masks = torch.stack([torch.ones(1, 64, 64, dtype=torch.bool),
                         torch.zeros(1, 64, 64, dtype=torch.bool)])
    out = retint_skin_torch(rgb, masks, torch.tensor([-15.0, -15.0]), torch.tensor([24.0, 24.0]))
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], rgb[0])
    assert out[1].mean() < rgb[1].mean() - 0.1


def test_tone_consistency_is_zero_for_equal_answers_and_pulls_only_the_retinted_view() -> None:
    import torch

    from classndiff.training.losses import tone_consistency_loss

    logits = torch.randn(5, 7)
    assert float(tone_consistency_loss(logits, logits.clone())) == pytest.approx(0, abs=1e-6)
    original = logits.clone().requires_grad_()
    retinted = torch.randn(5, 7, requires_grad=True)
    loss = tone_consistency_loss(original, retinted)
    assert float(loss.detach()) > 0
    loss.backward()
    assert original.grad is None or not original.grad.any()  # the original is held fixed
    assert retinted.grad.abs().sum() > 0


def test_training_with_tone_consistency_pairs_views_that_differ_in_tone_alone(
        tiny_config, tmp_path) -> None:
    """The re-tinted view gets the same flips, turns and camera jitter as the original: where
    an image has no skin to re-tint (mask all ones) the two views are identical; elsewhere
    only the skin differs. The term is logged and trains."""
    import torch

    from classndiff.training.trainer import Trainer

    config = tiny_config.override({"train.tone_consistency": 1.0,
                                   "train.classifier_augment": "strong"})
    trainer = Trainer(config, tmp_path)
    batch = trainer.next_batch()
    assert batch.cls_retinted is not None and batch.cls_retinted.shape == batch.cls_input.shape
    assert (batch.cls_retinted - batch.cls_input).abs().amax() > 1e-3  # the skin moved
    # The pairing: a "re-tinted" view equal to the original comes out of the jitter equal.
    images = torch.rand(6, 4, 32, 32) * 2 - 1
    first, second = trainer.classifier_views(images, images.clone())
    assert torch.equal(first, second)
    again, _ = trainer.classifier_views(images, None)
    assert not torch.equal(first, again)  # the generator moved on: new draws each batch
    trainer.train()
    header, *rows = (tmp_path / "log.csv").read_text().splitlines()
    values = dict(zip(header.split(","), rows[0].split(",")))
    assert float(values["consistency"]) > 0


def test_tone_distillation_pulls_both_views_to_the_teachers_reading() -> None:
    """With a frozen teacher, the term is zero only where BOTH views give the teacher's
    answer (agreeing with each other on some flatter answer is not enough), and no gradient
    reaches the teacher."""
    import torch

    from classndiff.training.losses import tone_distillation_loss

    teacher = torch.tensor([[4.0, 0, 0, 0, 0, 0, -1]]).repeat(3, 1).requires_grad_()
    assert tone_distillation_loss(teacher, teacher.clone(), teacher.clone()).item() == \
        pytest.approx(0, abs=1e-6)
    flat = torch.zeros(3, 7, requires_grad=True)  # the views agree, but flatter than the teacher
    retinted = torch.zeros(3, 7, requires_grad=True)
    loss = tone_distillation_loss(teacher, flat, retinted)
    assert float(loss.detach()) > 0.5
    loss.backward()
    assert teacher.grad is None or not teacher.grad.any()
    assert flat.grad.abs().sum() > 0 and retinted.grad.abs().sum() > 0


def test_training_with_a_tone_teacher_keeps_the_teacher_frozen(
        tiny_config, tiny_weights, tmp_path) -> None:
    """train.tone_consistency_teacher: the named folder's classifier gives the target; it stays
    unchanged (weights and batch-norm statistics) while the model trains; the term is logged."""
    import torch

    from classndiff.training.trainer import Trainer

    config = tiny_config.override({"train.tone_consistency": 1.0,
                                   "train.tone_consistency_teacher": str(tiny_weights)})
    trainer = Trainer(config, tmp_path)
    teacher = trainer.accelerator.unwrap_model(trainer.model).tone_teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer.train()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    header, *rows = (tmp_path / "log.csv").read_text().splitlines()
    values = dict(zip(header.split(","), rows[0].split(",")))
    assert float(values["consistency"]) > 0


def test_a_tone_teachers_target_is_sharpened_by_its_temperature(
        tiny_config, tiny_weights, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.tone_consistency_temperature T: the target is the teacher's logits ÷ T; a
    temperature without a teacher, or T ≤ 0, is refused before training."""
    import torch

    from classndiff.training import losses
    from classndiff.training.trainer import Trainer

    readings, targets = [], []
    read, distil = losses.teacher_reading, losses.tone_distillation_loss
    monkeypatch.setattr(losses, "teacher_reading",
                        lambda *a: readings.append(read(*a)) or readings[-1])
    monkeypatch.setattr(losses, "tone_distillation_loss",
                        lambda target, *a: targets.append(target) or distil(target, *a))
    config = tiny_config.override({"train.tone_consistency": 1.0,
                                   "train.tone_consistency_teacher": str(tiny_weights),
                                   "train.tone_consistency_temperature": 0.5,
                                   "train.max_steps": 1})
    Trainer(config, tmp_path / "run").train()
    assert readings and len(readings) == len(targets)
    assert torch.allclose(targets[0], readings[0] / 0.5)
    for bad in ({"train.tone_consistency_temperature": 0.0},
                {"train.tone_consistency_teacher": None}):
        with pytest.raises(ValueError, match="tone_consistency_te"):
            Trainer(config.override(bad), tmp_path / "refused")


def to_pixels(image: np.ndarray):  # noqa: ANN201
    import torch

    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.mark.parametrize("target", list(RETINT_TARGETS))
def test_skin_normalisation_undoes_a_retint_and_keeps_the_lesion(target: str) -> None:
    """normalise_skin_tone finds the lesion without a mask (also a pale one on darker skin)
    and moves the skin to the reference: an image and its re-tint come out alike."""
    from kornia.color import rgb_to_lab

    from classndiff.trust.skintone import normalise_skin_tone, segment_by_contrast

    image, lesion = photo()
    retinted = retint_skin(image, lesion, target)
    reference = (45.0, 18.0)
    a, b = (normalise_skin_tone(to_pixels(x), reference) for x in (image, retinted))
    apart_before = (to_pixels(image) - to_pixels(retinted)).abs().mean()
    assert (a - b).abs().mean() < 0.2 * apart_before
    back = ((a[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    assert skin_ita(back, lesion) == pytest.approx(reference[0], abs=3)
    assert np.abs(back[lesion].astype(int) - image[lesion]).mean() < 2  # the lesion kept
    pale = np.where(lesion[..., None], 200, retint_skin(image, lesion, "darker")).astype(np.uint8)
    found = segment_by_contrast(rgb_to_lab(to_pixels(pale) / 2 + 0.5)[0].numpy())
    assert (found & lesion).sum() / (found | lesion).sum() > 0.8


def test_skin_normalisation_leaves_an_image_without_a_lesion_alone() -> None:
    from classndiff.trust.skintone import normalise_skin_tone

    flat = np.full((32, 32, 3), 180, np.uint8)
    assert np.array_equal(normalise_skin_tone(to_pixels(flat), (45.0, 18.0)), to_pixels(flat))


@pytest.mark.parametrize("target", list(RETINT_TARGETS))
def test_whole_field_retint_reaches_the_tone_and_keeps_the_lesion_contrast(target: str) -> None:
    """The whole-field re-tint darkens the lesion with its skin: the skin reaches the target
    ITA, the lesion stays darker than the skin (a skin-only re-tint of a faint lesion makes
    it paler), and each pixel keeps its ratio to the skin in linear light."""
    from classndiff.trust.fairness import lesion_paler_than_skin, retint_many

    image, lesion = photo(5)
    faint = image.copy()
    faint[lesion] = (0.75 * image[~lesion].mean(0) + 0.25 * image[lesion]).astype(np.uint8)
    field = retint_many(faint[None], lesion[None], target, whole_field=True)[0]
    assert skin_ita(field, lesion) == pytest.approx(RETINT_TARGETS[target][0], abs=3)
    assert not lesion_paler_than_skin(faint, lesion)
    assert not lesion_paler_than_skin(field, lesion)
    assert field[lesion].mean() < faint[lesion].mean()  # the lesion darkened too
    if target == "darker":
        assert lesion_paler_than_skin(retint_skin(faint, lesion, target), lesion)

    def linear(x: np.ndarray) -> np.ndarray:
        c = x.astype(float) / 255
        return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)

    skin = ~lesion
    ratio_before = linear(faint)[lesion].mean(0) / linear(faint)[skin].mean(0)
    ratio_after = linear(field)[lesion].mean(0) / linear(field)[skin].mean(0)
    assert ratio_after == pytest.approx(ratio_before, rel=0.08)


def test_flip_report_counts_flips_apart_for_inverted_lesions() -> None:
    before = np.eye(7)[[4, 5, 5, 1]] * 0.9 + 0.1 / 7
    after = np.eye(7)[[5, 5, 4, 1]] * 0.9 + 0.1 / 7
    report = flip_report(before, after, np.array([4, 5, 5, 1]),
                         inverted=np.array([True, False, False, True]))
    assert report["flip_rate_by_contrast"] == {"kept": {"n": 2, "flip_rate": 0.5},
                                               "inverted": {"n": 2, "flip_rate": 0.5}}
    assert "flip_rate_by_contrast" not in flip_report(before, after, np.array([4, 5, 5, 1]))


def test_retint_augmentation_can_tint_the_whole_field() -> None:
    """whole_field = 1: every re-tinted image gets the whole-field re-tint (the lesion
    darkened with its skin); 0 draws exactly as before (same images, same generator state)."""
    import torch

    from classndiff.training.augment import retint_augment

    image, lesion = photo(6)
    rgb = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1
    batch = torch.cat([rgb, torch.from_numpy(lesion)[None].float()])[None].repeat(4, 1, 1, 1)
    drawn = torch.Generator().manual_seed(2)
    plain = retint_augment(batch, 1.0, drawn)
    zero = torch.Generator().manual_seed(2)
    assert torch.equal(retint_augment(batch, 1.0, zero, whole_field=0.0), plain)
    assert torch.equal(zero.get_state(), drawn.get_state())
    field = retint_augment(batch, 1.0, torch.Generator().manual_seed(2), whole_field=1.0)
    inside = torch.from_numpy(lesion).expand(4, 3, -1, -1)
    assert torch.equal(plain[:, :3][inside], batch[:, :3][inside])  # skin only: lesion kept
    assert not torch.equal(field[:, :3][inside], batch[:, :3][inside])  # whole field: moved
    assert torch.equal(field[:, 3], batch[:, 3])


def test_whole_field_share_is_refused_out_of_range_or_without_retint(
        tiny_config, tmp_path) -> None:
    from classndiff.training.trainer import Trainer

    for bad in ({"train.classifier_retint_whole_field": 1.5},
                {"train.classifier_retint_whole_field": 0.5, "train.classifier_retint": 0.0}):
        with pytest.raises(ValueError, match="classifier_retint_whole_field"):
            Trainer(tiny_config.override(bad), tmp_path / "refused")


def test_the_trainer_passes_the_whole_field_share_to_the_augmentation(
        tiny_config, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from classndiff.training import trainer as trainer_module

    shares = []
    real = trainer_module.retint_augment
    monkeypatch.setattr(trainer_module, "retint_augment",
                        lambda *a: shares.append(a[3]) or real(*a))
    config = tiny_config.override({"train.classifier_retint": 0.5,
                                   "train.classifier_retint_whole_field": 0.25,
                                   "train.max_steps": 1})
    trainer_module.Trainer(config, tmp_path / "run").train()
    assert shares and set(shares) == {0.25}


def test_a_diagnosis_on_darker_skin_carries_the_weights_whole_field_figures(tiny_pipe) -> None:
    """skin_tone_counterfactual --apply's record → Diagnosis.extras["skin_tone_check"] for
    an upload whose skin is estimated darker, with the answer's own confidence band; none
    for lighter skin or weights without the record."""
    from dataclasses import replace

    from PIL import Image

    from classndiff.pipelines.pipeline import ClassNDiffPipeline
    from classndiff.trust.fairness import skin_tone_check_record

    report = {"n": 10, "flip_rate": 0.2, "malignant_sensitivity_before": 0.6,
              "malignant_sensitivity_after": 0.4, "flip_rate_by_confidence": [
                  {"top_probability": [0.0, 0.5], "n": 4, "flip_rate": 0.5},
                  {"top_probability": [0.5, 0.8], "n": 3, "flip_rate": 0.0},
                  {"top_probability": [0.8, 1.0], "n": 3, "flip_rate": 0.0}]}
    config = replace(tiny_pipe.config)
    config.extra = {**tiny_pipe.config.extra}
    config.skin_tone_check = skin_tone_check_record({"darker": report}, "test",
                                                    tiny_pipe.temperature, tiny_pipe.test_views)
    pipe = ClassNDiffPipeline(tiny_pipe.model, config, tiny_pipe.device, tiny_pipe.vae)
    dark = np.ones((64, 64, 3)) * np.array([112, 78, 55])  # skin L* ≈ 36, b* ≈ 20: ITA < 10°
    yy, xx = np.mgrid[:64, :64]
    dark[(yy - 32) ** 2 + (xx - 32) ** 2 < 12 ** 2] = [45, 28, 20]
    image = Image.fromarray(dark.astype(np.uint8))
    d = pipe.diagnose(image, abstain=False)
    assert d.skin_tone["group"] == "darker"
    check = d.extras["skin_tone_check"]
    low, high = check["band"]
    assert low <= d.confidence < high or (high == 1.0 and d.confidence >= low)
    expected = {0.0: 0.5, 0.5: 0.0, 0.8: 0.0}[low]
    assert (check["flip_rate"], check["band_flip_rate"], check["sensitivity_after"]) == (
        0.2, expected, 0.4)
    light = Image.fromarray(np.where(dark == [112, 78, 55], [236, 200, 186], dark)
                            .astype(np.uint8))
    assert pipe.diagnose(light, abstain=False).skin_tone["group"] == "lighter"
    assert "skin_tone_check" not in pipe.diagnose(light, abstain=False).extras
    assert "skin_tone_check" not in tiny_pipe.diagnose(image, abstain=False).extras
    # Measured with another temperature (re-calibrated since): another model's figures.
    config.extra["skin_tone_check"]["temperature"] = pipe.temperature + 0.5
    assert "skin_tone_check" not in pipe.diagnose(image, abstain=False).extras
    config.extra["skin_tone_check"]["temperature"] = pipe.temperature
    assert "skin_tone_check" in pipe.diagnose(image, abstain=False).extras


def test_a_split_without_malignant_lesions_records_no_sensitivity() -> None:
    from classndiff.trust.fairness import skin_tone_check_record

    report = {"n": 3, "flip_rate": 0.0, "malignant_sensitivity_before": float("nan"),
              "malignant_sensitivity_after": float("nan"), "flip_rate_by_confidence": []}
    record = skin_tone_check_record({"darker": report}, "test")
    assert record.groups["darker"]["sensitivity_before"] is None


def test_colour_constancy_reads_a_whole_field_retint_as_the_original(tiny_config) -> None:
    """With `model.classifier_colour_constancy` the classifier's answer is the same for an
    image and its whole-field re-tint (one gain per channel in linear light, the test's second
    proxy; also a change of illuminant), where without it the answer moves; a p < 1 is
    refused."""
    import torch

    from classndiff.models.classifier import LesionClassifier
    from classndiff.trust.fairness import retint_many

    image, lesion = photo(7)
    darker = retint_many(image[None], lesion[None], "darker", whole_field=True)[0]
    x = torch.from_numpy(np.stack([image, darker])).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.manual_seed(0)
    plain = LesionClassifier(tiny_config.model).eval()
    constant = LesionClassifier(tiny_config.override(
        {"model.classifier_colour_constancy": 6.0}).model).eval()
    constant.load_state_dict(plain.state_dict())
    with torch.no_grad():
        moved, kept = plain(x), constant(x)
    assert not torch.allclose(moved[0], moved[1], atol=1e-3)
    # uint8 rounding and the few clipped pixels of the re-tint are all that differ.
    assert torch.allclose(kept[0], kept[1], atol=0.05 * kept[0].abs().max().item())
    with pytest.raises(ValueError, match="Minkowski"):
        LesionClassifier(tiny_config.override({"model.classifier_colour_constancy": 0.5}).model)
