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
