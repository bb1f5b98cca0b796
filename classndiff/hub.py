"""Weights on disk and on the Hub: `config.json` + `model.safetensors`, never pickles.

A source is a local folder, a Hub repo id, or `repo_id@revision` (pin a revision for
reproducibility). Hub downloads go through huggingface_hub and its cache; with no network,
or with HF_HUB_OFFLINE=1 and nothing cached, it falls back to the embedded default in
`weights/embedded/` and logs a warning saying so.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from classndiff.config import (
    CLASSIFIER_INFERENCE_SETTINGS,
    CLASSIFIER_SETTINGS,
    ClassNDiffConfig,
    ModelConfig,
    TrainingRecord,
    TrainingStage,
)
from classndiff.models.joint import ClassNDiff

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, "MODEL_CARD.md", "README.md", "metrics.json")
REPO_ROOT = Path(__file__).resolve().parent.parent


def embedded_dir() -> Path:
    """The shipped default weights (CLASSNDIFF_EMBEDDED overrides, for installs elsewhere)."""
    return Path(os.environ.get("CLASSNDIFF_EMBEDDED", REPO_ROOT / "weights" / "embedded"))


class WeightsNotFoundError(ValueError):
    """No weights at the given source, and no fallback was allowed or available."""


@dataclass
class ResolvedWeights:
    path: Path  # a local folder holding config.json + model.safetensors
    source: str  # what was asked for
    description: str  # where the weights actually came from, in words
    fell_back: bool = False


def split_revision(source: str) -> tuple[str, str | None]:
    """"org/name@rev" → ("org/name", "rev")."""
    repo_id, _, revision = source.partition("@")
    return repo_id, (revision or None)


def is_weights_dir(path: Path) -> bool:
    return (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def hub_reachable(endpoint: str, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within `timeout` seconds."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def download(repo_id: str, revision: str | None = None) -> Path:
    """Fetch config + weights of a Hub repo into the huggingface_hub cache; returns the
    snapshot folder. HF_ENDPOINT is read at call time (so a stand-in server can be used)."""
    from huggingface_hub import constants, hf_hub_download

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    # huggingface_hub retries an unreachable server for ~25 s; a 2 s probe first means an
    # offline app falls back at once (a cached snapshot is still used when there is one).
    offline = constants.HF_HUB_OFFLINE or not hub_reachable(endpoint)
    folder = None
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        local = hf_hub_download(repo_id, name, revision=revision, endpoint=endpoint,
                                local_files_only=offline)
        folder = Path(local).parent
    for name in ("MODEL_CARD.md", "README.md", "metrics.json"):  # optional extras
        try:
            hf_hub_download(repo_id, name, revision=revision, endpoint=endpoint,
                            local_files_only=offline)
        except Exception:  # noqa: BLE001 - an absent extra is fine
            pass
    assert folder is not None
    return folder


def resolve(source: str | Path | None = None, fallback: bool = True) -> ResolvedWeights:
    """Turn a source (folder, Hub id, id@revision, or None for the default) into a folder.

    Order: a local folder as given; else a Hub download; else, when `fallback` is true,
    the embedded default with a warning."""
    if source is None or str(source) == "":
        path = embedded_dir()
        if not is_weights_dir(path):
            raise WeightsNotFoundError(f"no embedded weights at {path}")
        return ResolvedWeights(path, "embedded", f"embedded default ({path})")
    local = Path(source).expanduser()
    if local.exists():
        if not is_weights_dir(local):
            raise WeightsNotFoundError(
                f"{local} has no {CONFIG_NAME} + {WEIGHTS_NAME}; train or export into it first"
            )
        return ResolvedWeights(local, str(source), f"local folder {local}")
    repo_id, revision = split_revision(str(source))
    try:
        path = download(repo_id, revision)
        where = f"Hugging Face Hub {repo_id}" + (f"@{revision}" if revision else "")
        return ResolvedWeights(path, str(source), where)
    except Exception as error:  # noqa: BLE001 - offline, unknown repo, server error: same answer
        if not fallback or not is_weights_dir(embedded_dir()):
            raise WeightsNotFoundError(f"could not get weights {source!r}: {error}") from error
        logger.warning(
            "could not load %s from the Hub (%s: %s); using the embedded weights in %s",
            source, type(error).__name__, error, embedded_dir(),
        )
        return ResolvedWeights(
            embedded_dir(), str(source),
            f"embedded default ({embedded_dir()}): the Hub source {source} was not reachable",
            fell_back=True,
        )


# Heads that only a training step uses (train.lambda_align's): checkpoints keep them, exported
# weights do not.
TRAINING_ONLY = ("alignment_head.",)


def save_pretrained(
    model: ClassNDiff,
    config: ClassNDiffConfig,
    directory: str | Path,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write `config.json` and `model.safetensors` (the model's state plus any extra
    tensors, e.g. abstention statistics under `trust.*`). `dtype` (e.g. float16, to halve
    the shipped size) applies to floating-point weights; loading casts back to float32."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in model.state_dict().items():
        if key.startswith(TRAINING_ONLY):
            continue
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    for key, value in (extra_tensors or {}).items():
        tensors[key] = value.detach().cpu().contiguous()
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    config.to_json(directory / CONFIG_NAME)
    return directory


def load_pretrained(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[ClassNDiff, ClassNDiffConfig, dict[str, torch.Tensor]]:
    """Read a folder written by `save_pretrained`: (model in eval mode, config, extras)."""
    directory = Path(directory)
    config = ClassNDiffConfig.from_json(directory / CONFIG_NAME)
    # Never fetch or read initial backbone weights here: the state dict below has them all.
    config.model.pretrained_backbone = False
    model = ClassNDiff(config.model, cond_drop_prob=config.train.cond_drop_prob,
                       initial_weights=False)
    tensors = load_file(str(directory / WEIGHTS_NAME), device=str(device))
    own_keys = set(model.state_dict())
    extras = {k: v for k, v in tensors.items() if k not in own_keys}
    model.load_state_dict({k: v for k, v in tensors.items() if k in own_keys}, strict=True)
    return model.to(device).eval(), config, extras


def load_vae(name: str, subfolder: str | None = None, device: str | torch.device = "cpu"):  # noqa: ANN201
    """A diffusers AutoencoderKL (or the colour-skip variant its config names) for
    latent-space configs (Hub id or local folder)."""
    from diffusers import AutoencoderKL

    from classndiff.models.autoencoder import autoencoder_class

    cls = autoencoder_class(AutoencoderKL.load_config(name, subfolder=subfolder))
    vae = cls.from_pretrained(name, subfolder=subfolder)
    return vae.to(device).eval().requires_grad_(False)


def push_to_hub(directory: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload an exported folder; only ever called when the user asks (`export --push`)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(directory), repo_id=repo_id)
    return str(getattr(info, "commit_url", info))


# The generator's tensors in a state dict: the denoiser, and its bundled autoencoder if any.
GENERATOR_PARTS = ("denoiser.", "vae.")


def replace_decoder(tensors: dict[str, torch.Tensor], folder: Path, dtype: torch.dtype
                    ) -> TrainingStage:
    """Put the decoder of the autoencoder in `folder` into `tensors` (a bundled autoencoder's
    weights, "vae."-prefixed), after checking that its encoder is the bundled one; the
    stage that made it, for the training record."""
    vae = load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    if not any(k.startswith("vae.") for k in tensors):
        raise ValueError("--decoder-from needs a denoiser with a bundled autoencoder")
    for name, value in vae.items():
        if name.startswith(("encoder.", "quant_conv.")) and not torch.equal(
                value.to(dtype), tensors[f"vae.{name}"].to(dtype)):
            raise ValueError(f"{folder}'s encoder is not the bundled one ({name} differs): "
                             "its decoder would misread the denoiser's latents")
    tensors.update({f"vae.{k}": v.to(dtype).contiguous() for k, v in vae.items()
                    if k.startswith(("decoder.", "post_quant_conv."))})
    settings = json.loads((folder / "autoencoder.json").read_text())
    config = settings["config"]
    return TrainingStage(
        step=settings["steps"], step_kind="decoder", wall_seconds=settings["seconds_trained"],
        images_seen=settings["steps"] * config["batch_size"],
        command="classndiff train-autoencoder " + " ".join(
            f"--set {k}={config[k]}" for k in ("init_from", "train_encoder", "color_weight",
                                              "class_weight", "class_teacher") if k in config))


def graft_denoiser(target: str | Path, trained: str | Path, output: str | Path,
                   new_denoiser: bool = False, decoder_from: str | Path | None = None) -> Path:
    """`target`'s weights with the denoiser (and bundled autoencoder) of `trained` (a run
    fine-tuned from `target` with the classifier frozen), written to `output` (may be `target`).
    Everything about the classifier — its weights, the calibration, the abstention statistics,
    metrics.json and the other measurements beside it — stays bit for bit what it was, so only
    what depends on the generator needs measuring again. config.json takes the run's training
    record (the target's stages and the new one, whose settings are in its command) and keeps
    the target's `train` settings, those of the stage that made the classifier.

    The denoiser may have another architecture (its model settings come with it); the
    classifier's settings must match. With `new_denoiser`, `trained` is a denoiser trained on
    its own (not fine-tuned from `target`): its stages are appended to the target's (those the
    two records share, once), and it may come from weights with another classifier (a new
    classifier trained alone, as `target`, under the shipped generator): the target's classifier
    settings stay.

    `decoder_from`: an autoencoder folder (`classndiff train-autoencoder --set
    train_encoder=false`) whose decoder replaces the bundled one; its encoder must be the
    bundled encoder, so the denoiser's latents keep their meaning."""
    target, trained, output = Path(target), Path(trained), Path(output)
    own = ClassNDiffConfig.from_json(target / CONFIG_NAME)
    run = ClassNDiffConfig.from_json(trained / CONFIG_NAME)
    own_record, run_record = own.training, run.training
    if own.model.vae or run.model.vae:
        raise ValueError("graft works on pixel-space classifiers; a Hub `model.vae` (whose "
                         "latents the classifier reads) cannot be grafted")
    differing = [f.name for f in fields(ModelConfig)
                 if getattr(own.model, f.name) != getattr(run.model, f.name)
                 and f.name not in CLASSIFIER_INFERENCE_SETTINGS]
    if set(differing) & CLASSIFIER_SETTINGS and not new_denoiser:
        raise ValueError(f"{trained} has another classifier configuration than {target} "
                         f"({', '.join(sorted(set(differing) & CLASSIFIER_SETTINGS))}); "
                         "a denoiser from other weights needs --new-denoiser")
    differing = [name for name in differing if name not in CLASSIFIER_SETTINGS]
    if own_record is None or run_record is None:
        raise ValueError(f"{target} and {trained} must both carry a training record")
    extends = (run_record.stages[:len(own_record.stages)] == own_record.stages
               and (run_record.classifier_step, run_record.classifier_stage)
               == (own_record.classifier_step, own_record.classifier_stage))
    if new_denoiser:
        # Stages the two records share are told once: the target's, then the run's others.
        run_record = TrainingRecord([*own_record.stages, *(stage for stage in run_record.stages
                                                        if stage not in own_record.stages)],
                                    own_record.step, own_record.classifier_step,
                                    own_record.classifier_stage)
    elif not extends:
        raise ValueError(f"{trained} is not a run fine-tuned from {target} with its "
                         "classifier kept (classndiff train --init-from, classifier frozen); "
                         "a denoiser trained on its own needs --new-denoiser")
    tensors = load_file(str(target / WEIGHTS_NAME))
    # The run's denoiser in the target's export precision (float16 when shipped).
    dtype = next(v.dtype for k, v in tensors.items()
                 if k.startswith("denoiser.") and v.is_floating_point())
    tensors = {k: v for k, v in tensors.items() if not k.startswith(GENERATOR_PARTS)}
    tensors.update({k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
                    for k, v in load_file(str(trained / WEIGHTS_NAME)).items()
                    if k.startswith(GENERATOR_PARTS)})
    if decoder_from is not None:
        stage = replace_decoder(tensors, Path(decoder_from), dtype)
        run_record = replace(run_record, stages=[*run_record.stages, stage])
    output.mkdir(parents=True, exist_ok=True)
    if output.resolve() != target.resolve():
        for item in target.iterdir():
            if item.is_file() and item.name not in (CONFIG_NAME, WEIGHTS_NAME):
                (output / item.name).write_bytes(item.read_bytes())
    save_file(tensors, str(output / WEIGHTS_NAME), metadata={"format": "pt"})
    run_record.settings_stage = own_record.settings_of  # `train` stays the classifier's stage's
    own.training = run_record
    own.model = replace(own.model, **{name: getattr(run.model, name) for name in differing})
    own.to_json(output / CONFIG_NAME)
    return output
