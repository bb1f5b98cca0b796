"""Test-time augmentation: the classifier's prediction averages dihedral views of the image
(`model.classifier_test_views`); the Grad-CAM explains that averaged prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classndiff.config import ModelConfig
from classndiff.models.classifier import (
    DIHEDRAL_VIEWS,
    LesionClassifier,
    dihedral_view,
    undo_dihedral_view,
)
from tests.conftest import TINY_MODEL


def test_the_views_are_the_eight_distinct_symmetries_and_undo_turns_them_back() -> None:
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    views = [dihedral_view(x, i) for i in range(len(DIHEDRAL_VIEWS))]
    assert torch.equal(views[0], x) and torch.equal(views[1], x.flip(-1))
    assert torch.equal(views[2], x.flip(-1).flip(-2))  # the half turn comes third
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    for i, view in enumerate(views):
        assert torch.equal(undo_dihedral_view(view, i), x), i


@pytest.fixture(scope="module")
def classifier() -> LesionClassifier:
    torch.manual_seed(0)
    return LesionClassifier(ModelConfig(**TINY_MODEL)).eval()


@pytest.mark.parametrize("views", [2, 4, 8])
def test_averaged_views_give_the_mean_of_the_views_logits_and_view_0s_features(
        classifier, views) -> None:
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        logits, feature_map, pooled = classifier.forward_views(x, views)
        each = torch.stack([classifier(dihedral_view(x, i)) for i in range(views)])
        plain_logits, plain_map = classifier.forward_with_maps(x)
    assert torch.allclose(logits, each.mean(0), atol=1e-5)
    assert torch.allclose(pooled, classifier.features(x), atol=1e-6)
    assert feature_map.shape == plain_map.shape
    assert not torch.allclose(logits, plain_logits, atol=1e-4)  # the views do differ


def test_one_view_is_the_plain_forward_and_other_counts_are_refused(classifier) -> None:
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        logits, feature_map, _ = classifier.forward_views(x, 1)
        plain_logits, plain_map = classifier.forward_with_maps(x)
    assert torch.equal(logits, plain_logits) and torch.equal(feature_map, plain_map)
    for bad in (0, 3, 16):
        with pytest.raises(ValueError, match="test-time views"):
            classifier.forward_views(x, bad)


def test_with_eight_views_a_turned_or_mirrored_upload_gets_the_same_diagnosis_and_map(
        tiny_config) -> None:
    """The eight views of a turned image are the eight views of the image: the answer cannot
    depend on how the dermatoscope was held, and the Grad-CAM turns with the image. (At 64 px
    the tiny classifier's last map is 2×2, the native Grad-CAM's layer.)"""
    from dataclasses import replace

    from classndiff import ClassNDiffPipeline
    from classndiff.models.joint import ClassNDiff

    model_config = replace(tiny_config.model, pixel_size=64, classifier_image_size=64)
    torch.manual_seed(0)
    model = ClassNDiff(model_config)
    pipes = {views: ClassNDiffPipeline(model, replace(tiny_config, model=replace(
        model_config, classifier_test_views=views))) for views in (1, 8)}
    assert pipes[8].explainer.native
    image = np.random.default_rng(0).integers(40, 220, (64, 64, 3), dtype=np.uint8)
    base = pipes[8].diagnose(image, saliency=True, abstain=False)
    for turned in (np.rot90(image), image[:, ::-1], np.rot90(image, 2)[:, ::-1]):
        other = pipes[8].diagnose(np.ascontiguousarray(turned), saliency=True, abstain=False)
        for code, p in base.probabilities.items():
            assert other.probabilities[code] == pytest.approx(p, abs=1e-5), code
    turned = pipes[8].diagnose(np.ascontiguousarray(np.rot90(image)), saliency=True,
                               abstain=False)
    assert np.allclose(turned.saliency.map, np.rot90(base.saliency.map), atol=1e-4)
    plain = pipes[1].diagnose(image, abstain=False)
    assert plain.probabilities != pytest.approx(base.probabilities, abs=1e-5)
