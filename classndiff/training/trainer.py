"""Training Class-N-Diff: the joint trainer on the project's one loop (`loop.py`: accelerate,
AdamW, EMA, mixed precision, a CSV log, checkpoints, exact resume, validation), and the
best-by-validation export to the output folder (`from_pretrained(output_dir)` works)."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from classndiff.config import ClassNDiffConfig, TrainingRecord, TrainingStage
from classndiff.data import LesionDataset, cached_latents
from classndiff.hub import TRAINING_ONLY, load_vae, save_pretrained
from classndiff.metrics import classification_metrics, selection_score
from classndiff.models.classifier import LesionClassifier, scale_like_grad_cam
from classndiff.models.diffusion import NoiseSchedule, denoiser_input
from classndiff.models.joint import ClassNDiff
from classndiff.training.augment import augment, retint_augment, strong_augment
from classndiff.training.autoencoder import load_class_teacher
from classndiff.training.evaluator import as_float, read_in_batches
from classndiff.training.loop import LoopSettings, TrainingLoop
from classndiff.training.losses import (
    DX_TABLE,
    Batch,
    check_weight_band,
    draw_step_noise,
    energy_in_mask,
    preconditioned_term,
)
from classndiff.training.objective import TrainingObjective

logger = logging.getLogger(__name__)

LOG_FIELDS = ["step", "epoch", "images_seen", "loss", "mse", "cls_real", "cls_x0", "align",
              "focus", "adv", "adv_accuracy", "consistency",
              "lr", "seconds", "images_per_second", "val_accuracy", "val_balanced_accuracy",
              "val_macro_auc", "val_malignant_auc", "val_score", "val_energy_in_mask",
              "val_empty_maps", "val_cam_iou"]
VAL_LOG_KEYS = ("accuracy", "balanced_accuracy", "macro_auc", "malignant_auc", "score",
                "energy_in_mask", "empty_maps", "cam_iou")


# The model settings a bundled autoencoder decides (`adopt_autoencoder`).
LATENT_SETTINGS = ("vae_config", "vae_scaling_factor", "in_channels", "image_size")


def adopt_autoencoder(config: ClassNDiffConfig, directory: str | Path) -> None:
    """Point `config.model` at the autoencoder of a `train-autoencoder` folder: its diffusers
    config, latent scaling factor, latent channels and latent side."""
    directory = Path(directory)
    settings_file = directory / "autoencoder.json"
    vae_config_file = directory / "vae" / "config.json"
    if not settings_file.is_file() or not vae_config_file.is_file():
        raise FileNotFoundError(f"no autoencoder in {directory}: run `classndiff "
                                f"train-autoencoder --output-dir {directory}` first")
    settings = json.loads(settings_file.read_text())
    # diffusers' private keys dropped, but for the class (plain or colour-skip).
    vae_config = {k: v for k, v in json.loads(vae_config_file.read_text()).items()
                  if not k.startswith("_") or k == "_class_name"}
    m = config.model
    m.vae_config = vae_config
    m.vae_scaling_factor = settings["scaling_factor"]
    m.in_channels = vae_config["latent_channels"]
    m.image_size = settings["config"]["image_size"] // m.vae_downscale


def hardware_name() -> str:
    """What trained a stage, for the model card: the GPU's name, or the CPU's thread count
    (the same command takes minutes on one and days on the other)."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU, {torch.get_num_threads()} threads"


@torch.no_grad()
def encode_in_batches(model: ClassNDiff, images: torch.Tensor, batch_size: int = 256
                      ) -> torch.Tensor:
    """Scaled latents of uint8 images (any size: brought to the generator's side first)
    through the model's bundled autoencoder."""
    device = next(model.parameters()).device  # the latents stay on the CPU, like the images
    return torch.cat([model.encode(denoiser_input(as_float(images[i : i + batch_size].to(device)),
                                                  model.config)).cpu()
                      for i in range(0, len(images), batch_size)])


def alignment_targets(model: ClassNDiff, images: torch.Tensor, batch_size: int = 64
                      ) -> torch.Tensor:
    """train.lambda_align's targets: the classifier's last feature map of each uint8 image
    (eval mode, as the frozen classifier always runs), average-pooled to the DiT's token
    grid, as float16 on the CPU (N, C, h, w). A dihedral turn of an image turns its map alike
    (up to padding), so the batch's flips and turns are applied to these as to the latents."""
    grid = model.denoiser.x_embedder.grid_size

    def pooled_map(x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(model.classifier.forward_with_maps(x)[1].float(), grid)

    return read_in_batches(model.classifier, pooled_map, images, batch_size, torch.float16)


def check_alignment(config: ClassNDiffConfig) -> None:
    """Refuse train.lambda_align where its targets, computed once, would be wrong or absent."""
    t, m = config.train, config.model
    if t.lambda_align <= 0:
        return
    if m.vae_config is None or t.classifier_learning_rate > 0:
        raise ValueError("train.lambda_align needs a denoiser in a bundled autoencoder's latents "
                         "and a frozen classifier (train.classifier_learning_rate=0): its "
                         "targets are the classifier's maps of the training images, computed once")
    if not 0 < t.align_until <= 1:
        raise ValueError(f"train.align_until is a share of the run, in (0, 1], "
                         f"not {t.align_until}")
    if t.align_until_step < 0 or (t.align_until_step > 0 and t.align_until < 1):
        raise ValueError(f"train.align_until_step is a step count ≥ 0 (0 = off), and one stop at "
                         f"a time: not {t.align_until_step} with train.align_until "
                         f"{t.align_until}")
    if m.denoiser != "dit" or not 1 <= t.align_depth <= m.depth:
        raise ValueError(f"train.align_depth counts DiT blocks: between 1 and model.depth "
                         f"({m.depth}), with model.denoiser 'dit'")


def build_optimizer(model: ClassNDiff, config: ClassNDiffConfig) -> torch.optim.Optimizer:
    t = config.train
    head = [] if model.alignment_head is None else list(model.alignment_head.parameters())
    return torch.optim.AdamW(
        [
            {"params": [*model.denoiser.parameters(), *head], "lr": t.learning_rate,
             "weight_decay": t.weight_decay},
            {"params": [*model.classifier.parameters(),
                        *(model.tone_adversary.parameters() if model.tone_adversary else [])],
             "lr": t.classifier_learning_rate, "weight_decay": t.classifier_weight_decay},
        ],
        betas=(0.9, 0.999),
    )


@torch.no_grad()
def push_at_adam_scale(optimizer: torch.optim.Optimizer, param: torch.Tensor,
                       push: torch.Tensor) -> None:
    """param −= lr · push / (√v̂ + ε), with lr, ε and v̂ (the bias-corrected second moment
    of param's own gradient) from `optimizer`'s Adam state, which the push leaves as it was."""
    group = next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))
    state = optimizer.state.get(param)
    if not state:
        raise RuntimeError("no Adam state for the pushed parameter: push after a step")
    beta2 = group["betas"][1]
    v_hat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
    param.sub_(group["lr"] * push / (v_hat.sqrt() + group["eps"]))


@torch.no_grad()
def predict_dataset(
    model: ClassNDiff, inputs: torch.Tensor, batch_size: int = 128, uint8: bool = True
) -> np.ndarray:
    """Softmax probabilities for a whole tensor of inputs (uint8 pixels or latents)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, inputs.shape[0], batch_size):
        x = inputs[start : start + batch_size].to(device)
        x = x.float() / 127.5 - 1 if uint8 else x.float()
        out.append(torch.softmax(model.classify(x).float(), 1).cpu())
    return torch.cat(out).numpy()


def check_cam_head(classifier: LesionClassifier, side: int = 64) -> None:
    """The focus term's map is Grad-CAM only when the head is a global average pool and a
    linear layer: refuse other backbones with a clear message."""
    if not classifier.pools_into_linear_head(side):
        raise ValueError(f"train.lambda_saliency needs a backbone whose head is average pooling + "
                         f"a linear layer (its CAM is then Grad-CAM); "
                         f"{type(classifier.backbone).__name__} is not")


@torch.no_grad()
def validation_saliency(model: ClassNDiff, data: LesionDataset,
                        batch_size: int = 128) -> tuple[np.ndarray, dict[str, float]]:
    """Softmax probabilities (as `predict_dataset` gives them) and, from the same pass, the
    saliency bar's measures on the images that have a mask, from the CAM the focus term
    trains (equal to Grad-CAM at the last map), for the predicted class: mean share of
    energy in the mask (empty maps apart), share of empty maps, and the IoU of the map's hot
    region (≥ 0.5) with the mask."""
    model.eval()
    device = next(model.parameters()).device
    probabilities, shares, ious = [], [], []
    for start in range(0, len(data), batch_size):
        x = data.images[start : start + batch_size].to(device).float() / 127.5 - 1
        logits, feature_map = model.classifier.forward_with_maps(x)
        probabilities.append(torch.softmax(logits.float(), 1).cpu())
        cams = model.classifier.class_activation_maps(feature_map.float(), logits.argmax(1))
        masks = data.masks[start : start + batch_size].to(device).float()
        keep = data.has_mask[start : start + batch_size].to(device)
        hot = scale_like_grad_cam(cams, masks.shape[-2:]) >= 0.5
        inter = (hot * masks).sum(dim=(1, 2, 3))
        union = (hot | (masks > 0)).sum(dim=(1, 2, 3)).clamp(min=1)
        shares.append(energy_in_mask(cams, masks)[keep].cpu())
        ious.append((inter / union)[keep].cpu())
    share, iou = torch.cat(shares), torch.cat(ious)
    empty = share.isnan()
    return torch.cat(probabilities).numpy(), {
        "energy_in_mask": float(share[~empty].mean()) if (~empty).any() else float("nan"),
        "empty_maps": float(empty.float().mean()) if len(share) else float("nan"),
        "cam_iou": float(iou.mean()) if len(iou) else float("nan")}


class Trainer(TrainingLoop):
    """The joint Class-N-Diff training (`loop.TrainingLoop` does the loop): batches of real
    images for the denoiser and the classifier, validation of the EMA classifier (with the
    saliency measures where masks exist), and the export: the latest EMA denoiser with the
    best-by-validation EMA classifier."""

    log_keys = ("loss", "mse", "cls_real", "cls_x0", "align", "focus", "adv", "adv_accuracy",
                "consistency")
    val_log_keys = VAL_LOG_KEYS
    log_fields = tuple(LOG_FIELDS)

    def __init__(self, config: ClassNDiffConfig, output_dir: str | Path, resume: bool = False,
                 step_kind: str = "joint", init_from: str | Path | None = None,
                 command: str | None = None):
        t = config.train
        super().__init__(LoopSettings(
            batch_size=t.batch_size, learning_rates=(t.learning_rate, t.classifier_learning_rate),
            warmup_steps=t.warmup_steps, max_steps=t.max_steps, time_budget_s=t.time_budget_s,
            grad_clip=t.grad_clip, ema_decay=t.ema_decay, mixed_precision=t.mixed_precision,
            log_every=t.log_every, eval_every=t.eval_every, checkpoint_every=t.checkpoint_every,
            keep_checkpoints=t.keep_checkpoints, seed=t.seed), output_dir)
        self.config = config
        self.step_kind = step_kind
        self.command = command
        # A fine-tune continues the history of the weights it starts from (model card stages).
        self.previous_training = self.previous_model = None
        if init_from is not None and (Path(init_from) / "config.json").exists():
            started_from = json.loads((Path(init_from) / "config.json").read_text())
            self.previous_training = started_from.get("extra", {}).get("training")
            self.previous_model = started_from.get("model")

        if self.previous_model is not None and self.previous_model.get("vae_config"):
            # Continuing a latent denoiser: its autoencoder comes with its weights (and wins
            # over an `autoencoder_dir` the config may still name).
            for key in LATENT_SETTINGS:
                setattr(config.model, key, self.previous_model[key])
        elif t.autoencoder_dir:
            adopt_autoencoder(config, t.autoencoder_dir)
        check_weight_band(t)
        if t.joint_every < 1:
            raise ValueError(f"train.joint_every must be a whole number of steps ≥ 1, "
                             f"not {t.joint_every}")
        preconditioned_term(t)  # refuses an update it cannot apply
        if t.tone_consistency_temperature <= 0:
            raise ValueError("train.tone_consistency_temperature must be > 0 (1 = the "
                             "teacher's own reading, below 1 sharpened)")
        if t.tone_consistency_temperature != 1 and not t.tone_consistency_teacher:
            raise ValueError("train.tone_consistency_temperature applies to a teacher's "
                             "target: set train.tone_consistency_teacher too")
        if t.tone_consistency_teacher and t.tone_consistency <= 0:
            raise ValueError("train.tone_consistency_teacher is the target of the consistency "
                             "term: set train.tone_consistency > 0 too")
        if not 0 <= t.classifier_retint_whole_field <= 1:
            raise ValueError("train.classifier_retint_whole_field is a share of the re-tinted "
                             "images: between 0 and 1")
        if t.classifier_retint_whole_field > 0 and t.classifier_retint <= 0:
            raise ValueError("train.classifier_retint_whole_field chooses among the re-tinted "
                             "images: set train.classifier_retint > 0 too")
        check_alignment(config)
        m = config.model
        self._load_data(config, step_kind)
        # `--resume --init-from W` is one command for every run of a fine-tune: the first run
        # (no checkpoint yet) starts from W, the later ones from their checkpoint.
        has_checkpoint = resume and self.latest_checkpoint() is not None
        model = self._build_model(config, None if has_checkpoint else init_from)
        if t.lambda_saliency > 0:
            check_cam_head(model.classifier)
        self.schedule = NoiseSchedule(m)
        teacher = (load_class_teacher(t.tone_consistency_teacher)
                   if t.tone_consistency_teacher else None)
        self.prepare(TrainingObjective(model, self.schedule, t, step_kind, teacher),
                     build_optimizer(model, config))
        if resume:
            self.load_checkpoint()
        if self.net.vae is not None:  # after a resume: with the autoencoder it trained with
            self.latents = encode_in_batches(self.net, self.train_set.images)
        # After a resume too: from the classifier it trains with (frozen, so the same).
        self.align_targets = (alignment_targets(self.net, self.train_set.images)
                              if t.lambda_align > 0 else None)
        if init_from is not None and self.step == 0:
            # The starting classifier is the one to beat.
            self.best_score = self.validate()["score"]
            self.best_state = self.best_snapshot()
            logger.info("starting validation score %.4f", self.best_score)

    def _load_data(self, config: ClassNDiffConfig, step_kind: str) -> None:
        """The training and validation sets (with masks where a term needs them), latents
        when the model works in a VAE's space, and the sampling weights."""
        t = config.train
        m = config.model
        # A classifier that learns beside a denoiser in a bundled autoencoder's latents reads
        # the same images as pixels (the paper's set-up: both trained together); a frozen one
        # never sees the batch's real images, so nothing of theirs is loaded for it.
        masks = (m.vae_config is None or t.classifier_learning_rate > 0) and (
            t.lambda_saliency > 0 or t.classifier_retint > 0 or t.tone_consistency > 0)
        if masks and (m.vae or step_kind != "joint"):
            raise ValueError("train.lambda_saliency, classifier_retint and tone_consistency "
                             "need a pixel-space model (no VAE) and the joint step: the masks "
                             "are in pixels, and the upstream-style step has neither")
        self.train_set = LesionDataset(t.data_dir, "train", image_size=m.pixel_size, masks=masks)
        if t.synthetic_dir:
            if t.learning_rate > 0:
                raise ValueError("train.synthetic_dir trains the classifier only: set "
                                 "train.learning_rate=0 (a denoiser must not learn its own "
                                 "samples)")
            self.train_set.extend(LesionDataset(t.synthetic_dir, "train",
                                                image_size=m.pixel_size, masks=masks))
        self.val_set = LesionDataset(t.data_dir, "val", image_size=m.pixel_size, limit=t.val_limit,
                                     masks=masks)
        self.latents = self.val_latents = None
        if m.vae:
            vae = load_vae(m.vae, m.vae_subfolder, self.accelerator.device)
            cache = self.output_dir / "latent_cache"
            self.latents = cached_latents(self.train_set, vae, m.vae_scaling_factor,
                                          cache / "train.safetensors")
            self.val_latents = cached_latents(self.val_set, vae, m.vae_scaling_factor,
                                              cache / "val.safetensors")
            del vae
        self.sample_weights = self.train_set.sample_weights(t.balance_power,
                                                            t.tone_balance_power)
        self.train_images = self.train_set.images
        if self.train_set.masks is not None:
            # The mask rides along as a fourth channel, so augmentation moves it with the image.
            self.train_images = torch.cat([self.train_images, self.train_set.masks], 1)
        if self.latents is None and self.accelerator.device.type == "cuda":
            # A few hundred MB of uint8 pixels: keep them on the GPU, so a step never waits
            # on host-side indexing and copies.
            self.train_images = self.train_images.to(self.accelerator.device)


    def _build_model(self, config: ClassNDiffConfig,
                     init_from: str | Path | None) -> ClassNDiff:
        """The model, from `init_from`'s exported weights when fine-tuning."""
        t, m = config.train, config.model
        model = ClassNDiff(m, cond_drop_prob=t.cond_drop_prob,
                           alignment_head=t.lambda_align > 0)
        if init_from is not None:
            # Fine-tune from exported weights (e.g. continue a GPU run on the CPU): weights
            # only; the optimizer, schedule and step count start afresh.
            state = load_file(str(Path(init_from) / "model.safetensors"))
            own = model.state_dict()
            misfit = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
            if misfit:
                k = misfit[0]
                raise ValueError(
                    f"{init_from}'s weights do not fit the configured model ({len(misfit)} "
                    f"tensors, e.g. {k}: {tuple(state[k].shape)} there, {tuple(own[k].shape)} "
                    f"here); train with the weights' own model settings, e.g. --config "
                    f"{Path(init_from) / 'config.json'}")
            missing, _ = model.load_state_dict({k: v for k, v in state.items() if k in own},
                                               strict=False)
            # Only a head the exported weights never carry (the training-only skin-tone
            # adversary) may start fresh.
            unexpected_missing = [k for k in missing
                                  if not k.startswith(("tone_adversary.", *TRAINING_ONLY))]
            if unexpected_missing:
                raise ValueError(f"{init_from} lacks weights for {unexpected_missing[:3]}")
            logger.info("initialised from %s", init_from)
        elif config.train.autoencoder_dir:
            folder = Path(config.train.autoencoder_dir) / "vae"
            weights = folder / "diffusion_pytorch_model.safetensors"
            model.vae.load_state_dict(load_file(str(weights)))
        return model

    @property
    def best_classifier(self) -> dict[str, torch.Tensor] | None:
        """The best-by-validation EMA classifier's weights (None before any validation)."""
        return self.best_state

    def load_checkpoint(self) -> bool:
        found = super().load_checkpoint()
        if found and self.best_state is not None:  # checkpoints before loop.py prefixed keys
            self.best_state = {k.removeprefix("classifier."): v
                               for k, v in self.best_state.items()}
        return found

    def best_snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the EMA classifier's weights: selection by validation applies to the
        classifier alone (the denoiser keeps improving after the classifier overfits)."""
        return {k: v.detach().clone().contiguous()
                for k, v in self.ema.module.classifier.state_dict().items()}

    # ---------------------------------------------------------------- batches
    def next_batch(self) -> Batch:
        """This process's slice of the global batch; every random draw is made for the
        global batch, so the generator advances alike on every process."""
        t, m = self.config.train, self.config.model
        n = t.batch_size * self.world
        mine = self.global_slice()
        idx = torch.multinomial(self.sample_weights, n, replacement=True,
                                generator=self.generator)
        device = self.accelerator.device
        labels = [self.train_set.dx[idx], self.train_set.tone[idx], self.train_set.sex[idx]]
        labels = [x[mine].to(device) for x in labels]
        pixels_for_classifier = m.vae_config is not None and t.classifier_learning_rate > 0
        if self.latents is not None and not pixels_for_classifier:
            x = self.latents[idx]
            # Past train.align_until (or align_until_step) the term is off: no targets, and
            # the draws are unchanged.
            aligning = self.align_targets is not None and (
                self.step < t.align_until_step if t.align_until_step > 0
                else self.share_done < t.align_until)
            target = self.align_targets[idx] if aligning else None
            if t.augment:  # the alignment targets get the very same flips and turns
                x, target = self.alike(augment, x, target)
            x = x[mine].to(device)
            if target is not None:
                target = target[mine].to(device)
            return Batch(x, x, *labels, align_target=target, align_on=aligning,
                         **self.step_draws(x.shape[1:], mine))
        images = self.train_images[idx.to(self.train_images.device)].to(device).float()
        latents = None if self.latents is None else self.latents[idx]
        if t.augment:  # the cached latents get the very same flips and turns
            images, latents = self.alike(augment, images, latents)
        # RGB to [-1, 1]; a mask channel riding along stays {0, 1}.
        images = torch.cat([images[:, :3] / 127.5 - 1, images[:, 3:]], 1)
        x0 = denoiser_input(images[:, :3], m) if latents is None else latents.to(device)
        # The consistency term's second view: every image's skin at another random tone.
        retinted = (retint_augment(images, 1.0, self.generator) if t.tone_consistency > 0
                    else None)
        if t.classifier_retint > 0:  # before the camera jitter, as a real skin would be
            images = retint_augment(images, t.classifier_retint, self.generator,
                                    t.classifier_retint_whole_field)
        images, retinted = self.classifier_views(images, retinted)
        mask = images[mine, 3:] if images.shape[1] > 3 else None
        return Batch(x0[mine], images[mine, :3], *labels, mask=mask,
                     cls_retinted=None if retinted is None else retinted[mine, :3],
                     **self.step_draws(x0.shape[1:], mine))

    def classifier_views(self, images: torch.Tensor, retinted: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The classifier's camera jitter; a re-tinted view gets the very same draws (the
        generator is rewound), so the pair differs in skin tone alone."""
        kind = self.config.train.classifier_augment
        if kind == "light":
            return images, retinted
        if kind != "strong":
            raise ValueError(f"unknown classifier_augment {kind!r}")
        return self.alike(strong_augment, images, retinted)

    def alike(self, transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
              images: torch.Tensor, other: torch.Tensor | None,
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`transform` of `images`, and of `other` (if any) with the very same random draws:
        the generator is rewound for it, then left where the first transform left it."""
        state = self.generator.get_state()
        images = transform(images, self.generator)
        if other is not None:
            after = self.generator.get_state()
            self.generator.set_state(state)
            other = transform(other, self.generator)
            self.generator.set_state(after)
        return images, other

    def step_draws(self, shape: torch.Size, mine: slice) -> dict[str, Any]:
        """This process's share of the step's timesteps, noise and condition drops, and the
        x̂0 term's weight this step (train.joint_every)."""
        t = self.config.train
        drawn = draw_step_noise(t.batch_size * self.world, tuple(shape),
                                self.schedule.num_timesteps, t.cond_drop_prob, self.generator)
        every = t.joint_every
        return {**{k: v[mine] for k, v in zip(("t", "noise", "drop"), drawn)},
                "term_scale": float(every) if self.step % every == 0 else 0.0}

    def after_optimizer_step(self, out: dict[str, torch.Tensor],
                             clip_scale: float | torch.Tensor) -> None:
        """train.joint_term_update "preconditioned": the x̂0 term's push on the diagnosis
        embedding table (averaged over processes) at Adam's scale for the denoising gradient,
        clipped as that gradient was (Adam's second moment is of the clipped gradient: an
        unclipped push over it would be as many times too large as the clip shrank it)."""
        push = out.get("dx_table_push")
        if push is None:  # not a step that carries the term
            return
        if self.world > 1:
            push = self.accelerator.reduce(push, "mean")
        push_at_adam_scale(self.optimizer, self.net.denoiser.get_parameter(DX_TABLE),
                           clip_scale * push)

    # ---------------------------------------------------------------- validation
    def validate(self) -> dict[str, float]:
        model = self.ema.module
        saliency: dict[str, float] = {}
        if self.val_latents is not None:
            probs = predict_dataset(model, self.val_latents, uint8=False)
        elif self.val_set.masks is not None:  # one pass gives both
            probs, saliency = validation_saliency(model, self.val_set)
        else:
            probs = predict_dataset(model, self.val_set.images)
        metrics = classification_metrics(probs, self.val_set.dx.numpy())
        metrics["score"] = selection_score(metrics)
        metrics.update(saliency)
        return metrics

    def export(self, directory: Path | None = None, best_classifier: bool = True) -> Path:
        """EMA denoiser as of now + the best-by-validation EMA classifier (or the current
        one with `best_classifier=False`)."""
        directory = directory or self.output_dir
        config = ClassNDiffConfig.from_dict(self.config.to_dict())
        model = self.ema.module
        classifier_step = self.step
        if best_classifier and self.best_classifier is not None:
            model = copy.deepcopy(model)
            model.classifier.load_state_dict(self.best_classifier)
            classifier_step = self.best_step
        config.training = self.training_record(classifier_step)
        # Measured on the classifier this run started from, not on the one it exports.
        config.extra.pop("skin_tone_check", None)
        dtype = getattr(torch, self.config.train.export_dtype)
        return save_pretrained(model, config, directory, dtype=dtype)

    def training_record(self, classifier_step: int) -> TrainingRecord:
        """What config.json says about how the weights were trained. A fine-tune (`init_from`)
        appends itself to the stages of the weights it started from; when it never beat their
        classifier, the classifier is still theirs."""
        this = TrainingStage(step=self.step, classifier_step=classifier_step,
                             step_kind=self.step_kind,
                             images_seen=self.step * self.config.train.batch_size,
                             wall_seconds=round(self.seconds_trained, 3), command=self.command,
                             hardware=hardware_name())
        previous = TrainingRecord.from_json(self.previous_training)
        if previous is None:
            return TrainingRecord([this], this.step, classifier_step)
        return previous.then(this)

    # ---------------------------------------------------------------- loop
    def train(self, max_steps: int | None = None, stop_at: int | None = None,
              epoch_size: int | None = None) -> dict[str, float]:
        """Train to `max_steps` (the LR schedule's length); see `TrainingLoop.train`."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.config.to_json(self.output_dir / "train_config.json")
        return super().train(max_steps, stop_at, epoch_size or len(self.train_set))

    def on_best(self, metrics: dict[str, float]) -> None:
        self.export()
        (self.output_dir / "best_val.json").write_text(
            json.dumps({"step": self.step, **metrics}, indent=2))

    def finish(self) -> None:
        self.export()  # the final denoiser with the best classifier
        self.export(self.output_dir / "last", best_classifier=False)


def train(config: ClassNDiffConfig, output_dir: str | Path, resume: bool = False,
          max_steps: int | None = None, step_kind: str = "joint",
          init_from: str | Path | None = None, command: str | None = None) -> dict[str, float]:
    """Train (or resume, or fine-tune from `init_from` weights) and export to `output_dir`:
    the final EMA denoiser with the best-by-validation EMA classifier. `command` (the command
    line) is recorded in config.json."""
    trainer = Trainer(config, output_dir, resume=resume, step_kind=step_kind,
                      init_from=init_from, command=command)
    return trainer.train(max_steps)
