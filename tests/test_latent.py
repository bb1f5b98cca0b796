"""Latent space: a config naming a diffusers AutoencoderKL trains on cached latents and
generates through the decoder. A tiny random VAE saved to a folder stands in for the SD VAE."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from classndiff import ClassNDiffPipeline
from classndiff.training.trainer import Trainer
from tests.conftest import make_lesion


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory) -> str:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), norm_num_groups=8, sample_size=32,
    )
    folder = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(folder)
    return str(folder)


def test_latent_space_trains_on_cached_latents_and_generates(tiny_config, tiny_vae, tmp_path):
    config = tiny_config.override({
        "model.vae": tiny_vae, "model.in_channels": 4, "model.image_size": 16,
        "model.vae_scaling_factor": 1.0,
    })
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.latents is not None and trainer.latents.shape[1:] == (4, 16, 16)
    cache = tmp_path / "run" / "latent_cache" / "train.safetensors"
    assert cache.exists()  # encoded once, reused on the next run
    trainer.train(2)
    pipe = ClassNDiffPipeline.from_pretrained(tmp_path / "run", device="cpu")
    out = pipe.generate(dx="bcc", num_images=2, steps=2, seed=0)
    assert out.images[0].size == (32, 32)  # decoded back to pixels
    image = Image.fromarray(make_lesion(np.random.default_rng(0), 1, size=64))
    d = pipe.diagnose(image)
    assert sum(d.probabilities.values()) == pytest.approx(1, abs=1e-5)
