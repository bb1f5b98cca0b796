"""The lesion-focus term and the dilated classifier: the differentiable CAM is Grad-CAM,
`energy_in_mask` is the saliency bar's arithmetic, the term pulls the map into the mask,
masks travel with their images through augmentation, and a classifier-only fine-tune leaves
the denoiser untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from classndiff.config import ClassNDiffConfig
from classndiff.data import LesionDataset
from classndiff.evaluation.saliency import _mask_as_cam, mask_energy
from classndiff.explain.saliency import SaliencyExplainer, find_target_layer
from classndiff.models.classifier import LesionClassifier, scale_like_grad_cam
from classndiff.models.diffusion import NoiseSchedule
from classndiff.models.joint import ClassNDiff
from classndiff.training.losses import Batch, energy_in_mask, joint_loss
from classndiff.training.trainer import (
    Trainer,
    check_cam_head,
    predict_dataset,
    validation_saliency,
)


def square_masks(n: int, size: int, lo: int, hi: int) -> torch.Tensor:
    masks = torch.zeros(n, 1, size, size)
    masks[..., lo:hi, lo:hi] = 1
    return masks


def test_output_stride_16_doubles_the_cam_grid(tiny_config: ClassNDiffConfig) -> None:
    sides = []
    for stride in (32, 16):
        config = tiny_config.override({"model.classifier_output_stride": stride})
        classifier = LesionClassifier(config.model).eval()
        _, feature_map = classifier.forward_with_maps(torch.zeros(1, 3, 32, 32))
        sides.append(feature_map.shape[-1])
        name, _ = find_target_layer(classifier.backbone, 3, config.model.classifier_image_size)
    assert sides[1] == 2 * sides[0]
    # The dilated last stage is wide enough to be the CAM layer: Grad-CAM is taken on the
    # very map the focus term trains (at 32 px the undilated one is 1×1 and is passed over).
    assert name == "layer4"


def test_class_activation_map_is_grad_cam(tiny_config: ClassNDiffConfig) -> None:
    """With a pooled linear head, ReLU(Σ w_ck A_k) is pytorch-grad-cam's Grad-CAM at the last
    map up to a positive factor: after the same min/max scaling they agree."""
    config = tiny_config.override({"model.classifier_output_stride": 16})
    torch.manual_seed(0)
    classifier = LesionClassifier(config.model).eval()
    pixels = torch.rand(3, 3, 32, 32) * 2 - 1
    classes = torch.tensor([0, 3, 6])
    from classndiff.explain.saliency import ClassTarget

    explainer = SaliencyExplainer(classifier)
    grad_cam, _ = explainer.maps(pixels, [ClassTarget(int(c)) for c in classes], "gradcam")
    with torch.no_grad():
        _, feature_map = classifier.forward_with_maps(pixels)
        cams = classifier.class_activation_maps(feature_map, classes)
    for ours, theirs in zip(cams, grad_cam):
        up = torch.nn.functional.interpolate(ours[None, None], size=(32, 32), mode="bilinear",
                                             align_corners=False)[0, 0].numpy()
        up = (up - up.min()) / (up.max() - up.min() + 1e-7)
        np.testing.assert_allclose(up, theirs, atol=0.02)


def classifier_and_pixels(tiny_config: ClassNDiffConfig, seed: int,
                          n: int) -> tuple[LesionClassifier, torch.Tensor]:
    """A tiny classifier with an 8×8 last map at 64 px, and `n` random images for it."""
    config = tiny_config.override({"model.classifier_output_stride": 16,
                                   "model.classifier_image_size": 64, "model.pixel_size": 64})
    torch.manual_seed(seed)
    return LesionClassifier(config.model).eval(), torch.rand(n, 3, 64, 64) * 2 - 1


def test_scaled_map_is_what_pytorch_grad_cam_returns(tiny_config: ClassNDiffConfig) -> None:
    """`scale_like_grad_cam` on our CAM reproduces pytorch-grad-cam's output pixel for pixel,
    so the training-time measure is the bar's measure."""
    classifier, pixels = classifier_and_pixels(tiny_config, 1, 4)
    from classndiff.explain.saliency import ClassTarget

    with torch.no_grad():
        logits, feature_map = classifier.forward_with_maps(pixels)
    predicted = logits.argmax(1)
    theirs, _ = SaliencyExplainer(classifier, native=False).maps(
        pixels, [ClassTarget(int(c)) for c in predicted], "gradcam")
    ours = scale_like_grad_cam(classifier.class_activation_maps(feature_map, predicted), (64, 64))
    np.testing.assert_allclose(ours[:, 0].detach().numpy(), theirs, atol=2e-3)


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
@pytest.mark.parametrize("target", [None, "malignant", "bcc"])
def test_grad_cam_without_pytorch_grad_cam_gives_its_maps(tiny_config: ClassNDiffConfig,
                                                          method: str, target: str | None) -> None:
    """The explainer's own Grad-CAM (used where the head average-pools into a linear layer, so
    a diagnosis never imports pytorch-grad-cam) gives pytorch-grad-cam's maps and logits, for
    the predicted class, the malignant log-odds and a named class."""
    from classndiff.explain.saliency import make_target

    classifier, pixels = classifier_and_pixels(tiny_config, 2, 3)
    with torch.no_grad():
        predicted = classifier(pixels).argmax(1)
    targets = [make_target(target, int(c))[0] for c in predicted]
    native = SaliencyExplainer(classifier)
    assert native.native
    ours, our_logits = native.maps(pixels, targets, method)
    theirs, their_logits = SaliencyExplainer(classifier, native=False).maps(pixels, targets,
                                                                             method)
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    torch.testing.assert_close(our_logits, their_logits, atol=1e-4, rtol=1e-4)


def test_grad_cam_falls_back_to_pytorch_grad_cam_for_other_heads(
        tiny_config: ClassNDiffConfig) -> None:
    classifier = LesionClassifier(tiny_config.override(
        {"model.classifier_backbone": "test_vit"}).model)
    assert not SaliencyExplainer(classifier).native


def test_focus_term_refuses_a_head_whose_cam_is_not_grad_cam(tiny_config: ClassNDiffConfig,
                                                             tmp_path: Path) -> None:
    for backbone in ("test_convnext", "test_vit"):
        config = tiny_config.override({"train.lambda_saliency": 1.0,
                                       "model.classifier_backbone": backbone})
        with pytest.raises(ValueError):
            Trainer(config, tmp_path / backbone)
    with pytest.raises(ValueError, match="joint step"):
        Trainer(tiny_config.override({"train.lambda_saliency": 1.0}), tmp_path / "up",
                step_kind="upstream")
    check_cam_head(LesionClassifier(tiny_config.model))  # a ResNet passes


def test_class_activation_maps_need_a_linear_head(tiny_config: ClassNDiffConfig) -> None:
    classifier = LesionClassifier(tiny_config.model)
    classifier.backbone.reset_classifier(0)  # an Identity head
    with pytest.raises(ValueError, match="linear head"):
        classifier.class_activation_maps(torch.ones(1, 8, 2, 2), torch.tensor([0]))


def test_energy_in_mask_matches_the_bar_arithmetic() -> None:
    masks = square_masks(1, 32, 8, 24)
    inside = torch.zeros(1, 8, 8)
    inside[:, 3:5, 3:5] = 1
    outside = torch.zeros(1, 8, 8)
    outside[:, 0, 0] = 1
    assert energy_in_mask(inside, masks).item() > 0.95
    assert energy_in_mask(outside, masks).item() < 0.05
    assert torch.isnan(energy_in_mask(torch.zeros(1, 8, 8), masks)).all()  # an empty map
    # The same number saliency.mask_energy gives for a map scaled as pytorch-grad-cam does.
    mask = masks[0, 0].numpy() > 0
    reference = _mask_as_cam(mask, (8, 8))
    small = torch.nn.functional.adaptive_avg_pool2d(masks[0], (8, 8))
    assert energy_in_mask(small, masks).item() == pytest.approx(mask_energy(reference, mask),
                                                               abs=1e-4)


def focus_batch(config: ClassNDiffConfig, n: int = 8) -> Batch:
    g = torch.Generator().manual_seed(0)
    m = config.model
    pixels = torch.rand(n, 3, m.pixel_size, m.pixel_size, generator=g) * 2 - 1
    small = torch.nn.functional.interpolate(pixels, size=m.image_size, mode="bilinear")
    side = m.pixel_size
    return Batch(small, pixels, torch.arange(n) % 7, torch.arange(n) % 3, torch.arange(n) % 2,
                 mask=square_masks(n, side, side // 4, side * 5 // 8))


def test_focus_term_moves_the_map_into_the_mask(tiny_config: ClassNDiffConfig) -> None:
    """Same seed, same batch, same steps: with the term on, the predicted class's map puts
    far more of its energy inside the mask than without it."""
    base = tiny_config.override({"model.classifier_output_stride": 16, "train.learning_rate": 0.0,
                                 "model.classifier_image_size": 64, "model.pixel_size": 64})

    def energy_after_training(lambda_saliency: float) -> float:
        config = base.override({"train.lambda_saliency": lambda_saliency})
        torch.manual_seed(0)
        model = ClassNDiff(config.model)
        schedule = NoiseSchedule(config.model)
        batch = focus_batch(config)
        optimizer = torch.optim.AdamW(model.classifier.parameters(), lr=1e-3)
        model.train()
        for _ in range(25):
            out = joint_loss(model, batch, schedule, config.train,
                             generator=torch.Generator().manual_seed(1))
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits, feature_map = model.classifier.forward_with_maps(batch.cls_input)
            cams = model.classifier.class_activation_maps(feature_map, logits.argmax(1))
        return float(energy_in_mask(cams, batch.mask).nanmean())

    without, with_term = energy_after_training(0.0), energy_after_training(5.0)
    assert with_term > without + 0.2, (without, with_term)


def test_focus_term_is_off_by_default(tiny_config: ClassNDiffConfig) -> None:
    model = ClassNDiff(tiny_config.model)
    out = joint_loss(model, focus_batch(tiny_config), NoiseSchedule(tiny_config.model),
                     tiny_config.train)
    assert float(out["focus"]) == 0.0


def test_frozen_denoiser_gets_no_gradient(tiny_config: ClassNDiffConfig) -> None:
    config = tiny_config.override({"train.learning_rate": 0.0, "train.lambda_saliency": 1.0})
    model = ClassNDiff(config.model)
    out = joint_loss(model, focus_batch(config), NoiseSchedule(config.model), config.train)
    out["loss"].backward()
    assert all(p.grad is None for p in model.denoiser.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.classifier.parameters())


def test_masks_load_aligned_and_missing_ones_are_no_constraint(tiny_data: Path,
                                                               tmp_path: Path) -> None:
    data = LesionDataset(tiny_data, "train", image_size=32, masks=True)
    assert data.masks.shape == (len(data), 1, 32, 32) and data.masks.dtype == torch.uint8
    assert bool(data.has_mask.all())
    # conftest's masks are the square [10, 30) of 40 px → [8, 24) at 32 px
    assert data.masks[0, 0, 16, 16] == 1 and data.masks[0, 0, 2, 2] == 0
    import shutil

    copy = tmp_path / "ham"
    shutil.copytree(tiny_data, copy)
    (copy / "masks" / f"{data.image_ids[0]}.png").unlink()
    partial = LesionDataset(copy, "train", image_size=32, masks=True)
    assert not bool(partial.has_mask[0]) and bool(partial.masks[0].eq(1).all())
    assert LesionDataset(tiny_data, "train", image_size=32).masks is None


def test_masks_are_augmented_with_their_images(tiny_config: ClassNDiffConfig,
                                               tmp_path: Path) -> None:
    """An off-centre lesion (top-left quadrant, dark) and its mask: whatever flip or turn a
    batch image gets, the mask still sits on the dark pixels."""
    config = tiny_config.override({"train.lambda_saliency": 1.0})
    trainer = Trainer(config, tmp_path)
    images = trainer.train_images
    images[:, :3] = 230
    images[:, 3] = 0
    images[:, :3, :10, :6] = 20
    images[:, 3, :10, :6] = 1
    seen = set()
    for _ in range(4):
        batch = trainer.next_batch()
        dark = batch.cls_input.mean(1, keepdim=True) < 0
        assert torch.equal(dark, batch.mask.bool())
        seen.update(tuple(m.nonzero()[0].tolist()) for m in batch.mask[:, 0])
    assert len(seen) > 1  # the lesion really moved


def test_classifier_fine_tune_logs_focus_and_keeps_the_denoiser(
    tiny_config: ClassNDiffConfig, tiny_weights: Path, tmp_path: Path
) -> None:
    config = tiny_config.override({"model.classifier_output_stride": 16,
                                   "train.lambda_saliency": 1.0, "train.learning_rate": 0.0})
    trainer = Trainer(config, tmp_path, init_from=tiny_weights)
    trainer.train()
    header, *rows = (tmp_path / "log.csv").read_text().splitlines()
    assert "focus" in header and "val_energy_in_mask" in header and "val_cam_iou" in header
    last = dict(zip(header.split(","), rows[-1].split(",")))
    assert 0 <= float(last["val_cam_iou"]) <= 1 and float(last["focus"]) > 0
    exported = load_file(str(tmp_path / "model.safetensors"))
    source = load_file(str(tiny_weights / "model.safetensors"))
    for key, value in source.items():
        if key.startswith("denoiser."):
            torch.testing.assert_close(exported[key].float(), value.float())
    probabilities, found = validation_saliency(trainer.ema.module, trainer.val_set)
    np.testing.assert_allclose(probabilities,  # one pass: the same as the plain prediction
                               predict_dataset(trainer.ema.module, trainer.val_set.images),
                               atol=1e-6)
    assert 0 <= found["empty_maps"] <= 1 and 0 <= found["cam_iou"] <= 1
    saved = ClassNDiffConfig.from_json(tmp_path / "config.json")
    assert saved.model.classifier_output_stride == 16


@pytest.mark.parametrize("beaten", [False, True])
def test_fine_tune_appends_its_stage_to_the_training_history(
    tiny_config: ClassNDiffConfig, tiny_weights: Path, tmp_path: Path, beaten: bool
) -> None:
    """A fine-tune appends its stage; the classifier's stage is the new one only when the
    fine-tune beat the starting classifier on validation."""
    start = ClassNDiffConfig.from_json(tiny_weights / "config.json")
    first = start.extra["training"]
    # A frozen classifier can never beat itself; a starting score of −∞ is always beaten.
    overrides = {"train.max_steps": 2, "train.eval_every": 100}
    if not beaten:
        overrides["train.classifier_learning_rate"] = 0.0
    trainer = Trainer(start.override(overrides), tmp_path,
                      init_from=tiny_weights, command="classndiff train --init-from x")
    if beaten:
        trainer.best_score = -float("inf")
    trainer.train()
    record = ClassNDiffConfig.from_json(tmp_path / "config.json").extra["training"]
    assert record["stages"][0] == first and len(record["stages"]) == 2
    stage = record["stages"][1]
    assert stage["step"] == 2 and stage["command"] == "classndiff train --init-from x"
    assert stage["wall_seconds"] > 0 and stage["images_seen"] == 2 * start.train.batch_size
    assert stage["hardware"] == f"CPU, {torch.get_num_threads()} threads"  # said in the card
    if beaten:
        assert record["classifier_stage"] == 2 and record["classifier_step"] == 2
    else:
        assert record["classifier_stage"] == 1
        assert record["classifier_step"] == first["classifier_step"]
