"""Trust: temperature calibration (fitted, stored with the weights, used by diagnose) and
out-of-distribution abstention (natural photos turned away, with the reason in words)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from classndiff import ClassNDiffPipeline
from classndiff.cli.calibrate import calibrate_folder
from classndiff.evaluation.trust_checks import (
    bad_input_corpus,
    measure_bad_inputs,
    natural_images,
)
from classndiff.labels import DX_CODES
from classndiff.metrics import expected_calibration_error
from classndiff.trust.abstention import (
    STAT_NAMES,
    OODDetector,
    calibration_summary,
    fit_temperature,
    image_statistics,
)
from tests.conftest import make_lesion


def calibrated_logits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose softmax is exactly calibrated: labels drawn from softmax(logits)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, len(DX_CODES), generator=g) * 1.5
    logits[:, 5] += 1.0  # a majority class, as nv is
    labels = torch.multinomial(torch.softmax(logits, 1), 1, generator=g)[:, 0]
    return logits, labels


def ece(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    probs = torch.softmax(logits / temperature, 1).numpy()
    return expected_calibration_error(probs, labels.numpy())


# ------------------------------------------------------------------ temperature
@pytest.mark.parametrize("scale", [3.0, 0.5])
def test_temperature_fitted_on_one_set_lowers_ece_on_another(scale: float) -> None:
    """Overconfident (×3) or underconfident (×0.5) logits: T fitted on a fitting set is
    close to the scale and brings the held-out ECE down to that of calibrated logits."""
    fit_logits, fit_labels = calibrated_logits(3000, 0)
    held_logits, held_labels = calibrated_logits(3000, 1)
    temperature = fit_temperature(fit_logits * scale, fit_labels)
    assert temperature == pytest.approx(scale, rel=0.1)
    before, after = ece(held_logits * scale, held_labels), ece(held_logits * scale, held_labels,
                                                               temperature)
    assert before > 0.08 and after < 0.03 and after < before / 3
    summary = calibration_summary(held_logits * scale, held_labels, temperature)
    assert summary["ece_after"] == pytest.approx(after)
    assert summary["nll_after"] < summary["nll_before"]


def test_temperature_of_a_useless_model_stops_at_the_bound() -> None:
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(200, 7, generator=g) * 5, torch.randint(0, 7, (200,), generator=g)
    assert fit_temperature(logits, labels) == pytest.approx(20.0, rel=0.01)
    with pytest.raises(ValueError, match="no labelled"):
        fit_temperature(torch.zeros(0, 7), torch.zeros(0, dtype=torch.long))


# ------------------------------------------------------------------ the detector itself
def test_ood_detector_turns_away_outliers_and_keeps_inliers() -> None:
    """Gaussian classes in 16-D: held-out inliers are kept at about the chosen percentile,
    points far from every class are turned away, by either detector."""
    rng = np.random.default_rng(0)
    means = rng.normal(0, 4, (7, 16))

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = rng.integers(0, 7, n)
        features = means[y] + rng.normal(0, 1, (n, 16))
        stats = rng.normal(0, 1, (n, len(STAT_NAMES)))
        return (torch.tensor(features).float(), torch.tensor(y),
                torch.tensor(stats).float())

    train_f, train_y, train_s = draw(2000)
    val_f, _, val_s = draw(1000)
    detector = OODDetector.fit(train_f, train_y, train_s, val_f, val_s, percentile=99.0)
    test_f, _, test_s = draw(2000)
    kept = [c["abstain"] for c in detector.check(test_f, test_s)]
    assert np.mean(kept) < 0.05
    far_f = test_f[:50] + 12.0
    checks = detector.check(far_f, test_s[:50])
    assert all(c["abstain"] and c["feature_score"] > 1 for c in checks)
    assert "features are unlike" in checks[0]["reason"]
    checks = detector.check(test_f[:50], test_s[:50] + 8.0)
    assert all(c["abstain"] and c["stats_score"] > 1 for c in checks)
    assert "colours and texture" in checks[0]["reason"]
    # round trip through what the weights folder stores
    again = OODDetector.from_pretrained(detector.to_tensors(), detector.to_config())
    assert again is not None and again.feature_threshold == detector.feature_threshold
    assert [c["abstain"] for c in again.check(test_f, test_s)] == kept
    assert OODDetector.from_pretrained({}, None) is None


def test_image_statistics_shape_and_meaning() -> None:
    lesion = torch.from_numpy(make_lesion(np.random.default_rng(0), 3, 64)).permute(2, 0, 1)
    pixels = torch.stack([lesion, torch.full_like(lesion, 128)]).float() / 127.5 - 1
    stats = image_statistics(pixels)
    assert stats.shape == (2, len(STAT_NAMES)) and torch.isfinite(stats).all()
    named = dict(zip(STAT_NAMES, stats.T))
    assert named["L_std"][1] < 0.01 < named["L_std"][0]  # flat grey has no spread
    assert named["centre_minus_border_L"][0] < -5  # the dark blob is in the middle
    assert abs(float(named["chroma_mean"][1])) < 1  # grey has no chroma


# ------------------------------------------------------------------ a calibrated folder
@pytest.fixture(scope="module")
def calibrated(tiny_weights: Path, tiny_data: Path, tmp_path_factory) -> tuple[Path, dict]:
    """A float16 copy of the tiny weights, calibrated (the embedded weights ship float16)."""
    folder = tmp_path_factory.mktemp("calibrated") / "weights"
    pipe = ClassNDiffPipeline.from_pretrained(tiny_weights, device="cpu")
    from classndiff.hub import save_pretrained

    save_pretrained(pipe.model, pipe.config, folder, dtype=torch.float16)
    result = calibrate_folder(folder, tiny_data)
    return folder, result


def test_calibrate_folder_stores_temperature_and_abstention(calibrated, tiny_data) -> None:
    folder, result = calibrated
    config = json.loads((folder / "config.json").read_text())
    calibration, abstention = config["extra"]["calibration"], config["extra"]["abstention"]
    assert calibration["temperature"] > 0 and calibration["split"] == "val"
    assert calibration["n"] == 7  # the tiny data's validation split
    assert {"ece_before", "ece_after", "nll_before", "nll_after"} <= set(calibration)
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-6
    assert abstention["feature_threshold"] > 0 and abstention["stats_threshold"] > 0
    assert abstention["n_fit"] == 28 and 0 <= abstention["val_rejected"] <= 1
    assert result["calibration"] == calibration
    assert (folder / "reliability_val.png").stat().st_size > 1000
    assert json.loads((folder / "calibration.json").read_text())["weights"] == str(folder)
    assert not list(folder.glob(".calibrate-*"))  # no half-written leftovers
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert {k for k in keys if k.startswith("trust.")} == {
            "trust.feature_means", "trust.feature_precision_packed", "trust.stats_mean",
            "trust.stats_precision"}
        model_key = next(k for k in keys if k.endswith("weight") and not k.startswith("trust"))
        assert f.get_tensor(model_key).dtype == torch.float16  # the export dtype is kept
        assert f.get_tensor("trust.feature_precision_packed").dtype == torch.float32


def test_the_pipeline_loads_the_calibration(calibrated, tiny_pipe) -> None:
    folder, result = calibrated
    pipe = ClassNDiffPipeline.from_pretrained(folder, device="cpu")
    assert pipe.calibrated and pipe.temperature == pytest.approx(
        result["calibration"]["temperature"])
    assert pipe.trust is not None and not tiny_pipe.calibrated
    image = make_lesion(np.random.default_rng(5), 1, 64)
    d = pipe.diagnose(image, abstain=False)
    assert d.calibrated and "ood" in d.extras
    pixels = pipe.load(image)
    expected = torch.softmax(pipe.logits(pixels) / pipe.temperature, 1)[0]
    assert list(d.probabilities.values()) == pytest.approx(expected.tolist(), abs=1e-5)
    assert sum(d.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_a_natural_photo_is_turned_away_with_a_reason(calibrated, name: str) -> None:
    import skimage.data

    pipe = ClassNDiffPipeline.from_pretrained(calibrated[0], device="cpu")
    photo = getattr(skimage.data, name)()
    d = pipe.diagnose(photo, saliency=True)
    assert d.prediction is None
    assert d.reason.startswith("This does not look like a dermoscopic image of a skin lesion")
    assert d.reason.endswith("No diagnosis is given.") and "  " not in d.reason
    # not a near miss: far over the threshold (about 10-100× on the tiny model), so the test
    # does not hang on the tiny model's training
    assert max(d.extras["ood"].values()) > 3
    assert d.saliency is None and d.skin_tone is None  # nothing to explain
    assert sum(d.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    anyway = pipe.diagnose(photo, abstain=False)  # the caller may insist
    assert anyway.prediction in DX_CODES and anyway.reason is None
    assert anyway.extras["warning"] == d.reason


def test_abstention_on_the_lesions_it_was_fitted_on_is_rare(calibrated, tiny_data) -> None:
    pipe = ClassNDiffPipeline.from_pretrained(calibrated[0], device="cpu")
    images = sorted((tiny_data / "images").glob("*.jpg"))
    decisions = [pipe.diagnose(path, skin_tone=False).prediction is None for path in images]
    assert np.mean(decisions) < 0.2  # 42 lesions, thresholds from 7; on real data it is ~1 %


def test_blank_image_is_turned_away(calibrated, tiny_pipe) -> None:
    blank = np.full((64, 64, 3), 200, np.uint8)
    for pipe in (tiny_pipe, ClassNDiffPipeline.from_pretrained(calibrated[0], device="cpu")):
        d = pipe.diagnose(blank)
        assert d.prediction is None and "blank" in d.reason


def test_a_greyscale_image_is_turned_away(calibrated, tiny_pipe) -> None:
    from PIL import Image

    colour = make_lesion(np.random.default_rng(2), 4, 64)
    grey = Image.fromarray(colour).convert("L")
    for pipe in (tiny_pipe, ClassNDiffPipeline.from_pretrained(calibrated[0], device="cpu")):
        d = pipe.diagnose(grey)
        assert d.prediction is None and "greyscale" in d.reason
    # a faded but coloured photo is not greyscale: a quarter of the colour is still colour
    faded = Image.blend(grey.convert("RGB"), Image.fromarray(colour), 0.25)
    assert "greyscale" not in (tiny_pipe.diagnose(faded).reason or "")


def test_natural_images_ship_with_the_packages() -> None:
    photos = natural_images()
    assert len(photos) >= 15
    assert {"astronaut", "coffee", "sklearn_china", "sklearn_flower"} <= set(photos)
    assert all(a.ndim in (2, 3) and min(a.shape[:2]) >= 32 for a in photos.values())


def test_bad_input_corpus_never_crashes_diagnose(calibrated) -> None:
    pipe = ClassNDiffPipeline.from_pretrained(calibrated[0], device="cpu")
    result = measure_bad_inputs(pipe)
    assert result["kinds"] == len(bad_input_corpus()) >= 15
    assert result["crashes"] == 0, result["crashed"]
    outcomes = result["outcomes"]
    assert outcomes["huge_header_bomb"].startswith("error:")
    assert outcomes["truncated_jpeg"].startswith("error:")
    assert outcomes["blank_white"].startswith("abstain:")
    assert "greyscale" in outcomes["png_greyscale"]
    assert all(o.split(":")[0] in ("error", "abstain", "diagnosed") for o in outcomes.values())


def test_cli_calibrate(tiny_weights, tiny_data, tmp_path, capsys) -> None:
    from classndiff.cli.main import main

    folder = tmp_path / "weights"
    shutil.copytree(tiny_weights, folder)
    report = tmp_path / "report"
    code = main(["calibrate", str(folder), "--data-dir", str(tiny_data), "--report",
                 str(report), "--percentile", "99"])
    assert code in (0, None)
    printed = json.loads(capsys.readouterr().out)
    assert printed["abstention"]["percentile"] == 99.0
    assert (report / "reliability_val.png").exists() and (report / "calibration.json").exists()
    assert ClassNDiffPipeline.from_pretrained(folder, device="cpu").calibrated
    assert main(["calibrate", str(tmp_path / "nothing"), "--data-dir", str(tiny_data)]) == 2
    assert "not a weights folder" in capsys.readouterr().err


def test_the_feature_precision_is_stored_packed_and_older_whole_weights_still_load() -> None:
    from classndiff.trust.abstention import OODDetector, pack_symmetric, unpack_symmetric

    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(size=(5, 5)).astype(np.float32))
    symmetric = a + a.T
    packed = pack_symmetric(symmetric)
    assert packed.shape == (15,) and torch.equal(unpack_symmetric(packed), symmetric)
    with pytest.raises(ValueError, match="upper triangle"):
        unpack_symmetric(torch.zeros(14))
    features = torch.from_numpy(rng.normal(size=(60, 5)).astype(np.float32))
    stats = torch.from_numpy(rng.normal(size=(60, 3)).astype(np.float32))
    detector = OODDetector.fit(features[:40], torch.arange(40) % 2, stats[:40],
                               features[40:], stats[40:])
    settings = detector.to_config()
    stored = detector.to_tensors()
    whole = {k: v for k, v in stored.items() if not k.endswith("_packed")}
    whole["trust.feature_precision"] = detector.feature_precision
    for extras in (stored, whole):
        loaded = OODDetector.from_pretrained(extras, settings)
        assert torch.equal(loaded.feature_precision, detector.feature_precision)
        assert torch.equal(loaded.scores(features, stats)["feature"],
                           detector.scores(features, stats)["feature"])
