"""Saliency: every CAM method on the tiny model, the targets (predicted, chosen, malignant),
the target layer found from the backbone, the overlay, and the mask-energy arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from classndiff import ClassNDiffArgumentError
from classndiff.evaluation.saliency import mask_energy, measure_latency, measure_mask_energy
from classndiff.explain.saliency import (
    CAM_METHODS,
    ClassTarget,
    MalignantTarget,
    SaliencyExplainer,
    find_target_layer,
    make_target,
    normalize_method,
    overlay_map,
)
from classndiff.labels import DX_CODES, MALIGNANT_DX
from tests.conftest import make_lesion


def lesion(seed: int = 0, size: int = 64) -> Image.Image:
    return Image.fromarray(make_lesion(np.random.default_rng(seed), 2, size=size))


def pixels_of(pipe, seed: int = 0) -> torch.Tensor:  # noqa: ANN001
    return pipe.load(lesion(seed))


# ------------------------------------------------------------------ every method
@pytest.mark.parametrize("method", CAM_METHODS)
def test_each_method_gives_a_map_in_0_1_at_input_resolution(tiny_pipe, method: str) -> None:
    size = tiny_pipe.config.model.pixel_size
    d = tiny_pipe.diagnose(lesion(), saliency=True, cam_method=method)
    s = d.saliency
    assert s is not None and s.method == method and s.target == d.prediction
    assert s.map.shape == (size, size) and s.map.dtype == np.float32
    assert np.isfinite(s.map).all() and s.map.min() >= 0 and s.map.max() <= 1
    # normalised and not flat: a 1×1 feature map (the last layer of a small net on a small
    # input) would give a constant map, which says nothing
    assert s.map.max() == pytest.approx(1.0, abs=1e-3) and s.map.std() > 0.01
    assert isinstance(s.overlay, Image.Image) and s.overlay.size == (size, size)
    assert d.to_dict()["saliency"] == {"method": method, "target": s.target, "layer": s.layer}
    # and at another input resolution the map follows the input, not the classifier
    big = F.interpolate(pixels_of(tiny_pipe), size=(48, 48), mode="bilinear")
    cams, logits = tiny_pipe.explainer.maps(big, None, method)
    assert cams.shape == (1, 48, 48) and logits.shape == (1, len(DX_CODES))
    assert cams.min() >= 0 and cams.max() <= 1


def test_grad_cam_matches_the_definition(tiny_pipe) -> None:
    """ReLU(Σ_k mean(∂y/∂A_k)·A_k) at the target layer, upsampled and scaled to [0, 1] —
    computed here by hand, with autograd, against the (cached, hook-swapping) explainer."""
    explainer = SaliencyExplainer(tiny_pipe.model.classifier)
    pixels = pixels_of(tiny_pipe, 3)
    target = ClassTarget(4)
    cams, _ = explainer.maps(pixels, [target], "gradcam")
    store = {}

    def keep(_module, _inputs, output):  # noqa: ANN001, ANN202
        output.retain_grad()
        store["a"] = output

    handle = explainer.layer.register_forward_hook(keep)
    try:
        classifier = tiny_pipe.model.classifier.eval()
        with torch.enable_grad():
            target(classifier(pixels)[0]).backward()
    finally:
        handle.remove()
        classifier.zero_grad(set_to_none=True)
    a, grad = store["a"].detach(), store["a"].grad
    cam = torch.relu((grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
    cam = F.interpolate(cam, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
    cam = ((cam - cam.min()) / (cam.max() - cam.min() + 1e-7))[0, 0].numpy()
    assert np.abs(cams[0] - cam).max() < 2e-3


def test_cams_leave_no_trace_on_the_model(tiny_pipe) -> None:
    explainer = tiny_pipe.explainer
    pixels = pixels_of(tiny_pipe)
    before = tiny_pipe.logits(pixels)
    for method in ("gradcam", "scorecam"):
        explainer.maps(pixels, None, method)
    recorder = explainer.cam("gradcam").activations_and_grads
    tiny_pipe.logits(pixels)  # plain classification records nothing
    assert recorder.activations == [] or len(recorder.activations) == 1
    count = len(recorder.activations)
    tiny_pipe.logits(pixels)
    assert len(recorder.activations) == count
    assert all(p.grad is None for p in tiny_pipe.model.parameters())
    assert not tiny_pipe.model.training
    assert torch.equal(before, tiny_pipe.logits(pixels))


# ------------------------------------------------------------------ targets
def test_malignant_target_is_the_log_odds_of_malignancy() -> None:
    target = MalignantTarget()
    malignant = [DX_CODES.index(c) for c in MALIGNANT_DX]
    assert sorted(malignant) == sorted(target.malignant) and len(target.benign) == 4
    logits = torch.randn(3, len(DX_CODES), generator=torch.Generator().manual_seed(0),
                         requires_grad=True)
    p = torch.softmax(logits, 1)
    p_malignant = p[:, malignant].sum(1)
    value = target(logits)
    assert torch.allclose(value, torch.log(p_malignant / (1 - p_malignant)), atol=1e-5)
    assert torch.allclose(target(logits + 7.0), value, atol=1e-5)  # a common shift: no change
    value.sum().backward()
    grad = logits.grad
    assert torch.allclose(grad[:, malignant].sum(1), torch.ones(3), atol=1e-5)
    assert torch.allclose(grad[:, target.benign].sum(1), -torch.ones(3), atol=1e-5)
    assert (grad[:, malignant] > 0).all() and (grad[:, target.benign] < 0).all()


def test_malignant_target_in_diagnose(tiny_pipe) -> None:
    d = tiny_pipe.diagnose(lesion(), saliency=True, cam_target="malignant")
    assert d.saliency.target == "malignant"
    assert d.saliency.map.max() == pytest.approx(1.0, abs=1e-3) and d.saliency.map.min() >= 0
    pixels = pixels_of(tiny_pipe)
    cams, _ = tiny_pipe.explainer.maps(pixels, [MalignantTarget()], "gradcam")
    assert np.allclose(cams[0], d.saliency.map, atol=1e-5)


def test_a_chosen_class_target(tiny_pipe) -> None:
    pixels = pixels_of(tiny_pipe)
    predicted = int(tiny_pipe.logits(pixels).argmax())
    assert make_target(None, predicted)[1] == DX_CODES[predicted]
    assert make_target("BCC", predicted)[1] == "bcc" and make_target(5, 0)[1] == DX_CODES[5]
    for bad in ("cancer", 7, -1, True, 2.5):
        with pytest.raises(ValueError):
            make_target(bad, predicted)
    other = (predicted + 1) % len(DX_CODES)
    s = tiny_pipe.diagnose(lesion(), saliency=True, cam_target=DX_CODES[other]).saliency
    assert s.target == DX_CODES[other]
    cams, _ = tiny_pipe.explainer.maps(pixels, [ClassTarget(other)], "gradcam")
    assert np.allclose(cams[0], s.map, atol=1e-5)
    by_index = tiny_pipe.diagnose(lesion(), saliency=True, cam_target=other).saliency
    assert np.allclose(by_index.map, s.map, atol=1e-5)
    predicted_map = tiny_pipe.diagnose(lesion(), saliency=True).saliency
    assert predicted_map.target == DX_CODES[predicted]
    with pytest.raises(ClassNDiffArgumentError, match="target"):
        tiny_pipe.diagnose(lesion(), saliency=True, cam_target="cancer")
    with pytest.raises(ClassNDiffArgumentError, match="CAM method"):
        tiny_pipe.diagnose(lesion(), saliency=True, cam_method="lime")


def test_method_names() -> None:
    assert normalize_method("Grad-CAM++") == "gradcam++" == normalize_method("gradcam_pp")
    assert normalize_method("HiResCAM") == "hirescam"
    assert normalize_method("Score CAM") == "scorecam"
    with pytest.raises(ValueError, match="unknown CAM method"):
        normalize_method("occlusion")


# ------------------------------------------------------------------ the target layer
@pytest.mark.parametrize(("backbone", "size", "layer"), [
    ("resnet10t", 128, "layer4"),
    ("efficientnet_b0", 128, "bn2"),
    ("convnext_atto", 128, "stages"),
    ("test_resnet", 128, "layer4"),
    ("test_resnet", 32, "layer3"),  # layer4 is 1×1 at 32 px: the deepest stage that is not
])
def test_target_layer_is_found_from_the_backbone(backbone: str, size: int, layer: str) -> None:
    model = timm.create_model(backbone, pretrained=False, num_classes=len(DX_CODES))
    name, module = find_target_layer(model, 3, size)
    assert name == layer and module is model.get_submodule(layer)
    assert model.training  # the probe restores the mode it found


def test_the_tiny_model_uses_a_layer_with_a_real_map(tiny_pipe) -> None:
    explainer = tiny_pipe.explainer
    assert explainer.layer_name == "layer3"
    assert SaliencyExplainer(tiny_pipe.model.classifier, layer="layer2").layer_name == "layer2"


# ------------------------------------------------------------------ overlay
def test_overlay_opacity_and_colormap() -> None:
    import matplotlib

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8))
    cam = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    base = np.asarray(image).astype(float)
    heat = matplotlib.colormaps["viridis"](cam)[..., :3] * 255  # the default
    assert np.array_equal(np.asarray(overlay_map(image, cam, 0.0)), np.asarray(image))
    assert np.abs(np.asarray(overlay_map(image, cam, 1.0)) - heat).max() <= 0.5 + 1e-6
    half = np.asarray(overlay_map(image, cam, 0.3)).astype(float)
    assert np.abs(half - (0.7 * base + 0.3 * heat)).max() <= 0.5 + 1e-6
    viridis = np.asarray(overlay_map(image, cam, 1.0, "viridis")).astype(float)
    assert np.abs(viridis - matplotlib.colormaps["viridis"](cam)[..., :3] * 255).max() <= 0.5 + 1e-6
    big = overlay_map(image.resize((32, 32)), cam, 0.5)  # the map follows the image's size
    assert big.size == (32, 32)
    for opacity in (-0.1, 1.5, "half"):
        with pytest.raises(ValueError, match="opacity"):
            overlay_map(image, cam, opacity)
    with pytest.raises(ValueError, match="colormap"):
        overlay_map(image, cam, 0.5, "no-such-map")


def test_overlay_opacity_through_diagnose(tiny_pipe) -> None:
    image = lesion()
    plain = tiny_pipe.diagnose(image, saliency=True, opacity=0.0).saliency.overlay
    assert np.array_equal(np.asarray(plain), np.asarray(image.resize((32, 32), Image.LANCZOS)))
    full = tiny_pipe.diagnose(image, saliency=True, opacity=1.0, colormap="gray")
    grey = np.asarray(full.saliency.overlay).astype(float)
    assert np.abs(grey[..., 0] - full.saliency.map * 255).max() <= 1.0
    with pytest.raises(ClassNDiffArgumentError, match="opacity"):
        tiny_pipe.diagnose(image, saliency=True, opacity=2)
    with pytest.raises(ClassNDiffArgumentError, match="colormap"):
        tiny_pipe.diagnose(image, saliency=True, colormap="rainbowz")


# ------------------------------------------------------------------ mask energy
def test_mask_energy_arithmetic() -> None:
    cam = np.zeros((4, 4), np.float32)
    cam[0, 0], cam[1, 1], cam[3, 3] = 1.0, 3.0, 4.0
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = True
    assert mask_energy(cam, mask) == pytest.approx(3 / 8)
    mask[3, 3] = True
    assert mask_energy(cam, mask) == pytest.approx(7 / 8)
    assert mask_energy(cam, np.ones((4, 4), bool)) == pytest.approx(1.0)
    assert mask_energy(cam, np.zeros((4, 4), bool)) == 0.0
    assert np.isnan(mask_energy(np.zeros((4, 4)), mask))
    uniform = np.ones((4, 4))
    assert mask_energy(uniform, mask) == pytest.approx(mask.mean())  # the baseline: the area


def test_mask_overlap_tells_a_spot_from_a_map_that_covers_the_lesion() -> None:
    from classndiff.evaluation.saliency import mask_overlap

    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    spot = np.zeros((8, 8))
    spot[3, 3] = 1.0
    cover = mask.astype(float)
    assert mask_energy(spot, mask) == mask_energy(cover, mask) == 1.0  # energy can't tell
    assert mask_overlap(spot, mask) == pytest.approx((1 / 16, 1 / 16))
    assert mask_overlap(cover, mask) == pytest.approx((1.0, 1.0))
    everywhere = np.ones((8, 8))
    assert mask_overlap(everywhere, mask) == pytest.approx((16 / 64, 1.0))


def test_mask_ceiling_at_a_layer_resolution() -> None:
    from classndiff.evaluation.saliency import _mask_as_cam

    mask = np.zeros((32, 32), bool)
    mask[:16, :16] = True  # one quarter, aligned with a 2×2 grid: exactly representable
    assert mask_energy(_mask_as_cam(mask, (2, 2)), mask) > 0.6
    assert mask_energy(_mask_as_cam(mask, (32, 32)), mask) == pytest.approx(1.0)
    coarse, fine = (mask_energy(_mask_as_cam(mask, g), mask) for g in ((2, 2), (8, 8)))
    assert coarse < fine


def test_measure_mask_energy_and_latency_run(tiny_pipe, tiny_data) -> None:
    result = measure_mask_energy(tiny_pipe, tiny_data, "test", batch_size=4)
    assert result["n"] == 7 and result["layer"] == "layer3"
    assert result["n_empty_maps"] < 7 and 0 <= result["mean_energy_in_mask"] <= 1
    assert result["uniform_map_baseline"] == pytest.approx(0.25, abs=0.02)  # 16×16 of 32×32
    # layer3 of the tiny net is 2×2 at 32 px: the centred square mask, pooled to 2×2, is flat
    assert result["layer_grid"] == [2, 2] and np.isnan(result["mask_at_layer_resolution"])
    assert 0 <= result["mean_iou_at_0.5"] <= 1 and 0 <= result["mean_lesion_coverage_at_0.5"] <= 1
    malignant = measure_mask_energy(tiny_pipe, tiny_data, "test", target="malignant", limit=3)
    assert malignant["n"] == 3 and malignant["target"] == "malignant"
    latency = measure_latency(tiny_pipe, repeats=3)
    assert latency["p50_ms"] > 0 and latency["repeats"] == 3
