"""The public API: loading, diagnosing, generating, and the errors a person sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from classndiff import ClassNDiffArgumentError, ClassNDiffPipeline
from classndiff.labels import DX_CODES


def lesion_image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    from tests.conftest import make_lesion

    return Image.fromarray(make_lesion(rng, 4, size=64))


def test_diagnose_returns_probabilities_that_sum_to_one(tiny_pipe):
    d = tiny_pipe.diagnose(lesion_image())
    assert list(d.probabilities) == list(DX_CODES)
    assert sum(d.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    expected = sum(d.probabilities[c] for c in ("mel", "bcc", "akiec"))
    assert d.malignant == pytest.approx(expected, abs=1e-6)
    assert d.prediction in DX_CODES or d.prediction is None


def test_diagnose_accepts_a_path_and_gives_the_same_answer(tiny_pipe, tmp_path):
    image = lesion_image(1)
    path = tmp_path / "lesion.png"
    image.save(path)
    a, b = tiny_pipe.diagnose(image), tiny_pipe.diagnose(path)
    assert a.probabilities == pytest.approx(b.probabilities)


def test_save_and_load_round_trip_gives_identical_outputs(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "copy")
    again = ClassNDiffPipeline.from_pretrained(tmp_path / "copy", device="cpu")
    for a, b in zip(tiny_pipe.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(tiny_pipe.predict_proba(x), again.predict_proba(x))
    one = tiny_pipe.generate(dx="bcc", num_images=2, steps=3, seed=4)
    two = again.generate(dx="bcc", num_images=2, steps=3, seed=4)
    for a, b in zip(one.images, two.images):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not list(tmp_path.glob("copy/*.pt")) and not list(tmp_path.glob("copy/*.bin"))


def test_save_pretrained_keeps_the_export_dtype(tiny_pipe, tmp_path):
    """A float16 folder re-saved through the pipeline stays float16 (and the same size)."""
    from safetensors import safe_open

    half = tiny_pipe.config.override({"train.export_dtype": "float16"})
    pipe = ClassNDiffPipeline(tiny_pipe.model, half, extras=tiny_pipe.extras)
    for folder, dtype in ((pipe.save_pretrained(tmp_path / "half"), "F16"),
                          (pipe.save_pretrained(tmp_path / "full", dtype=torch.float32), "F32")):
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            key = "classifier.backbone.fc.weight"
            assert str(f.get_slice(key).get_dtype()) == dtype


def test_same_seed_same_images_and_different_seed_different(tiny_pipe):
    a = tiny_pipe.generate(dx="mel", num_images=2, steps=3, seed=1)
    b = tiny_pipe.generate(dx="mel", num_images=2, steps=3, seed=1)
    c = tiny_pipe.generate(dx="mel", num_images=2, steps=3, seed=2)
    arrays = lambda out: [np.asarray(im) for im in out.images]  # noqa: E731
    assert all(np.array_equal(x, y) for x, y in zip(arrays(a), arrays(b)))
    assert not np.array_equal(arrays(a)[0], arrays(c)[0])


def test_generate_returns_images_confidences_and_reproducible_settings(tiny_pipe):
    out = tiny_pipe.generate(dx="nv", skin_tone="brown", sex="female", num_images=3, steps=2,
                             guidance_scale=1.5, seed=7, sampler="ddim")
    assert len(out.images) == len(out.confidences) == 3
    assert all(0 <= c <= 1 for c in out.confidences)
    s = out.settings
    assert (s["dx"], s["skin_tone"], s["sex"], s["seed"], s["steps"], s["sampler"]) == (
        "nv", "brown", "female", 7, 2, "ddim")
    assert s["seeds"] == [7, 8, 9] and s["synthetic"] is True
    import json

    again = tiny_pipe.generate(**{k: json.loads(json.dumps(s))[k] for k in (
        "dx", "skin_tone", "sex", "num_images", "steps", "guidance_scale", "seed", "sampler")})
    assert np.array_equal(np.asarray(again.images[2]), np.asarray(out.images[2]))


def test_any_condition_can_be_left_blank(tiny_pipe):
    out = tiny_pipe.generate(dx=None, skin_tone="any", sex=None, num_images=1, steps=2)
    assert out.settings["dx"] is None and len(out.images) == 1


def test_keep_only_agreeing_keeps_only_what_the_classifier_assigns(tiny_pipe):
    out = tiny_pipe.generate(dx="nv", num_images=2, steps=2, seed=0, keep_only_agreeing=True)
    assert all(p == "nv" for p in out.predicted)
    assert out.settings["candidates_drawn"] <= 8


@pytest.mark.parametrize("kwargs, words", [
    ({"dx": "melanoma"}, "unknown diagnosis"),
    ({"skin_tone": "purple"}, "skin-tone"),
    ({"sex": "x"}, "sex"),
    ({"steps": 0}, "steps"),
    ({"steps": 10_000}, "steps"),
    ({"num_images": 0}, "num_images"),
    ({"num_images": 500}, "num_images"),
    ({"num_images": 2.5}, "whole number"),
    ({"guidance_scale": -1}, "guidance_scale"),
    ({"sampler": "euler"}, "sampler"),
    ({"seed": -3}, "seed"),
    ({"dx": None, "keep_only_agreeing": True}, "diagnosis"),
])
def test_bad_generate_arguments_raise_a_clear_value_error(tiny_pipe, kwargs, words):
    with pytest.raises(ClassNDiffArgumentError, match=words):
        tiny_pipe.generate(**{"steps": 2, "num_images": 1, **kwargs})
    assert issubclass(ClassNDiffArgumentError, ValueError)


def test_diagnose_rejects_a_non_image_with_a_readable_message(tiny_pipe):
    with pytest.raises(ValueError, match="not an image"):
        tiny_pipe.diagnose(b"this is not an image at all")


def test_skin_reference_normalises_what_the_classifier_reads(tiny_pipe) -> None:  # noqa: ANN001
    """model.classifier_skin_reference: every classifier read (predict_proba, diagnose) sees
    the skin re-tinted to the reference; None reads the image as it is."""
    from classndiff.trust.skintone import normalise_skin_tone
    from tests.test_counterfactual import lesion_photo

    x = tiny_pipe.load(lesion_photo(tiny_pipe.config.model.pixel_size))
    plain = tiny_pipe.predict_proba(x)
    model = tiny_pipe.config.model
    model.classifier_skin_reference = [-10.0, 22.0]
    try:
        normalised = tiny_pipe.predict_proba(x)
        diagnosis = tiny_pipe.diagnose(lesion_photo(tiny_pipe.config.model.pixel_size),
                                       abstain=False, skin_tone=False)
    finally:
        model.classifier_skin_reference = None
    expected = tiny_pipe.predict_proba(normalise_skin_tone(x, [-10.0, 22.0]))
    assert torch.allclose(normalised, expected) and not torch.allclose(normalised, plain)
    mel = DX_CODES.index("mel")
    assert diagnosis.probabilities["mel"] == pytest.approx(float(expected[0, mel]), abs=1e-5)
