"""The evaluation report: lesion-grouped bootstrap, fast metrics, FD/KID, and the whole
`classndiff evaluate --report` on the tiny model with a random-weight evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from classndiff.evaluation.bootstrap import bootstrap, fast_metrics, lesion_codes, lesion_resample
from classndiff.evaluation.generation import class_fidelity, frechet_distance, kernel_distance
from classndiff.metrics import classification_metrics


def test_lesion_resample_draws_whole_lesions() -> None:
    sizes = [1, 3, 2, 5, 1, 4]
    codes = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.default_rng(0)
    for _ in range(20):
        index = lesion_resample(codes, rng)
        counts = np.bincount(index, minlength=len(codes))
        for lesion in range(len(sizes)):
            # every image of a lesion comes the same number of times: the lesion is the unit
            assert len(set(counts[codes == lesion])) == 1
        drawn = sum(counts[codes == lesion][0] for lesion in range(len(sizes)))
        assert drawn == len(sizes)


def test_bootstrap_ci_contains_point_and_counts_lesions_once() -> None:
    rng = np.random.default_rng(1)
    n_lesions = 120
    correct = rng.random(n_lesions) < 0.7
    copies = 5  # each lesion photographed 5 times, same outcome: near-duplicates

    def accuracy(values: np.ndarray) -> callable:
        return lambda index: {"accuracy": float(values[index].mean())}

    grouped = bootstrap(accuracy(np.repeat(correct, copies)),
                        np.repeat(np.arange(n_lesions), copies), reps=300, seed=0)["accuracy"]
    single = bootstrap(accuracy(correct), np.arange(n_lesions), reps=300, seed=0)["accuracy"]
    as_images = bootstrap(accuracy(np.repeat(correct, copies)), np.arange(n_lesions * copies),
                          reps=300, seed=0)["accuracy"]
    assert grouped["lo"] <= grouped["value"] <= grouped["hi"]
    assert grouped["value"] == pytest.approx(correct.mean())
    width = grouped["hi"] - grouped["lo"]
    # Grouped by lesion, duplicates add no information: the width is that of one copy each,
    # and wider than a (wrong) image-level bootstrap.
    assert width == pytest.approx(single["hi"] - single["lo"], rel=0.35)
    assert width > 1.5 * (as_images["hi"] - as_images["lo"])
    assert list(lesion_codes(["b", "a", "b"])) == [1, 0, 1]


def test_fast_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    labels = np.concatenate([np.arange(7), rng.integers(0, 7, 193)])
    probs = rng.dirichlet(np.ones(7), 200)
    probs[np.arange(200), labels] += rng.random(200)  # some signal
    probs /= probs.sum(1, keepdims=True)
    fast = fast_metrics(probs, labels)
    slow = classification_metrics(probs, labels)
    for key in ("accuracy", "balanced_accuracy", "macro_auc", "malignant_auc"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-9)
    from classndiff.evaluation.report.statistics import group_statistic

    stat = group_statistic(probs, labels, {"tone": np.array(["lighter", "brown"] * 100)}, 0.5,
                           other=probs[::-1].copy())
    values = stat(np.arange(200))
    assert values["diff/accuracy"] == pytest.approx(
        fast["accuracy"] - fast_metrics(probs[::-1], labels)["accuracy"])
    assert "gap/tone/lighter-brown/accuracy" in values
    one_class = fast_metrics(probs[labels == 5], labels[labels == 5])
    assert np.isnan(one_class["macro_auc"]) and one_class["balanced_accuracy"] == one_class[
        "accuracy"]


def test_frechet_and_kernel_distance() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 16))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    same = frechet_distance(a, rng.normal(size=(300, 16)))
    shifted = frechet_distance(a, rng.normal(size=(300, 16)) + 1.0)
    assert shifted > 10 * same and shifted == pytest.approx(16, rel=0.2)
    # fewer images than dimensions (the per-class case): still finite and ≥ 0
    assert frechet_distance(a[:20, :], a[20:40, :] + 0.5) > 0
    assert abs(kernel_distance(a, rng.normal(size=(300, 16)))["mean"]) < 0.05
    assert kernel_distance(a, rng.normal(size=(300, 16)) + 1)["mean"] > 0.5
    fidelity = class_fidelity(np.eye(7)[[0, 0, 1, 2]], np.array([0, 1, 1, 2]))
    assert fidelity["per_class"] == {"akiec": 1.0, "bcc": 0.5, "bkl": 1.0}
    assert fidelity["macro"] == pytest.approx(2.5 / 3)


def test_evaluator_features_are_its_pooled_features_in_any_batches() -> None:
    """The second FD's feature space: the evaluator's own pooled features of the uint8 images
    scaled to [-1, 1], whatever the batch size; a set is at FD 0 from itself there."""
    from classndiff.training.evaluator import Evaluator, EvaluatorConfig, pooled_features

    torch.manual_seed(0)
    model = Evaluator(EvaluatorConfig(backbone="test_resnet", image_size=32)).eval()
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    features = pooled_features(model, images, batch_size=3)
    with torch.no_grad():
        direct = model.features(images.float() / 127.5 - 1).numpy()
    np.testing.assert_allclose(features, direct, atol=1e-5)
    np.testing.assert_allclose(pooled_features(model, images, batch_size=256), features,
                               atol=1e-5)
    assert frechet_distance(features, features) == pytest.approx(0, abs=1e-6)


@pytest.fixture(scope="module")
def tiny_evaluator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An evaluator with random weights: the report's plumbing, not its numbers."""
    from classndiff.training.evaluator import Evaluator, EvaluatorConfig, save_evaluator

    torch.manual_seed(0)
    model = Evaluator(EvaluatorConfig(backbone="test_resnet", image_size=32))
    return save_evaluator(model, tmp_path_factory.mktemp("evaluator"))


def test_report_end_to_end(tiny_weights: Path, tiny_data: Path, tiny_evaluator: Path,
                           tmp_path: Path) -> None:
    from classndiff.cli.main import main

    out = tmp_path / "report"
    code = main(["evaluate", str(tiny_weights), "--report", str(out), "--data-dir",
                 str(tiny_data), "--evaluator", str(tiny_evaluator), "--compare",
                 str(tiny_weights), "--compare-name", "lambda0", "--generate-per-cell", "2",
                 "--fairness-augment", "1", "--bootstrap", "20", "--cas-steps", "2",
                 "--fairness-steps", "2", "--fd-reps", "2", "--saliency-methods", "gradcam"])
    assert code == 0
    for name in ("report.md", "metrics.json", "confusion_matrix.png", "roc.png",
                 "reliability.png", "groups_tone.png", "groups_sex.png", "samples_model.png",
                 "samples_lambda0.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "balanced_accuracy", "macro_auc", "malignant_auc", "ece",
            "thresholds"} <= set(metrics["classification"])
    assert set(metrics["classification"]["thresholds"]) == {"0.5", "youden_val"}
    overall = metrics["groups"]["ci"]["overall"]["accuracy"]
    assert set(overall) == {"value", "lo", "hi", "valid"}
    assert metrics["groups"]["sizes"]["tone"]  # group sizes recorded
    assert metrics["bootstrap"]["unit"].startswith("lesion")
    assert metrics["compare"]["name"] == "lambda0"
    # compared with itself, the classifier is recognised as shared: no (zero) paired
    # difference is reported for it
    assert metrics["compare"]["own_classifier"] is False
    assert "diff" not in metrics["groups"]["ci"]
    gen = metrics["generation"]
    model_gen = gen[tiny_weights.name]
    assert model_gen["n_generated"] == 7 * 4 * 2
    assert {"fd_macro_over_classes", "per_class", "per_tone", "fidelity", "cas"} <= set(model_gen)
    assert gen["cas_real_reference"]["steps"] == 2
    fair = metrics["fairness_experiment"]
    assert fair["synthetic_images"] == 7 * 2
    assert {"baseline", "augmented", "difference"} <= set(fair)
    assert "gradcam" in metrics["saliency"]
    text = (out / "report.md").read_text()
    assert text.splitlines()[5].startswith("classndiff evaluate ")
    for heading in ("## Headline", "## Fairness: per skin-tone group", "## Ablation",
                    "## Generation quality", "## Fairness experiment", "## Saliency"):
        assert heading in text
    assert "darker-skin" in text
    assert sum(p.stat().st_size for p in out.iterdir()) < 5e6


def test_compare_with_a_denoiser_only_folder(tiny_pipe, tiny_weights: Path,  # noqa: ANN001
                                             tmp_path: Path) -> None:
    """The λ = 0 ablation ships only its denoiser: it is paired with this model's classifier
    and its own recorded classification metrics are quoted."""
    import shutil

    from safetensors.torch import save_file

    from classndiff.evaluation.report.sections import load_compare

    state = {f"denoiser.{k}": v.half().contiguous()
             for k, v in tiny_pipe.model.denoiser.state_dict().items()}
    save_file(state, str(tmp_path / "denoiser.safetensors"))
    shutil.copy(tiny_weights / "config.json", tmp_path / "config.json")
    (tmp_path / "metrics.json").write_text(json.dumps({"classification": {"accuracy": 0.5}}))
    other, info = load_compare(tmp_path, tiny_pipe)
    assert info["own_classifier"] is False
    assert info["recorded_classification"] == {"accuracy": 0.5}
    assert other.model is not tiny_pipe.model
    assert len(other.generate(dx="mel", num_images=1, steps=2).images) == 1
    _, info = load_compare(tiny_weights, tiny_pipe)
    assert info["own_classifier"] is False  # a full folder, but the same classifier tensors


def test_card_names_a_targets_own_counterfactual_settings(tmp_path: Path) -> None:
    """The card's counterfactual section says which targets have a strength or a classifier
    guidance step of their own (read from benchmarks/counterfactuals.py's record)."""
    from classndiff.evaluation.card_sections import _counterfactual_section

    arm = {"validity": 0.8, "change_inside": 50.0, "change_outside": 5.0, "seconds_median": 1.0}
    (tmp_path / "counterfactuals.json").write_text(json.dumps({
        "strength": 0.9, "strength_by_target": {"mel": 0.9, "nv": 0.5},
        "classifier_scale_by_target": {"mel": 0.1, "nv": 0.0}, "guidance_scale": 12.5,
        "detail": 1.0, "candidates": 4, "pairs": {"nv->mel": {"target": arm}}}))
    text = _counterfactual_section(tmp_path)
    assert "strength 0.9 (0.5 towards nv)" in text
    assert "4 redraws of which the model's own classifier picks" in text
    assert "100% of the upload's own fine detail" in text
    assert "guidance on x̂0 with step 0.1 towards mel" in text and "towards nv" not in \
        text.split("step")[1]


def test_card_gives_the_darker_flips_by_the_originals_confidence(tmp_path: Path) -> None:
    """The skin-tone section adds the flips per confidence band when the record has them
    (empty bands left out), and reads as before when it has not."""
    from classndiff.evaluation.card_sections import _skin_tone_section

    target = {"median_skin_ita": -15.0, "n": 10, "flip_rate": 0.2,
              "malignant_change_mean": 0.01, "accuracy_before": 0.8, "accuracy_after": 0.7,
              "malignant_auc_before": 0.9, "malignant_auc_after": 0.88}
    record = {"targets": {"brown": target, "darker": {**target, "flip_rate_by_confidence": [
        {"top_probability": [0.0, 0.5], "n": 0, "flip_rate": None},
        {"top_probability": [0.5, 0.8], "n": 4, "flip_rate": 0.5},
        {"top_probability": [0.8, 1.0], "n": 6, "flip_rate": 0.0}]}}}
    (tmp_path / "skin_tone_counterfactual.json").write_text(json.dumps(record))
    text = _skin_tone_section(tmp_path)
    assert ("50.0 % of the 4 images read with a top-class probability in [0.5, 0.8); "
            "0.0 % of the 6 images read with a top-class probability in [0.8, 1]") in text
    assert "[0, 0.5)" not in text
    del record["targets"]["darker"]["flip_rate_by_confidence"]
    (tmp_path / "skin_tone_counterfactual.json").write_text(json.dumps(record))
    assert "by how sure" not in _skin_tone_section(tmp_path)


def test_card_gives_the_whole_field_rows_and_the_flips_of_inverted_lesions(tmp_path: Path) -> None:
    from classndiff.evaluation.card_sections import _skin_tone_section

    target = {"median_skin_ita": -15.0, "n": 10, "flip_rate": 0.2,
              "malignant_change_mean": 0.01, "accuracy_before": 0.8, "accuracy_after": 0.7,
              "malignant_auc_before": 0.9, "malignant_auc_after": 0.88}
    record = {"targets": {"darker": {**target, "flip_rate_by_contrast": {
        "kept": {"n": 6, "flip_rate": 1 / 6}, "inverted": {"n": 4, "flip_rate": 0.25}}}},
        "whole_field": {"darker": {**target, "flip_rate": 0.05}}}
    (tmp_path / "skin_tone_counterfactual.json").write_text(json.dumps(record))
    text = _skin_tone_section(tmp_path)
    assert "| darker, whole field (median skin ITA -15.0°) | 10 | 5.0 % |" in text
    assert text.count("| — → — |") == 2  # no sensitivity in this record: dashes
    assert "leaves 4 of the 10 lesions paler than their new skin" in text
    assert "25.0 % of those flip, against 16.7 % of the 6" in text


def test_card_gives_the_answers_each_camera_shift_changes(tmp_path: Path) -> None:
    from classndiff.evaluation.card_sections import _camera_shift_section

    row = {"accuracy": 0.8, "balanced_accuracy": 0.7, "macro_auc": 0.9, "malignant_auc": 0.9}
    record = {"shifts": {"none": {**row, "malignant_sensitivity": 0.6, "answers_changed": 0.0},
                         "quarter turn (control: no camera shift)": {
                             **row, "malignant_sensitivity": 0.5, "answers_changed": 0.071},
                         "blur (older record)": row}}
    (tmp_path / "camera_shift.json").write_text(json.dumps(record))
    text = _camera_shift_section(tmp_path)
    assert "| quarter turn (control: no camera shift) | 0.800 | 0.700 | 0.900 | 0.500 | 7.1 % |" \
        in text
    assert "| blur (older record) | 0.800 | 0.700 | 0.900 | — | — |" in text


def test_app_summary_says_when_the_uploads_fine_detail_is_kept() -> None:
    from types import SimpleNamespace

    from demo.render import counterfactual_markdown

    settings = {"strength": 0.9, "seconds": 1.2, "margin": 32, "margin_share": 0.3}
    cf = SimpleNamespace(reason=None, target="mel", probabilities_before={"mel": 0.1},
                         probabilities_after={"mel": 0.8}, settings=settings)
    assert "fine detail" not in counterfactual_markdown(cf)
    settings["detail"] = 1.0
    assert "the upload's own fine detail (hairs, skin lines)" in counterfactual_markdown(cf)
    assert "redraws" not in counterfactual_markdown(cf)
    settings["candidates"] = 4
    assert "of 4 redraws, the one the model's own classifier" in counterfactual_markdown(cf)


def test_app_says_what_the_whole_field_test_found_for_this_skin() -> None:
    """A diagnosis on darker skin carries the weights' whole-field figures: the app says them
    beside the answer, and nothing when the record is absent or the model abstained."""
    from types import SimpleNamespace

    from demo.render import diagnosis_markdown

    check = {"group": "darker", "split": "test", "n": 1497, "flip_rate": 0.185,
             "band": [0.5, 0.8], "band_flip_rate": 0.372, "sensitivity_before": 0.646,
             "sensitivity_after": 0.371}
    d = SimpleNamespace(prediction="nv", confidence=0.7, reason=None, malignant=0.1,
                        calibrated=True, skin_tone={"group": "darker", "ita": -20.0},
                        extras={"skin_tone_check": check})
    text = diagnosis_markdown(d, None)
    assert ("the model changed 18.5 % of its answers overall and 37.2 % of the answers it was "
            "as sure of as this one (top class 50–80 %); it called 37.1 % of the malignant "
            "lesions malignant, against 64.6 % on the originals") in text
    assert "1,497 test images" in text
    d.extras = {"skin_tone_check": {**check, "sensitivity_before": None}}
    assert "called" not in diagnosis_markdown(d, None)  # no malignant lesion measured
    assert "Skin like this" in diagnosis_markdown(d, None)
    d.extras = {}
    assert "Skin like this" not in diagnosis_markdown(d, None)
    d.extras, d.prediction = {"skin_tone_check": check}, None
    assert "Skin like this" not in diagnosis_markdown(d, None)


def test_the_report_carries_the_fairness_tables_written_beside_it(tmp_path: Path) -> None:
    from classndiff.evaluation.report.markdown_sections import fairness_tables_md

    assert fairness_tables_md(None) == [] and fairness_tables_md(tmp_path) == []
    (tmp_path / "fairness_table_shipped.md").write_text("| arm |\n|---|\n| chain row |\n")
    text = "\n".join(fairness_tables_md(tmp_path))
    assert text.startswith("## Fairness tables") and "| chain row |" in text
    assert "fairness_shipped.sh" in text and "fairness_arms.sh" not in text
    (tmp_path / "fairness_table.md").write_text("| arm |\n|---|\n| main row |\n")
    text = "\n".join(fairness_tables_md(tmp_path))
    assert text.index("| main row |") < text.index("| chain row |")


def test_the_card_names_the_skin_tone_terms_that_trained_the_classifier() -> None:
    from classndiff.config import TrainConfig
    from classndiff.evaluation.card import _fairness_terms

    assert _fairness_terms(TrainConfig()) == ""
    text = _fairness_terms(TrainConfig(classifier_retint=0.5, tone_consistency=3.0))
    assert text == (" + the skin around the lesion re-tinted to another tone on 50% of the real "
                    "images + λ_c·KL(classifier(real) ‖ classifier(real, skin re-tinted)), "
                    "λ_c = 3")
    assert "λ_adv = 1" in _fairness_terms(TrainConfig(lambda_adv=1.0))


def test_the_cards_camera_table_shows_the_malignant_call_when_measured(tmp_path: Path) -> None:
    from classndiff.evaluation.card_sections import _camera_shift_section

    row = {"accuracy": 0.8, "balanced_accuracy": 0.7, "malignant_auc": 0.9,
           "malignant_sensitivity": 0.6, "answers_changed": 0.05}
    (tmp_path / "camera_shift.json").write_text(json.dumps({"shifts": {"blur": row}}))
    text = _camera_shift_section(tmp_path)
    assert "malignant call" not in text
    assert "| blur | 0.800 | 0.700 | 0.900 | 0.600 | 5.0 % |" in text
    (tmp_path / "camera_shift.json").write_text(json.dumps({
        "malignant_call_threshold": 0.251,
        "shifts": {"blur": {**row, "malignant_call": {"sensitivity": 0.75, "specificity": 0.8}}}}))
    text = _camera_shift_section(tmp_path)
    assert "malignant call (P ≥ 0.251): sensitivity / specificity |" in text
    assert "| blur | 0.800 | 0.700 | 0.900 | 0.600 | 0.750 / 0.800 | 5.0 % |" in text


def test_the_cards_skin_tone_table_shows_the_call_when_measured(tmp_path: Path) -> None:
    from classndiff.evaluation.card_sections import _skin_tone_section

    row = {"median_skin_ita": -15.0, "n": 10, "flip_rate": 0.1, "malignant_change_mean": 0.0,
           "accuracy_before": 0.8, "accuracy_after": 0.7, "malignant_auc_before": 0.9,
           "malignant_auc_after": 0.85, "malignant_sensitivity_before": 0.6,
           "malignant_sensitivity_after": 0.5}
    (tmp_path / "skin_tone_counterfactual.json").write_text(
        json.dumps({"targets": {"darker": row}}))
    assert "malignant call" not in _skin_tone_section(tmp_path)
    row.update(malignant_call_threshold=0.251, malignant_call_sensitivity_before=0.8,
               malignant_call_sensitivity_after=0.75)
    (tmp_path / "skin_tone_counterfactual.json").write_text(
        json.dumps({"targets": {"darker": row}}))
    text = _skin_tone_section(tmp_path)
    assert "malignant call (P ≥ 0.251) sensitivity before → after |" in text
    assert "| 0.600 → 0.500 | 0.800 → 0.750 |" in text


def test_card_yardstick_gives_the_second_fd_only_when_measured(tmp_path: Path) -> None:
    """The card's generation table adds FD in the evaluator's features when the yardstick
    record has it, and stays as it was for a record from before it existed."""
    from classndiff.evaluation.card_sections import _yardstick_section

    model = {"fd": 61.0, "kid": 0.03, "precision": 0.73, "recall": 0.53,
             "diversity_ratio": 0.83, "blockiness": 1.11, "class_fidelity_macro": 0.89}
    floor = {"fd": 37.7, "class_fidelity_macro": 0.88}
    record = {"count": 224, "per_class": 32, "size": 64, "model": model, "real_floor": floor}
    (tmp_path / "generator_yardstick.json").write_text(json.dumps(record))
    assert "evaluator's features" not in _yardstick_section(tmp_path)
    record["model"]["fd_evaluator"], record["real_floor"]["fd_evaluator"] = 75.3, 40.2
    (tmp_path / "generator_yardstick.json").write_text(json.dumps(record))
    row = next(line for line in _yardstick_section(tmp_path).splitlines()
               if "evaluator's features" in line)
    assert "75.3" in row and "40.2" in row
    assert "class mix |" not in _yardstick_section(tmp_path)
    record["model"]["fd_evaluator_mix_matched"] = 31.4
    record["real_floor"]["fd_evaluator_mix_matched"] = 11.2
    (tmp_path / "generator_yardstick.json").write_text(json.dumps(record))
    row = next(line for line in _yardstick_section(tmp_path).splitlines()
               if "evaluator's features), real images re-weighted" in line)
    assert "31.4" in row and "11.2" in row


def test_report_and_card_hold_the_same_numbers_to_the_same_bars() -> None:
    """One table of bars (DESIGN.md): a model with accuracy 0.81 misses the 0.82 bar in the
    report and in the model card alike, and an ECE under the bar meets it in both."""
    from classndiff.evaluation.card_sections import classification_rows
    from classndiff.evaluation.report.markdown import _bars_md

    cls = {"accuracy": 0.81, "balanced_accuracy": 0.72, "macro_auc": 0.955,
           "malignant_auc": 0.925, "ece": 0.03}
    card = classification_rows(cls)
    report = "\n".join(_bars_md({"classification": cls, "calibrated": True}, {"model": "m"}))
    for text in (card, report):
        assert "| ≥ 0.82 | **no** |" in text  # accuracy
        assert "| ≥ 0.70 | yes |" in text  # balanced accuracy
        assert "| ≥ 0.93 | **no** |" in text  # malignant AUC
        assert "| ≤ 0.05 | yes |" in text  # ECE
