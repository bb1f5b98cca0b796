"""The malignant call: a threshold fitted on validation for a sensitivity target, judged
cross-fitted, stored by `classndiff calibrate`, applied by the pipeline and shown by the app."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from classndiff.trust.threshold import cross_fitted_rates, fit_threshold, rates


def test_the_threshold_is_the_most_specific_one_that_meets_the_target() -> None:
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    truth = np.array([1, 1, 0, 1, 1, 0, 1, 0, 0, 0], dtype=bool)  # 5 malignant
    assert fit_threshold(p, truth, 0.8) == 0.5  # the 4th malignant score: 4 / 5 called
    assert rates(p, truth, 0.5) == (0.8, 0.8)
    assert fit_threshold(p, truth, 0.81) == 0.3  # 0.81 needs all five
    assert fit_threshold(p, truth, 1.0) == 0.3
    assert fit_threshold(p, truth, 0.2) == 0.9  # one of five
    # Every threshold above the fitted one misses the target.
    for target in (0.2, 0.4, 0.6, 0.8, 1.0):
        t = fit_threshold(p, truth, target)
        assert rates(p, truth, t)[0] >= target
        assert rates(p, truth, np.nextafter(t, 2))[0] < target
    with pytest.raises(ValueError, match="no malignant"):
        fit_threshold(p, np.zeros(10, bool), 0.8)
    with pytest.raises(ValueError, match="target sensitivity"):
        fit_threshold(p, truth, 1.5)


def test_cross_fitting_never_judges_a_threshold_where_it_was_fitted() -> None:
    """Two lesions' images, scores that separate malignant from benign in one half and not in
    the other: in sample a threshold is perfect on its own half, cross-fitted it is not; and
    a lesion's images always fall in one fold."""
    rng = np.random.default_rng(0)
    n = 400
    lesions = np.repeat(np.arange(n // 2), 2)  # two images per lesion
    truth = np.repeat(rng.random(n // 2) < 0.3, 2)
    p = np.where(truth, rng.uniform(0.3, 1.0, n), rng.uniform(0.0, 0.7, n))
    result = cross_fitted_rates(p, truth, lesions.astype(str), 0.9, folds=2, seed=0)
    assert len(result["thresholds"]) == 2 and result["folds"] == 2
    assert 0.75 < result["sensitivity"] < 1.0  # near the target, not at it by construction
    assert result == cross_fitted_rates(p, truth, lesions.astype(str), 0.9, folds=2, seed=0)
    # Each fold's threshold is what fitting on the other fold alone gives.
    unique = np.unique(lesions.astype(str))
    fold_of = dict(zip(np.random.default_rng(0).permutation(unique), np.arange(len(unique)) % 2))
    fold = np.array([fold_of[g] for g in lesions.astype(str)])
    assert all(fold[lesions == k].min() == fold[lesions == k].max() for k in range(n // 2))
    for k in range(2):
        assert result["thresholds"][k] == fit_threshold(p[fold != k], truth[fold != k], 0.9)
    called = np.zeros(n, bool)
    for k in range(2):
        called[fold == k] = p[fold == k] >= result["thresholds"][k]
    assert result["sensitivity"] == pytest.approx(called[truth].mean())
    assert result["specificity"] == pytest.approx((~called[~truth]).mean())


def test_calibrate_fits_the_threshold_and_the_pipeline_calls_with_it(
        tiny_weights: Path, tiny_data: Path, tmp_path: Path, capsys) -> None:
    from classndiff.cli.calibrate import calibrate_folder
    from classndiff.labels import malignant_mask
    from classndiff.pipelines.pipeline import ClassNDiffPipeline
    from classndiff.trust.abstention import collect

    folder = tmp_path / "weights"
    shutil.copytree(tiny_weights, folder)
    result = calibrate_folder(folder, tiny_data, malignant_sensitivity=0.6)
    calibration = result["calibration"]
    assert calibration["malignant_target_sensitivity"] == 0.6
    pipe = ClassNDiffPipeline.from_pretrained(folder, device="cpu")
    threshold = pipe.malignant_threshold
    assert threshold == calibration["malignant_threshold"]
    # The stored threshold is the fit on the validation split's calibrated P(malignant).
    val = collect(pipe, "val", tiny_data)
    mask = np.asarray(malignant_mask())
    import torch

    p = torch.softmax(val["logits"] / pipe.temperature, 1).numpy()[:, mask].sum(1)
    truth = mask[val["labels"].numpy()]
    assert threshold == pytest.approx(fit_threshold(p, truth, 0.6), abs=1e-6)
    assert (calibration["malignant_sensitivity"], calibration["malignant_specificity"]) == \
        pytest.approx(rates(p, truth, threshold), abs=1e-4)
    assert calibration["malignant_sensitivity"] >= 0.6

    from tests.conftest import make_lesion

    image = make_lesion(np.random.default_rng(5), 1, 64)
    d = pipe.diagnose(image, abstain=False)
    assert d.malignant_threshold == threshold
    assert d.malignant_call == (d.malignant >= threshold)
    assert d.extras["malignant_call"]["target_sensitivity"] == 0.6
    assert json.loads(json.dumps(d.to_dict()))["malignant_call"] == d.malignant_call
    # Moving the threshold across the image's P(malignant) flips the call.
    pipe.config.extra["calibration"]["malignant_threshold"] = d.malignant + 1e-4
    assert pipe.diagnose(image, abstain=False).malignant_call is False
    pipe.config.extra["calibration"]["malignant_threshold"] = d.malignant - 1e-4
    assert pipe.diagnose(image, abstain=False).malignant_call is True
    # An abstention carries no call.
    blank = np.zeros((64, 64, 3), np.uint8)
    abstained = pipe.diagnose(blank)
    assert abstained.prediction is None and abstained.malignant_call is None
    assert "malignant_call" not in abstained.extras

    # The CLI's table says each call and the threshold it was made at (the validation
    # lesions: the abstention turns away at most one of them).
    from classndiff.cli.main import main

    lesions = [str(tiny_data / "images" / f"ISIC_{c:02d}00004.jpg") for c in range(7)]
    capsys.readouterr()
    assert main(["classify", *lesions, "--weights", str(folder), "--json"]) == 0
    calls = [r["malignant_call"] for r in json.loads(capsys.readouterr().out)]
    assert sum(c is not None for c in calls) >= 6, calls
    assert main(["classify", *lesions, "--weights", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    words = {True: "suspicious", False: "not flagged", None: "—"}
    for lesion, call in zip(lesions, calls):
        line = next(x for x in lines if x.startswith(lesion[-40:]))
        assert line.rstrip().endswith(words[call]), line
    assert f"call: P(malignant) ≥ {threshold:.3f}" in "\n".join(lines)


def test_an_uncalibrated_model_makes_no_call(tiny_pipe) -> None:
    from tests.conftest import make_lesion

    d = tiny_pipe.diagnose(make_lesion(np.random.default_rng(5), 1, 64), abstain=False)
    assert tiny_pipe.malignant_threshold is None
    assert d.malignant_call is None and d.malignant_threshold is None


def test_the_cli_refuses_a_sensitivity_out_of_range(tiny_weights, tmp_path, capsys) -> None:
    from classndiff.cli.main import main

    for bad in ("1.5", "0", "abc"):
        with pytest.raises(SystemExit) as exit_:
            main(["calibrate", str(tiny_weights), "--malignant-sensitivity", bad])
        assert exit_.value.code == 2
        assert "--malignant-sensitivity" in capsys.readouterr().err


def test_the_app_shows_the_call_and_what_its_threshold_means() -> None:
    from demo.render import diagnosis_markdown

    fit = {"target_sensitivity": 0.8, "sensitivity": 0.803, "specificity": 0.851,
           "split": "val"}
    d = SimpleNamespace(prediction="nv", confidence=0.7, reason=None, malignant=0.35,
                        calibrated=True, skin_tone=None, malignant_call=True,
                        malignant_threshold=0.31, extras={"malignant_call": fit})
    text = diagnosis_markdown(d, None)
    assert "**Malignant call:** **suspicious for malignancy** — threshold 31.0 %" in text
    assert ("fitted on the validation split to catch at least 80.0 % of malignant lesions "
            "(there it caught 80.3 % and cleared 85.1 % of benign ones)") in text
    d.malignant_call, d.malignant = False, 0.2
    assert "**not flagged** (below the threshold; not a reassurance)" in \
        diagnosis_markdown(d, None)
    d.malignant_call = None  # an older model without a threshold
    assert "Malignant call" not in diagnosis_markdown(d, None)
    d.malignant_call, d.prediction = True, None  # abstained: no numbers at all
    assert "Malignant call" not in diagnosis_markdown(d, None)


def test_the_report_reads_its_intervals_at_the_models_own_call() -> None:
    """With a stored threshold the headline's sensitivity row names the model's call; the
    Youden point and 0.5 are listed beside it. Without one, the Youden point as before."""
    from classndiff.evaluation.report.markdown import _headline_md

    ci = {k: {"value": 0.8, "lo": 0.7, "hi": 0.9} for k in (
        "accuracy", "balanced_accuracy", "macro_auc", "malignant_auc", "sensitivity",
        "specificity")}
    thresholds = {"0.5": {"threshold": 0.5, "sensitivity": 0.6, "specificity": 0.95},
                  "youden_val": {"threshold": 0.237, "sensitivity": 0.83, "specificity": 0.81},
                  "model_call": {"threshold": 0.29, "sensitivity": 0.8, "specificity": 0.85,
                                 "target_sensitivity": 0.8}}
    report = {"classification": {"thresholds": thresholds, "ece": 0.03},
              "groups": {"ci": {"overall": ci}, "threshold": 0.29}, "calibrated": True}
    text = "\n".join(_headline_md(report))
    assert ("sensitivity @ P(malignant) ≥ 0.290 (the model's malignant call, fitted on val "
            "for sensitivity ≥ 0.80)") in text
    assert "sensitivity / specificity @ 0.237 (Youden point on val) | 0.830 / 0.810" in text
    assert "sensitivity / specificity @ 0.5 | 0.600 / 0.950" in text
    del thresholds["model_call"]
    report["groups"]["threshold"] = 0.237
    text = "\n".join(_headline_md(report))
    assert "≥ 0.237 (Youden point on val)" in text and "model's malignant call" not in text
    assert "Youden point on val) | 0.830" not in text  # not listed twice


def test_the_card_states_the_call_and_its_test_figures_only_when_read_at_it() -> None:
    from classndiff.config import Calibration
    from classndiff.evaluation.card_sections import _malignant_call_text

    calibration = Calibration(malignant_threshold=0.2912345, malignant_target_sensitivity=0.8,
                              malignant_sensitivity=0.801, malignant_specificity=0.85)
    report = {"classification": {"thresholds": {"model_call": {
                  "threshold": 0.2912, "sensitivity": 0.79, "specificity": 0.86}}},
              "groups": {"ci": {"overall": {"sensitivity": {"value": 0.79, "lo": 0.73, "hi": 0.84},
                                            "specificity": {"value": 0.86, "lo": 0.83,
                                                            "hi": 0.88}}}}}
    text = _malignant_call_text(calibration, report)
    assert text.startswith("\n\n**The malignant call**")
    assert "P(malignant) ≥ 0.291, the highest threshold whose sensitivity on the val split " \
           "reaches 0.80" in text and "specificity 0.850)" in text
    assert "sensitivity 0.790 [0.730, 0.840], specificity 0.860 [0.830, 0.880]" in text
    # A report measured at another threshold (an older calibration) is not quoted.
    report["classification"]["thresholds"]["model_call"]["threshold"] = 0.3
    assert "not measured with this threshold yet" in _malignant_call_text(calibration, report)
    assert _malignant_call_text(Calibration(), report) == ""
    assert _malignant_call_text(None, report) == ""


def test_the_skin_tone_caution_quotes_the_call_read_at_the_same_threshold() -> None:
    """The whole-field record keeps the call's sensitivity at the threshold it was read at;
    a diagnosis called at that threshold quotes it, at another (a re-calibration) it falls
    back to P ≥ 0.5, and the app says which."""
    from classndiff.trust.fairness import flip_report, skin_tone_caution, skin_tone_check_record
    from demo.render import skin_tone_caution_markdown

    labels = np.array([4, 4, 5, 5, 0, 5])  # mel, mel, nv, nv, akiec, nv
    original = np.full((6, 7), 0.01)
    original[[0, 1, 4], [4, 4, 0]] = [0.9, 0.4, 0.3]  # malignant P 0.9 / 0.4 / 0.3
    original[[2, 3, 5], 5] = 0.9
    retinted = original.copy()
    retinted[0, 4] = 0.2  # the first melanoma falls under both thresholds
    report = flip_report(original, retinted, labels, malignant_threshold=0.25)
    assert report["malignant_sensitivity_before"] == pytest.approx(1 / 3)  # at 0.5
    assert report["malignant_call_sensitivity_before"] == pytest.approx(1.0)  # at 0.25
    assert report["malignant_call_sensitivity_after"] == pytest.approx(2 / 3)
    assert "malignant_call_threshold" not in flip_report(original, retinted, labels)
    record = skin_tone_check_record({"darker": report}, "test", 0.7, 1)
    assert record.malignant_threshold == 0.25
    same = skin_tone_caution(record, "darker", 0.9, 0.7, 1, malignant_threshold=0.25)
    assert same["call_sensitivity_after"] == pytest.approx(2 / 3)
    text = skin_tone_caution_markdown(same)
    assert "its malignant call (P(malignant) ≥ 25.0 %) flagged 66.7 % of the malignant " \
           "lesions, against 100.0 % on the originals" in text
    other = skin_tone_caution(record, "darker", 0.9, 0.7, 1, malignant_threshold=0.3)
    assert "call_threshold" not in other
    assert "it called 0.0 % of the malignant lesions malignant, against 33.3 %" in \
        skin_tone_caution_markdown(other)
