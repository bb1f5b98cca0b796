"""Shared fixtures: a tiny HAM10000-style dataset made on the fly (no dataset image is ever
committed) and a tiny model trained on it for a few steps."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classndiff.labels import DX_CODES

torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_MODEL = {
    "image_size": 16, "in_channels": 3, "patch_size": 4, "hidden_size": 32, "depth": 2,
    "num_heads": 2, "classifier_backbone": "test_resnet", "classifier_image_size": 32,
    "pixel_size": 32, "num_train_timesteps": 100,
}
TINY_TRAIN = {
    "batch_size": 8, "max_steps": 4, "warmup_steps": 1, "log_every": 2, "eval_every": 4,
    "checkpoint_every": 2, "mixed_precision": "no",
}


def make_lesion(rng: np.random.Generator, dx_index: int, size: int = 40) -> np.ndarray:
    """A synthetic 'lesion': a skin-coloured square with a class-coloured blob."""
    skin = np.array([220, 180, 160]) - rng.integers(0, 40)
    image = np.ones((size, size, 3)) * skin
    yy, xx = np.mgrid[:size, :size]
    r = size * (0.2 + 0.03 * dx_index)
    blob = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r**2
    colour = np.array([40 + 30 * dx_index, 120 - 10 * dx_index, 60 + 20 * (dx_index % 3)])
    image[blob] = colour
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_dataset(root: Path, per_class: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    tones = ["lighter", "brown", "darker", "unknown"]
    splits = ["train", "train", "train", "train", "val", "test"]
    for c, dx in enumerate(DX_CODES):
        for i in range(per_class):
            image_id = f"ISIC_{c:02d}{i:05d}"
            Image.fromarray(make_lesion(rng, c)).save(root / "images" / f"{image_id}.jpg")
            mask = np.zeros((40, 40), bool)
            mask[10:30, 10:30] = True
            Image.fromarray(mask).save(root / "masks" / f"{image_id}.png")
            rows.append({
                "image": f"images/{image_id}.jpg", "image_id": image_id,
                "lesion_id": f"HAM_{c:02d}{i:05d}", "dx": dx,
                "malignant": int(dx in ("mel", "bcc", "akiec")),
                "sex": ["male", "female", "unknown"][i % 3], "age": 50,
                "skin_tone_group": tones[i % 4], "split": splits[i % len(splits)],
                "ita": 60.0, "ita_reliable": 1,
            })
    with (root / "metadata.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ham_tiny"))


@pytest.fixture(scope="session")
def tiny_config(tiny_data: Path):
    from classndiff.config import ClassNDiffConfig

    return ClassNDiffConfig.from_dict({
        "model": TINY_MODEL,
        "train": {**TINY_TRAIN, "data_dir": str(tiny_data)},
        # A strength of nv's own: the app's slider must follow the target.
        "sampling": {"steps": 4, "max_images": 8, "max_steps": 100,
                     "counterfactual_strength_by_target": {"nv": 0.45}},
    })


@pytest.fixture(scope="session")
def tiny_weights(tiny_config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for a few steps and exported: a real checkpoint folder."""
    from classndiff.training.trainer import train

    out = tmp_path_factory.mktemp("tiny_run")
    train(tiny_config, out)
    return out


@pytest.fixture(scope="session")
def tiny_pipe(tiny_weights: Path):
    from classndiff import ClassNDiffPipeline

    return ClassNDiffPipeline.from_pretrained(tiny_weights, device="cpu")


@pytest.fixture(scope="session")
def app_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """app.py served on a free loopback port (tests/app_server.py), on the tiny weights or on
    CLASSNDIFF_APP_TEST_WEIGHTS (e.g. a real model, for screenshots)."""
    from tests.app_server import running_app

    weights = os.environ.get("CLASSNDIFF_APP_TEST_WEIGHTS") or request.getfixturevalue(
        "tiny_weights")
    workdir = tmp_path_factory.mktemp("app")
    examples = workdir / "examples"  # stand-ins for examples/, which the app offers
    examples.mkdir()
    rng = np.random.default_rng(1)
    for c in (4, 5):
        Image.fromarray(make_lesion(rng, c, size=96)).save(examples / f"{DX_CODES[c]}_0.png")
    with running_app(weights, workdir, extra_env={"CLASSNDIFF_EXAMPLES": str(examples)}) as server:
        yield server
