"""The `classndiff` command, end to end on the tiny dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classndiff.cli.main import main
from tests.conftest import make_lesion


def test_train_resume_sample_classify_evaluate_export(tiny_config, tiny_data, tmp_path, capsys):
    config_path = tmp_path / "tiny.json"
    tiny_config.to_json(config_path)
    run = tmp_path / "run"
    assert main(["train", "--config", str(config_path), "--output-dir", str(run),
                 "--max-steps", "2"]) == 0
    assert (run / "config.json").exists() and (run / "model.safetensors").exists()
    assert (run / "log.csv").read_text().startswith("step,")
    # Resume continues from the checkpoint instead of starting over.
    assert main(["train", "--config", str(config_path), "--output-dir", str(run),
                 "--max-steps", "4", "--resume"]) == 0
    steps = [line.split(",")[0] for line in (run / "log.csv").read_text().splitlines()[1:]]
    assert steps == ["2", "4"]

    out = tmp_path / "samples"
    assert main(["sample", str(run), "--dx", "mel", "-n", "2", "--steps", "2",
                 "--output-dir", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    sidecar = json.loads(next(out.glob("*.json")).read_text())
    assert len(pngs) == 2 and sidecar["dx"] == "mel" and len(sidecar["images"]) == 2

    capsys.readouterr()
    lesion = tmp_path / "lesion.png"
    Image.fromarray(make_lesion(np.random.default_rng(0), 4, size=64)).save(lesion)
    assert main(["classify", str(lesion), "--weights", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sum(result[0]["probabilities"].values()) == pytest.approx(1, abs=1e-5)

    report = tmp_path / "metrics.json"
    assert main(["evaluate", str(run), "--data-dir", str(tiny_data), "--output",
                 str(report)]) == 0
    metrics = json.loads(report.read_text())["classification"]
    assert {"accuracy", "balanced_accuracy", "macro_auc", "malignant_auc"} <= set(metrics)

    exported = tmp_path / "export"
    assert main(["export", str(run), "--output-dir", str(exported)]) == 0
    card = (exported / "README.md").read_text()
    assert "cc-by-nc-4.0" in card and (exported / "model.safetensors").exists()


def test_classify_reports_a_bad_file_without_a_traceback(tiny_weights, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["classify", str(bad), "--weights", str(tiny_weights)]) == 1
    assert "error:" in capsys.readouterr().out


def test_bad_sample_arguments_are_a_message_and_exit_code_2(tiny_weights, capsys):
    assert main(["sample", str(tiny_weights), "-n", "999", "--output-dir", "/tmp/x"]) == 2
    assert "num_images" in capsys.readouterr().err


def test_measurement_harnesses_run_through_the_cli(tiny_weights: Path, tiny_data: Path,
                                                   tmp_path: Path) -> None:
    """`classndiff saliency` / `classndiff trust` hand their options to the harnesses."""
    out = tmp_path / "saliency.json"
    assert main(["saliency", str(tiny_weights), "--data-dir", str(tiny_data), "--limit", "3",
                 "--output", str(out)]) == 0
    assert "mask_energy" in json.loads(out.read_text())
    with pytest.raises(SystemExit) as exit_info:
        main(["trust", "--help"])
    assert exit_info.value.code == 0
