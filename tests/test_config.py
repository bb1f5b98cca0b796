from __future__ import annotations

import json
from pathlib import Path

import pytest

from classndiff.config import ClassNDiffConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name", ["embedded.json", "paper.json"])
def test_shipped_configs_load_and_round_trip(name, tmp_path):
    config = ClassNDiffConfig.from_json(CONFIGS / name)
    config.to_json(tmp_path / "c.json")
    assert ClassNDiffConfig.from_json(tmp_path / "c.json") == config


def test_paper_config_is_latent_space_and_embedded_is_pixel_space():
    assert ClassNDiffConfig.from_json(CONFIGS / "paper.json").model.vae
    assert ClassNDiffConfig.from_json(CONFIGS / "embedded.json").model.vae is None


def test_unknown_keys_are_rejected(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"model": {"hidden": 3}}))
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ClassNDiffConfig.from_json(path)
    with pytest.raises(ValueError, match="unknown config key"):
        ClassNDiffConfig().override({"train.nope": 1})


def test_the_training_record_reads_and_writes_both_of_its_json_forms() -> None:
    """One stage is stored flat, several under "stages"; a fine-tune appends its stage and
    keeps the old classifier unless it beat it (classifier_step 0 = never beaten)."""
    from classndiff.config import ClassNDiffConfig, TrainingRecord, TrainingStage

    flat = {"step": 10, "classifier_step": 8, "step_kind": "joint", "images_seen": 320,
            "wall_seconds": 12.5, "command": "classndiff train"}
    record = TrainingRecord.from_json(flat)
    assert record.to_json() == flat and record.classifier_stage == 1
    kept = record.then(TrainingStage(step=5, classifier_step=0, images_seen=160))
    assert (kept.classifier_step, kept.classifier_stage, kept.step) == (8, 1, 5)
    beaten = record.then(TrainingStage(step=5, classifier_step=4, images_seen=160))
    assert (beaten.classifier_step, beaten.classifier_stage) == (4, 2)
    config = ClassNDiffConfig()
    config.training = beaten
    again = ClassNDiffConfig.from_dict(config.to_dict()).training
    assert again == beaten and config.extra["training"]["stages"][0] == flat
    assert ClassNDiffConfig().training is None


def test_the_denoiser_stage_skips_later_classifier_only_fine_tunes() -> None:
    """The stage a generator yardstick credits with the denoiser: not a later stage whose
    command froze the generator (train.learning_rate=0), but one that set it to 0.0003."""
    from classndiff.config import TrainingRecord, TrainingStage

    generator = TrainingStage(step=5548, command="classndiff train --set train.lambda_cls=0")
    tuned = TrainingStage(step=500, command="classndiff train --set train.learning_rate=0 "
                                            "--set train.classifier_learning_rate=0.0001")
    record = TrainingRecord([TrainingStage(step=10), generator, tuned])
    assert record.denoiser_stage == 2
    warm = TrainingStage(step=7, command="classndiff train --set train.learning_rate=0.0003")
    assert TrainingRecord([generator, tuned, warm]).denoiser_stage == 3
    frozen_end = TrainingStage(step=1, command="classndiff train --set train.learning_rate=0.0")
    assert TrainingRecord([generator, frozen_end]).denoiser_stage == 1
