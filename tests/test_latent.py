"""Latent space: a config naming a diffusers AutoencoderKL trains on cached latents and
generates through the decoder. A tiny random VAE saved to a folder stands in for the SD VAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
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


# ---------------------------------------------------------------- an autoencoder trained here
TINY_AUTOENCODER = {"image_size": 32, "block_out_channels": [8, 16], "norm_num_groups": 8,
                    "perceptual_size": 32, "batch_size": 4, "max_steps": 3, "warmup_steps": 1,
                    "log_every": 1, "eval_every": 3, "checkpoint_every": 3, "val_images": 8,
                    "mixed_precision": "no"}


@pytest.fixture(scope="module")
def trained_autoencoder(tiny_data, tmp_path_factory) -> Path:
    from classndiff.training.autoencoder import AutoencoderConfig, train_autoencoder

    folder = tmp_path_factory.mktemp("autoencoder")
    train_autoencoder(folder, AutoencoderConfig.from_dict(TINY_AUTOENCODER), tiny_data)
    return folder


def test_autoencoder_trains_resumes_and_exports_a_unit_variance_scale(trained_autoencoder,
                                                                      tiny_data):
    import json

    from diffusers import AutoencoderKL

    from classndiff.training.autoencoder import AutoencoderConfig, train_autoencoder
    from classndiff.training.evaluator import load_split

    settings = json.loads((trained_autoencoder / "autoencoder.json").read_text())
    assert settings["steps"] == 3 and settings["config"]["block_out_channels"] == [8, 16]
    assert (trained_autoencoder / "reconstructions.png").is_file()
    log = (trained_autoencoder / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,") and "perceptual" in log[0] and len(log) >= 4
    vae = AutoencoderKL.from_pretrained(trained_autoencoder / "vae").eval()
    images = load_split(tiny_data, "train", 32).images
    with torch.no_grad():
        latents = vae.encode(images.float() / 127.5 - 1).latent_dist.mode()
    assert latents.shape[1:] == (4, 16, 16)  # f = 2: one halving
    # The scale makes the training latents unit-variance (the noise schedule assumes it).
    assert float(latents.std()) * settings["scaling_factor"] == pytest.approx(1.0, rel=1e-3)
    # A resumed run continues from its checkpoint instead of starting again.
    longer = AutoencoderConfig.from_dict({**TINY_AUTOENCODER, "max_steps": 5})
    train_autoencoder(trained_autoencoder, longer, tiny_data, resume=True)
    assert json.loads((trained_autoencoder / "autoencoder.json").read_text())["steps"] == 5
    assert len((trained_autoencoder / "log.csv").read_text().splitlines()) == len(log) + 2


@pytest.fixture(scope="module")
def fine_tuned_decoder(trained_autoencoder, tiny_data, tiny_weights, tmp_path_factory) -> Path:
    """`trained_autoencoder`'s decoder fine-tuned, encoder frozen, colour and class terms on."""
    from classndiff.training.autoencoder import AutoencoderConfig, train_autoencoder

    folder = tmp_path_factory.mktemp("decoder")
    train_autoencoder(folder, AutoencoderConfig.from_dict({
        **TINY_AUTOENCODER, "init_from": str(trained_autoencoder), "train_encoder": False,
        "color_weight": 1.0, "class_weight": 0.5, "class_teacher": str(tiny_weights)}),
        tiny_data)
    return folder


def test_decoder_fine_tune_keeps_the_latents_and_adds_colour_and_class_terms(
        trained_autoencoder, fine_tuned_decoder, tiny_data):
    """From an exported autoencoder, with the encoder frozen: the latents (and so any denoiser
    trained in them) stay exactly the same, the decoder changes, and the colour and
    class-consistency terms are trained on and logged."""
    import json

    from classndiff.hub import load_vae
    from classndiff.training.evaluator import load_split

    tmp_path = fine_tuned_decoder
    before, after = (load_vae(str(folder), "vae") for folder in (trained_autoencoder, tmp_path))
    images = load_split(tiny_data, "train", 32).images[:4].float() / 127.5 - 1
    with torch.no_grad():
        z_before = before.encode(images).latent_dist.mode()
        z_after = after.encode(images).latent_dist.mode()
        assert torch.equal(z_before, z_after)
        assert not torch.allclose(before.decode(z_before).sample, after.decode(z_after).sample)
    header = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    assert {"color", "class_kl", "val_class_kl"} <= set(header)
    rows = (tmp_path / "log.csv").read_text().splitlines()[1:]
    assert all(row.split(",")[header.index("class_kl")] for row in rows)
    settings = json.loads((tmp_path / "autoencoder.json").read_text())
    assert settings["scaling_factor"] == pytest.approx(
        json.loads((trained_autoencoder / "autoencoder.json").read_text())["scaling_factor"])


def test_class_consistency_is_zero_for_equal_images_and_positive_for_others(tiny_weights):
    from classndiff.training.autoencoder import ClassConsistency, load_class_teacher

    rng = np.random.default_rng(0)
    a, b = (torch.from_numpy(make_lesion(rng, c, size=64)).permute(2, 0, 1)[None].float()
            / 127.5 - 1 for c in (1, 5))
    term = ClassConsistency(load_class_teacher(tiny_weights))
    assert float(term(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(term(b, a)) > 0


def test_chroma_sees_hue_not_brightness_and_balanced_sampling_draws_by_weight(tiny_data):
    from classndiff.training.autoencoder import (
        AutoencoderConfig,
        AutoencoderTrainer,
        to_chroma,
    )
    from classndiff.training.evaluator import load_split

    grey = torch.full((1, 3, 4, 4), 0.3)
    assert to_chroma(grey).abs().max() < 1e-6
    assert to_chroma(grey + 0.5).abs().max() < 1e-6  # brightness is not chroma
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    cb, cr = to_chroma(red)[0, :, 0, 0]
    assert cr > 0.9 and cb < 0  # red: high Cr
    # All the weight on one image: every drawn image is a flip or turn of it.
    images = load_split(tiny_data, "train", 32).images
    weights = torch.zeros(len(images))
    weights[3] = 1.0
    trainer = AutoencoderTrainer(images, images, AutoencoderConfig.from_dict(TINY_AUTOENCODER),
                                 None, initial_weights=False, sample_weights=weights)
    batch = trainer.next_batch()
    target = images[3].float() / 127.5 - 1
    views = [torch.rot90(v, k, dims=(-2, -1)) for v in (target, target.flip(-1))
             for k in range(4)]
    assert all(any(torch.allclose(x, v) for v in views) for x in batch)


def test_perceptual_distance_is_zero_for_equal_images_and_ranks_changes():
    from classndiff.training.autoencoder import PerceptualDistance

    rng = np.random.default_rng(0)
    lesions = [torch.from_numpy(make_lesion(rng, c, size=64)).permute(2, 0, 1)[None].float()
               / 127.5 - 1 for c in (1, 5)]
    distance = PerceptualDistance(size=64)
    x, other = lesions
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    assert float(distance(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert 0 < float(distance(x, blurred)) < float(distance(x, other))


def test_denoiser_in_bundled_latents_trains_generates_and_edits(tiny_config, trained_autoencoder,
                                                                tmp_path):
    from classndiff.training.trainer import train

    config = tiny_config.override({"train.autoencoder_dir": str(trained_autoencoder),
                                   "train.classifier_learning_rate": 0, "train.lambda_cls": 0.2})
    trainer = Trainer(config, tmp_path / "run")
    assert config.model.image_size == 16 and config.model.in_channels == 4
    assert trainer.latents.shape[1:] == (4, 16, 16)
    trainer.train(2)
    pipe = ClassNDiffPipeline.from_pretrained(tmp_path / "run", device="cpu")
    assert pipe.model.vae is not None
    out = pipe.generate(dx="bcc", num_images=2, steps=2, seed=0)
    assert out.images[0].size == (32, 32)  # decoded by the model's own autoencoder
    image = Image.fromarray(make_lesion(np.random.default_rng(0), 1, size=64))
    d = pipe.diagnose(image)  # the classifier reads pixels (3 channels), not latents
    assert sum(d.probabilities.values()) == pytest.approx(1, abs=1e-5)
    edit = pipe.counterfactual(image, target_dx="mel", steps=4, classifier_scale=0.05)
    assert edit.image.size == (32, 32)  # at the size uploads are read at (pixel_size)
    # Training left the autoencoder exactly as trained (frozen, and exported with the model).
    from safetensors.torch import load_file

    exported = load_file(str(tmp_path / "run" / "model.safetensors"))
    trained = load_file(str(trained_autoencoder / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(exported[f"vae.{k}"], v) for k, v in trained.items())
    # A continued run finds the autoencoder in the weights it starts from, and a resumed one
    # encodes its latents with the autoencoder of its checkpoint (not a fresh random one).
    plain = tiny_config.override({"train.classifier_learning_rate": 0})
    train(plain, tmp_path / "more", max_steps=1, init_from=tmp_path / "run")
    more = load_file(str(tmp_path / "more" / "model.safetensors"))
    assert all(torch.equal(more[f"vae.{k}"], v) for k, v in trained.items())
    resumed = Trainer(plain, tmp_path / "more", resume=True, init_from=tmp_path / "run")
    assert resumed.step == 1 and resumed.config.model.vae_config is not None
    assert torch.allclose(resumed.latents, trainer.latents)


def test_graft_brings_the_bundled_autoencoder_along(tiny_config, tiny_weights, trained_autoencoder,
                                                    tmp_path):
    from safetensors.torch import load_file

    from classndiff.hub import graft_denoiser

    config = tiny_config.override({"train.autoencoder_dir": str(trained_autoencoder),
                                   "train.classifier_learning_rate": 0, "train.lambda_cls": 0})
    Trainer(config, tmp_path / "run").train(1)
    graft_denoiser(tiny_weights, tmp_path / "run", tmp_path / "grafted", new_denoiser=True)
    pipe = ClassNDiffPipeline.from_pretrained(tmp_path / "grafted", device="cpu")
    assert pipe.config.model.vae_config is not None and pipe.config.model.in_channels == 4
    assert pipe.generate(dx="nv", num_images=1, steps=2, seed=0).images[0].size == (32, 32)
    before, after = (load_file(str(p / "model.safetensors"))
                     for p in (tiny_weights, tmp_path / "grafted"))
    assert any(k.startswith("vae.") for k in after)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("classifier."))
    # The report's comparison with a pixel denoiser-only folder (how the λ = 0 ablation
    # ships) builds that denoiser under this latent model's classifier.
    import json
    import shutil

    from safetensors.torch import save_file

    from classndiff.evaluation.report.sections import load_compare

    ablation = tmp_path / "ablation"
    ablation.mkdir()
    save_file({k: v.contiguous() for k, v in before.items() if k.startswith("denoiser.")},
              str(ablation / "denoiser.safetensors"))
    shutil.copy(tiny_weights / "config.json", ablation / "config.json")
    (ablation / "metrics.json").write_text(json.dumps({"classification": {}}))
    other, _ = load_compare(ablation, pipe)
    assert other.model.vae is None and pipe.model.vae is not None
    assert other.generate(dx="nv", num_images=1, steps=2, seed=0).images[0].size == (16, 16)


def test_graft_takes_a_fine_tuned_decoder_only_over_the_bundled_encoder(
        tiny_config, tiny_weights, trained_autoencoder, fine_tuned_decoder, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from classndiff.config import ClassNDiffConfig
    from classndiff.hub import graft_denoiser

    config = tiny_config.override({"train.autoencoder_dir": str(trained_autoencoder),
                                   "train.classifier_learning_rate": 0, "train.lambda_cls": 0})
    Trainer(config, tmp_path / "run").train(1)
    graft_denoiser(tiny_weights, tmp_path / "run", tmp_path / "grafted", new_denoiser=True,
                   decoder_from=fine_tuned_decoder)
    grafted = load_file(str(tmp_path / "grafted" / "model.safetensors"))
    run = load_file(str(tmp_path / "run" / "model.safetensors"))
    decoder = load_file(str(fine_tuned_decoder / "vae" / "diffusion_pytorch_model.safetensors"))
    dtype = grafted["vae.decoder.conv_in.weight"].dtype
    assert torch.equal(grafted["vae.decoder.conv_in.weight"],
                       decoder["decoder.conv_in.weight"].to(dtype))
    assert not torch.equal(grafted["vae.decoder.conv_in.weight"],
                           run["vae.decoder.conv_in.weight"].to(dtype))
    assert torch.equal(grafted["vae.encoder.conv_in.weight"],
                       run["vae.encoder.conv_in.weight"].to(dtype))
    stages = ClassNDiffConfig.from_json(tmp_path / "grafted" / "config.json").training.stages
    assert stages[-1].step_kind == "decoder" and "train_encoder=False" in stages[-1].command
    pipe = ClassNDiffPipeline.from_pretrained(tmp_path / "grafted", device="cpu")
    assert pipe.generate(dx="nv", num_images=1, steps=2, seed=0).images[0].size == (32, 32)
    # A decoder trained over another encoder would misread the latents: refused.
    other = tmp_path / "other"
    shutil.copytree(fine_tuned_decoder, other)
    weights = other / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    tensors["encoder.conv_in.weight"] = tensors["encoder.conv_in.weight"] + 0.1
    save_file(tensors, str(weights))
    with pytest.raises(ValueError, match="encoder is not the bundled one"):
        graft_denoiser(tiny_weights, tmp_path / "run", tmp_path / "refused", new_denoiser=True,
                       decoder_from=other)


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips and turns of (…, H, W)."""
    return [torch.rot90(f, k, dims=(-2, -1)) for f in (x, x.flip(-1)) for k in range(4)]


def test_classifier_learns_beside_a_latent_denoiser_from_the_same_images_as_pixels(
        tiny_config, trained_autoencoder, tmp_path):
    """The paper's set-up on latents: with classifier_learning_rate > 0 the denoiser gets
    each image's cached latents and the classifier the same image as pixels, flipped and
    turned alike; one joint step moves both."""
    config = tiny_config.override({"train.autoencoder_dir": str(trained_autoencoder),
                                   "train.classifier_learning_rate": 1e-3,
                                   "train.lambda_cls": 0.5, "train.cls_min_weight": 0.0})
    trainer = Trainer(config, tmp_path / "run")
    batch = trainer.next_batch()
    size = config.model.pixel_size
    assert batch.x0.shape[1:] == (4, 16, 16) and batch.cls_input.shape[1:] == (3, size, size)
    images = trainer.train_set.images.float()
    pixels = torch.round((batch.cls_input + 1) * 127.5)
    for x0, seen in zip(batch.x0, pixels):
        # Which training image, turned which way, the classifier saw; the denoiser must have
        # that image's latents turned the same way.
        matches = [(j, k) for j in range(len(images))
                   for k, turned in enumerate(_dihedral(images[j])) if torch.equal(turned, seen)]
        assert matches
        assert any(torch.equal(_dihedral(trainer.latents[j])[k], x0) for j, k in matches)
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()
              if k.startswith(("classifier.", "denoiser."))}
    trainer.train(1)
    after = trainer.net.state_dict()
    for part in ("classifier.", "denoiser."):
        assert any(not torch.equal(v, after[k]) for k, v in before.items() if k.startswith(part))


def test_autoencoder_ceiling_grades_reconstructions_with_the_yardstick(trained_autoencoder,
                                                                      tiny_data, tmp_path):
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "ceiling.json"
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "autoencoder_ceiling.py"), "--autoencoder",
         str(trained_autoencoder), "--data-dir", str(tiny_data), "--per-class", "2",
         "--output", str(out), "--figure", str(tmp_path / "recon.png"),
         "--class-figure", str(tmp_path / "classes.png")],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["count"] == 14 and result["size"] == 32
    assert result["model"]["fd"] > result["real_floor"]["fd"] - 1e-6 >= 0  # floor = originals
    assert 0 < result["validation"]["l1"] < 1 and result["validation"]["psnr_db"] > 0
    assert (tmp_path / "recon.png").is_file()
    from classndiff.training.evaluator import load_split

    classes = len(np.unique(load_split(tiny_data, "val", 32).dx.numpy()))
    with Image.open(tmp_path / "classes.png") as figure:  # a pair of rows per class
        assert figure.height == 3 * (2 * classes * 34 + 2)
    for accuracy in result["class_ceiling"].values():  # the evaluator on originals and on
        assert 0 <= accuracy["macro"] <= 1 and len(accuracy) > 1  # their reconstructions
    assert set(result["class_ceiling"]) == {"originals", "reconstructions"}


def test_pixel_denoiser_fine_tune_under_a_retint_config_still_loads_masks(tiny_config, tmp_path):
    """A denoiser-only fine-tune (classifier frozen) under the shipped config, whose
    classifier_retint is 0.5, must still run: the re-tint needs the masks."""
    config = tiny_config.override({"train.classifier_learning_rate": 0,
                                   "train.classifier_retint": 0.5})
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.train_set.masks is not None
    trainer.train(1)


def test_autoencoder_arms_train_and_grade_each_arm_with_its_settings(tiny_data, tmp_path):
    """benchmarks/autoencoder_arms.sh: an arm trains with its settings, then is graded; a
    finished arm is skipped when the command is run again."""
    import json
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "CLASSNDIFF_DATA": str(tiny_data), "AE_SECONDS": "1"}
    run = [
        "bash", str(root / "benchmarks" / "autoencoder_arms.sh"), str(tmp_path), "channels8"]
    done = subprocess.run(run, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    ceiling = json.loads((tmp_path / "channels8-ceiling.json").read_text())
    config = ceiling["autoencoder"]["config"]
    assert (config["norm_num_groups"], config["latent_channels"], config["chroma_weight"],
            config["balance_power"]) == (8, 8, 2.0, 0.5)
    assert (tmp_path / "channels8-classes.png").is_file()
    again = subprocess.run(run, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "train:" not in again.stderr  # nothing retrained


# ---------------------------------------------------------------- the colour-skip autoencoder
@pytest.fixture(scope="module")
def colour_skip_autoencoder(tiny_data, tmp_path_factory) -> Path:
    from classndiff.training.autoencoder import AutoencoderConfig, train_autoencoder

    folder = tmp_path_factory.mktemp("colour_skip")
    train_autoencoder(folder, AutoencoderConfig.from_dict(
        {**TINY_AUTOENCODER, "max_steps": 2, "colour_skip": True, "latent_channels": 5}),
        tiny_data)
    return folder


def test_colour_skip_latents_carry_the_pooled_colour_at_one_scale(colour_skip_autoencoder,
                                                                  tiny_data):
    """The last three latent channels are the image's RGB averaged over each cell (sampled or
    not); the export brings the learned channels to their spread, so the one scaling factor
    makes every channel unit-variance; loading keeps the class."""
    import json

    from classndiff.hub import load_vae
    from classndiff.models.autoencoder import ColourSkipAutoencoder
    from classndiff.training.evaluator import load_split

    vae = load_vae(str(colour_skip_autoencoder), "vae")
    assert isinstance(vae, ColourSkipAutoencoder)
    x = load_split(tiny_data, "train", 32).images.float() / 127.5 - 1
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
        z = posterior.mode()
        sampled = posterior.sample()
    assert z.shape[1:] == (5, 16, 16)
    pooled = torch.nn.functional.avg_pool2d(x, 2)
    assert torch.allclose(z[:, 2:], pooled, atol=1e-6)
    assert torch.allclose(sampled[:, 2:], pooled, atol=1e-5)
    learned_std = z[:, :2].std(dim=(0, 2, 3))
    assert torch.allclose(learned_std, pooled.std().expand(2), rtol=1e-3)
    assert z[:, :2].mean(dim=(0, 2, 3)).abs().max() < 1e-4
    scale = json.loads((colour_skip_autoencoder / "autoencoder.json").read_text())
    assert float(z.std()) * scale["scaling_factor"] == pytest.approx(1.0, rel=1e-3)


def test_equalising_the_learned_channels_leaves_reconstructions_unchanged():
    from classndiff.models.autoencoder import ColourSkipAutoencoder, equalise_learned_channels

    torch.manual_seed(0)
    vae = ColourSkipAutoencoder(
        latent_channels=6, block_out_channels=(8, 16), norm_num_groups=8, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        before = vae.decode(z).sample
        equalise_learned_channels(vae, z)
        z_after = vae.encode(x).latent_dist.mode()
        after = vae.decode(z_after).sample
    assert torch.allclose(before, after, atol=1e-4)
    assert torch.equal(z_after[:, 3:], z[:, 3:])  # the colour is untouched
    assert torch.allclose(z_after[:, :3].std(dim=(0, 2, 3)), z[:, 3:].std().expand(3),
                          rtol=1e-3)
    # The decoder paints on the upsampled colour: a colour change moves the output with it.
    with torch.no_grad():
        shifted = z_after.clone()
        shifted[:, 3:] += 0.5
        assert float((vae.decode(shifted).sample - after).mean()) > 0.2
        # With the decoder's own output silenced, what is left is exactly the colour, upsampled.
        vae.decoder.conv_out.weight.zero_()
        vae.decoder.conv_out.bias.zero_()
        expected = torch.nn.functional.interpolate(z_after[:, 3:], scale_factor=2,
                                                   mode="bilinear", align_corners=False)
        assert torch.allclose(vae.decode(z_after).sample, expected, atol=1e-6)


def test_denoiser_in_colour_skip_latents_trains_and_generates(tiny_config,
                                                              colour_skip_autoencoder, tmp_path):
    from classndiff.models.autoencoder import ColourSkipAutoencoder

    config = tiny_config.override({"train.autoencoder_dir": str(colour_skip_autoencoder),
                                   "train.classifier_learning_rate": 0, "train.lambda_cls": 0.2})
    Trainer(config, tmp_path / "run").train(1)
    pipe = ClassNDiffPipeline.from_pretrained(tmp_path / "run", device="cpu")
    assert isinstance(pipe.model.vae, ColourSkipAutoencoder) and pipe.config.model.in_channels == 5
    assert pipe.generate(dx="vasc", num_images=1, steps=2, seed=0).images[0].size == (32, 32)
    from classndiff.evaluation.card import _denoiser_row

    assert "colour skip" in _denoiser_row(pipe.config.model)  # the model card says so


def test_alignment_loss_is_one_minus_the_cosine_per_token_in_row_major_order() -> None:
    from classndiff.training.losses import alignment_loss

    target = torch.randn(2, 5, 3, 4)  # (N, C, h, w): 12 tokens
    tokens = target.flatten(2).transpose(1, 2)  # row-major, as PatchEmbed orders them
    assert float(alignment_loss(tokens * 3, target)) == pytest.approx(0, abs=1e-6)
    assert float(alignment_loss(-tokens, target)) == pytest.approx(2, abs=1e-6)
    # The same vectors at the wrong tokens (column-major) are not aligned.
    assert float(alignment_loss(target.transpose(2, 3).flatten(2).transpose(1, 2),
                                target)) > 0.1


def test_alignment_term_pulls_early_tokens_towards_the_classifiers_maps(
        tiny_config, trained_autoencoder, tmp_path):
    """train.lambda_align (REPA with the classifier as the encoder): the targets are the frozen
    classifier's maps of the training images pooled to the token grid, turned with the
    batch's latents without changing its draws; the term's gradient reaches the head and the
    blocks up to align_depth only; the head is checkpointed, never exported; settings it
    cannot honour are refused."""
    import torch.nn.functional as F

    from classndiff.models.diffusion import NoiseSchedule
    from classndiff.training.evaluator import as_float
    from classndiff.training.losses import joint_loss

    base = tiny_config.override({"train.autoencoder_dir": str(trained_autoencoder),
                                 "train.classifier_learning_rate": 0, "train.lambda_cls": 0})
    config = base.override({"train.lambda_align": 0.5, "train.align_depth": 1})
    trainer = Trainer(config, tmp_path / "run")
    net = trainer.net
    grid = config.model.image_size // config.model.patch_size
    channels = net.classifier.backbone.num_features
    assert trainer.align_targets.shape == (len(trainer.train_set), channels, grid, grid)
    with torch.no_grad():
        _, maps = net.classifier.eval().forward_with_maps(as_float(trainer.train_set.images[:2]))
    torch.testing.assert_close(trainer.align_targets[:2].float(),
                               F.adaptive_avg_pool2d(maps, grid), atol=2e-3, rtol=2e-3)

    # The batch's targets follow its latents' flips and turns (a stand-in target that IS the
    # latent shows it), and the draws are λ_align = 0's.
    trainer.align_targets = trainer.latents.clone()
    batch = trainer.next_batch()
    assert torch.equal(batch.align_target, batch.x0)
    plain = Trainer(base, tmp_path / "plain")
    assert plain.align_targets is None and torch.equal(plain.next_batch().x0, batch.x0)

    # The term's gradient: the head and the first align_depth blocks, nothing after them.
    model, schedule = net.train(), NoiseSchedule(config.model)
    with torch.no_grad():  # adaLN-Zero hides every path at the start: give it some life
        for p in model.denoiser.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    batch.align_target = torch.randn(batch.x0.shape[0], channels, grid, grid)
    out = joint_loss(model, batch, schedule, config.train)
    assert 0 < float(out["align"]) < 2
    without = joint_loss(model, batch, schedule, base.train)["loss"]
    model.zero_grad()
    (out["loss"] - without).backward()  # the same draws: the term's gradient alone
    grads = {k: (p.grad.abs().sum() if p.grad is not None else 0.0)
             for k, p in model.named_parameters()}
    assert grads["alignment_head.net.0.weight"] > 0
    assert grads["denoiser.blocks.0.mlp.fc1.weight"] > 0
    assert grads["denoiser.blocks.1.mlp.fc1.weight"] == 0
    assert grads["denoiser.final_layer.linear.weight"] == 0

    trainer.align_targets = trainer.latents.new_zeros(len(trainer.latents), channels, grid, grid)
    trainer.align_targets.normal_()
    trainer.train(2)
    from safetensors.torch import load_file

    assert not any(k.startswith("alignment_head.") for k in
                   load_file(str(tmp_path / "run" / "model.safetensors")))
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert "align" in log[0].split(",")
    resumed = Trainer(config, tmp_path / "run", resume=True)
    assert resumed.step == 2
    torch.testing.assert_close(resumed.net.alignment_head.state_dict(),
                               trainer.net.alignment_head.state_dict())
    for refused in ({"train.classifier_learning_rate": 1e-3}, {"train.align_depth": 3},
                    {"train.align_until": 0}, {"train.align_until": 1.5},
                    {"train.align_until_step": -1},
                    {"train.align_until_step": 3, "train.align_until": 0.5}):
        with pytest.raises(ValueError, match="align"):
            Trainer(config.override(refused), tmp_path / "refused")

    # train.align_until (HASTE's early stop): past that share of the run the batch carries no
    # targets and the term is off, with the very draws it would have had; the share counts
    # steps of max_steps or seconds of the budget, the warm-up included.
    stopping = Trainer(config.override({"train.align_until": 0.5}), tmp_path / "stopping")
    state = stopping.generator.get_state()
    stopping.share_done = 0.49
    on = stopping.next_batch()
    stopping.generator.set_state(state)
    stopping.share_done = 0.5
    off = stopping.next_batch()
    assert on.align_on and on.align_target is not None
    assert not off.align_on and off.align_target is None and torch.equal(off.x0, on.x0)
    out = joint_loss(model, off, schedule, config.train)
    assert float(out["align"]) == 0
    torch.testing.assert_close(out["loss"], joint_loss(model, off, schedule, base.train)["loss"])
    stopping.train(4)
    aligns = [float(r["align"]) for r in stopping.log_rows]
    assert stopping.share_done == 0.75 and aligns[0] > 0 and aligns[-1] == 0
    # train.align_until_step: the same stop counted in steps, whatever the share or the speed.
    by_steps = Trainer(config.override({"train.align_until_step": 2, "train.log_every": 1}),
                       tmp_path / "by_steps")
    by_steps.share_done = 0.9
    assert by_steps.next_batch().align_on  # step 0 of 2, though the share is nearly spent
    by_steps.train(4)
    assert [float(r["align"]) > 0 for r in by_steps.log_rows] == [True, True, False, False]
    with pytest.raises(ValueError, match="lambda_align"):
        Trainer(tiny_config.override({"train.lambda_align": 0.5}), tmp_path / "pixels")
