"""The generation yardstick's arithmetic on inputs whose answer is known, and the ImageNet
weights loader (issue: backbone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classndiff.evaluation.generation import frechet_distance
from classndiff.evaluation.yardstick import (
    blockiness,
    border_ita,
    class_mix_weights,
    diversity,
    mix_matched_fd,
    precision_recall,
    within_class_diversity,
)
from classndiff.models.backbones import load_imagenet_weights, map_by_order, pypi_weights_file


def test_precision_recall_on_known_sets() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 8))
    same = precision_recall(real, real.copy(), k=5)
    assert same == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(real, real + 100, k=5)
    assert far == {"precision": 0.0, "recall": 0.0}
    # A generator that covers only half of the real modes: precise, but half the recall.
    modes = np.concatenate([rng.normal(size=(30, 8)), rng.normal(size=(30, 8)) + 50])
    half = precision_recall(modes, modes[:30] + rng.normal(size=(30, 8)) * 0.01, k=5)
    assert half["precision"] == 1.0 and half["recall"] == pytest.approx(0.5, abs=0.05)


def test_diversity_is_the_mean_pairwise_distance() -> None:
    points = np.array([[0.0, 0.0], [3.0, 4.0]])
    assert diversity(points) == pytest.approx(5.0)
    triangle = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    assert diversity(triangle) == pytest.approx((3 + 4 + 5) / 3)
    labels = np.array([0, 0, 1, 1])
    both = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [4.0, 0.0]])
    assert within_class_diversity(both, labels) == pytest.approx(3.0)


def test_blockiness_finds_patch_seams() -> None:
    rng = np.random.default_rng(0)
    smooth = torch.from_numpy(rng.integers(0, 256, (4, 3, 64, 64))).to(torch.uint8)
    assert blockiness(smooth) == pytest.approx(1.0, abs=0.05)  # noise: no grid
    patches = rng.integers(0, 256, (4, 3, 8, 8))
    mosaic = np.repeat(np.repeat(patches, 8, axis=2), 8, axis=3)  # 8×8 flat patches
    mosaic = mosaic + rng.integers(0, 8, mosaic.shape)  # a little texture inside
    assert blockiness(torch.from_numpy(mosaic)) > 5
    channels_last = np.transpose(mosaic, (0, 2, 3, 1))
    assert blockiness(channels_last) == pytest.approx(blockiness(torch.from_numpy(mosaic)))


def test_border_ita_of_known_colours() -> None:
    from skimage.color import lab2rgb

    def image(lightness: float, b: float) -> np.ndarray:
        lab = np.zeros((32, 32, 3))
        lab[..., 0], lab[..., 2] = lightness, b
        lab[8:24, 8:24] = [20, 10, 10]  # a dark "lesion" in the middle is ignored
        return (lab2rgb(lab) * 255).round().astype(np.uint8)

    ita = border_ita(np.stack([image(80, 15), image(50, 20), image(35, 15)]))
    expected = np.degrees(np.arctan(np.array([30 / 15, 0 / 20, -15 / 15])))
    np.testing.assert_allclose(ita, expected, atol=2.5)
    assert ita[0] > ita[1] > ita[2]


def test_map_by_order_checks_every_shape() -> None:
    source = {"a.weight": torch.zeros(2, 3), "a.num_batches_tracked": torch.tensor(0),
              "b.bias": torch.zeros(4)}
    target = {"x.weight": torch.ones(2, 3), "y.bias": torch.ones(4)}
    assert list(map_by_order(source, target)) == ["x.weight", "y.bias"]
    with pytest.raises(ValueError, match="shape mismatch"):
        map_by_order(source, {"x.weight": torch.ones(3, 2), "y.bias": torch.ones(4)})
    with pytest.raises(ValueError, match="2 tensors"):
        map_by_order(source, {"x.weight": torch.ones(2, 3)})
    with pytest.raises(ValueError, match="no PyPI ImageNet weights"):
        pypi_weights_file("resnet50")


def test_imagenet_weights_from_the_wheel_classify_imagenet_images() -> None:
    """timm's tf_efficientnet_lite0 with the wheel's weights mapped in order gives the
    ImageNet classes of scikit-image's sample photos (inputs in [-1, 1]), and holds the
    wheel's tensors exactly."""
    import timm
    from skimage import data

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_imagenet_weights(model, "tf_efficientnet_lite0")
    model.eval()
    source = torch.load(pypi_weights_file("tf_efficientnet_lite0"), weights_only=True)
    mine = [v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    theirs = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs)) and len(mine) == len(theirs)
    for photo, imagenet_class in ((data.chelsea(), 285), (data.coffee(), 967)):
        x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 127.5 - 1
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear",
                                            antialias=True)
        with torch.no_grad():
            probabilities = model(x).softmax(1)[0]
        assert int(probabilities.argmax()) == imagenet_class
        assert float(probabilities.max()) > 0.5
    # The classifier head is left to the lesion classes; the rest must all be set.
    lesions = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=7)
    load_imagenet_weights(lesions, "tf_efficientnet_lite0")
    torch.testing.assert_close(lesions.conv_stem.weight, model.conv_stem.weight)


def test_camera_shifts_change_colour_not_geometry() -> None:
    from classndiff.evaluation.shifts import SHIFTS, colour_temperature, gamma, vignette

    rng = np.random.default_rng(0)
    image = rng.integers(30, 220, (32, 32, 3)).astype(np.uint8)
    for name, shift in SHIFTS.items():
        out = shift(image)
        assert out.shape == image.shape and out.dtype == np.uint8, name
    assert np.array_equal(SHIFTS["none"](image), image)
    warm = colour_temperature(image, 0.1).astype(int)
    assert (warm[..., 0] >= image[..., 0]).all() and (warm[..., 2] <= image[..., 2]).all()
    assert gamma(image, 0.7).mean() > image.mean() > gamma(image, 1.4).mean()
    dark_corners = vignette(np.full((32, 32, 3), 200, np.uint8), 0.5)
    assert dark_corners[0, 0, 0] < dark_corners[16, 16, 0] == 200


def test_class_mix_weights_give_each_class_the_target_share() -> None:
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    target = np.array([0, 1, 1, 1])  # a quarter class 0, three quarters class 1, no class 2
    weights = class_mix_weights(labels, target)
    assert weights[labels == 0].sum() == pytest.approx(0.25)
    assert weights[labels == 1].sum() == pytest.approx(0.75)
    assert weights[labels == 2].sum() == 0
    assert np.allclose(weights[labels == 0], weights[0])  # even within a class
    with pytest.raises(ValueError, match="class 3"):
        class_mix_weights(labels, np.array([0, 3]))


def test_mix_matched_fd_charges_realism_not_the_class_mix() -> None:
    """A perfect class-balanced draw against a reference that is nine tenths one class: the
    pooled FD charges the mix, the mix-matched FD does not."""
    rng = np.random.default_rng(0)
    centres = np.zeros((2, 8))
    centres[1, 0] = 6.0

    def draw(counts: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat([0, 1], counts)
        return centres[labels] + rng.normal(size=(len(labels), 8)), labels

    real, real_labels = draw((1800, 200))
    fake, fake_labels = draw((500, 500))
    balanced, _ = draw((1000, 1000))
    pooled = frechet_distance(real, fake)
    matched = mix_matched_fd(real, real_labels, fake, fake_labels)
    assert pooled > 5
    assert matched == pytest.approx(frechet_distance(balanced, fake), abs=0.3)
    assert matched < 0.1 * pooled
    # A reference already in the draw's mix is not re-weighted at all.
    assert mix_matched_fd(balanced, np.repeat([0, 1], 1000), fake, fake_labels) == (
        pytest.approx(frechet_distance(balanced, fake), rel=1e-9))
