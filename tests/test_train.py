"""Training-loop behaviour: time budget, export of the final denoiser with the best
classifier, fine-tuning from exported weights, half-precision export, augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from classndiff.data import read_metadata
from classndiff.hub import load_pretrained
from classndiff.training.augment import augment
from classndiff.training.lr import lr_factor
from classndiff.training.trainer import Trainer


def test_augment_is_a_per_image_dihedral_map() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.arange(6 * 3 * 4 * 4, dtype=torch.float32).view(6, 3, 4, 4)
    out = augment(images, g)
    assert out.shape == images.shape
    for a, b in zip(images, out):  # each output is one of the 8 flips/turns of its input
        views = [torch.rot90(v, k, dims=(-2, -1)) for v in (a, a.flip(-1)) for k in range(4)]
        assert any(torch.equal(b, v) for v in views)
    again = augment(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_lr_schedule_follows_the_time_budget() -> None:
    assert lr_factor(5, 10, 1000) < lr_factor(9, 10, 1000)  # warm-up
    assert abs(lr_factor(500, 0, 1000, time_progress=1.0) - 0.1) < 1e-9  # out of time: floor
    assert lr_factor(500, 0, 1000, time_progress=0.0) > 0.5


def test_time_budget_stops_training_and_exports(tiny_config, tmp_path: Path) -> None:
    config = tiny_config.override({"train.max_steps": 10_000, "train.time_budget_s": 0.5,
                                   "train.eval_every": 10_000})
    trainer = Trainer(config, tmp_path)
    trainer.train()
    assert 0 < trainer.step < 10_000
    assert (tmp_path / "model.safetensors").exists()
    assert (tmp_path / "last" / "model.safetensors").exists()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["extra"]["training"]["step"] == trainer.step


def test_export_pairs_final_denoiser_with_best_classifier(tiny_config, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config.override({"train.export_dtype": "float16"}), tmp_path)
    trainer.train(max_steps=2)
    best = {k: v.clone() for k, v in trainer.ema.module.classifier.state_dict().items()}
    assert trainer.keep_if_best({"score": 1e9})  # a score no later validation can beat
    trainer.train(max_steps=6)  # validates at step 6 and exports: `best` stays
    assert trainer.best_step == 2
    tensors = load_file(str(tmp_path / "model.safetensors"))
    assert tensors["denoiser.x_embedder.proj.weight"].dtype == torch.float16
    final_denoiser = trainer.ema.module.denoiser.state_dict()
    for key, value in final_denoiser.items():
        if value.is_floating_point():
            torch.testing.assert_close(tensors[f"denoiser.{key}"].float(), value.float(),
                                       atol=2e-3, rtol=2e-3)
    for key, value in best.items():
        if value.is_floating_point():
            torch.testing.assert_close(tensors[f"classifier.{key}"].float(), value.float(),
                                       atol=2e-3, rtol=2e-3)
    model, config, _ = load_pretrained(tmp_path)
    assert next(model.parameters()).dtype == torch.float32  # float16 on disk, float32 loaded
    assert config.extra["training"]["classifier_step"] == 2


def test_init_from_starts_from_exported_weights(tiny_config, tiny_weights: Path,
                                                tmp_path: Path) -> None:
    trainer = Trainer(tiny_config, tmp_path, init_from=tiny_weights)
    source = load_file(str(tiny_weights / "model.safetensors"))
    state = trainer.net.state_dict()
    key = "denoiser.x_embedder.proj.weight"
    torch.testing.assert_close(state[key], source[key].float())
    assert trainer.step == 0 and trainer.best_classifier is not None


def test_resume_with_init_from_starts_from_the_weights_then_from_the_checkpoint(
        tiny_config, tiny_weights: Path, tmp_path: Path) -> None:
    """`--resume --init-from W` is one command for every run of a fine-tune: with no
    checkpoint yet it starts from W (not from a random model), later from its checkpoint."""
    key = "denoiser.x_embedder.proj.weight"
    source = load_file(str(tiny_weights / "model.safetensors"))[key].float()
    config = tiny_config.override({"train.checkpoint_every": 2, "train.eval_every": 10_000})
    first = Trainer(config, tmp_path, resume=True, init_from=tiny_weights)
    torch.testing.assert_close(first.net.state_dict()[key], source)
    first.train(max_steps=4, stop_at=2)
    trained = first.net.state_dict()[key].clone()
    assert not torch.equal(trained, source)
    again = Trainer(config, tmp_path, resume=True, init_from=tiny_weights)
    assert again.step == 2
    torch.testing.assert_close(again.net.state_dict()[key], trained)


def test_init_from_weights_of_another_shape_names_the_fix(tiny_config, tiny_weights: Path,
                                                          tmp_path: Path) -> None:
    """Weights that do not fit the configured model (another patch size) are refused with a
    message that says to train with their own config, not a torch size-mismatch trace."""
    other = tiny_config.override({"model.patch_size": tiny_config.model.patch_size * 2})
    with pytest.raises(ValueError, match=r"do not fit.*--config .*config\.json"):
        Trainer(other, tmp_path, init_from=tiny_weights)


def test_synthetic_images_join_the_classifier_pool_only(tiny_config, tmp_path: Path) -> None:
    """train.synthetic_dir adds a data-layout folder's train images to the classifier's pool,
    and is refused while the denoiser trains (it must not learn from its own samples)."""
    from tests.conftest import make_dataset

    extra = make_dataset(tmp_path / "synthetic", per_class=2, seed=5)
    real = Trainer(tiny_config.override({"train.learning_rate": 0.0}), tmp_path / "real")
    config = tiny_config.override({"train.learning_rate": 0.0, "train.synthetic_dir": str(extra)})
    mixed = Trainer(config, tmp_path / "mixed")
    added = sum(r["split"] == "train" for r in read_metadata(extra))
    assert added and len(mixed.train_set) == len(real.train_set) + added
    assert len(mixed.sample_weights) == len(mixed.train_set) == len(mixed.train_images)
    mixed.train(max_steps=2)
    with pytest.raises(ValueError, match="classifier only"):
        Trainer(config.override({"train.learning_rate": 1e-4}), tmp_path / "refused")
