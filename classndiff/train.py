"""Training loop: accelerate (CPU here, several GPUs with `accelerate launch`), AdamW, EMA,
mixed precision, tqdm, a CSV log, checkpoints every N steps, resume, validation, and
best-by-validation export to the output folder (`from_pretrained(output_dir)` works)."""

from __future__ import annotations

import copy
import csv
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .checkpoint import load_checkpoint, load_rng, save_checkpoint, save_rng
from .config import ClassNDiffConfig
from .data import LesionDataset, augment, cached_latents, retint_augment, strong_augment
from .diffusion import (
    Batch,
    NoiseSchedule,
    denoiser_input,
    draw_step_noise,
    energy_in_mask,
    scale_like_grad_cam,
)
from .hub import load_vae, save_pretrained
from .lr import lr_factor
from .metrics import classification_metrics, selection_score
from .model import ClassNDiff
from .objective import TrainingObjective

logger = logging.getLogger(__name__)

LOG_FIELDS = ["step", "epoch", "images_seen", "loss", "mse", "cls_real", "cls_x0", "focus",
              "adv", "adv_accuracy",
              "lr", "seconds", "images_per_second", "val_accuracy", "val_balanced_accuracy",
              "val_macro_auc", "val_malignant_auc", "val_score", "val_energy_in_mask",
              "val_empty_maps", "val_cam_iou"]
VAL_LOG_KEYS = ("accuracy", "balanced_accuracy", "macro_auc", "malignant_auc", "score",
                "energy_in_mask", "empty_maps", "cam_iou")


def build_optimizer(model: ClassNDiff, config: ClassNDiffConfig) -> torch.optim.Optimizer:
    t = config.train
    return torch.optim.AdamW(
        [
            {"params": model.denoiser.parameters(), "lr": t.learning_rate,
             "weight_decay": t.weight_decay},
            {"params": [*model.classifier.parameters(),
                        *(model.tone_adversary.parameters() if model.tone_adversary else [])],
             "lr": t.classifier_learning_rate, "weight_decay": t.classifier_weight_decay},
        ],
        betas=(0.9, 0.999),
    )


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


@torch.no_grad()
def check_cam_head(classifier: torch.nn.Module, side: int = 64) -> None:
    """The focus term's map is Grad-CAM only when the head is a global average pool and a
    linear layer (ResNets, EfficientNets); a norm or MLP in the head (ConvNeXt, ViT) breaks
    that. Checked numerically on a random image instead of from a list of names."""
    was_training = classifier.training
    classifier.eval()
    try:
        x = torch.rand(2, 3, side, side) * 2 - 1
        logits, feature_map = classifier.forward_with_maps(x)
        head = classifier.backbone.get_classifier()
        pooled = None
        if isinstance(head, torch.nn.Linear) and feature_map.ndim == 4:  # ViTs give tokens
            pooled = head(feature_map.mean(dim=(-2, -1)))
    finally:
        classifier.train(was_training)
    if pooled is None or not torch.allclose(pooled, logits, atol=1e-4, rtol=1e-3):
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


class Trainer:
    def __init__(self, config: ClassNDiffConfig, output_dir: str | Path, resume: bool = False,
                 step_kind: str = "joint", init_from: str | Path | None = None,
                 command: str | None = None):
        from accelerate import Accelerator, DistributedDataParallelKwargs

        self.config = config
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        t = config.train
        mixed = t.mixed_precision
        if mixed == "fp16" and not torch.cuda.is_available():
            mixed = "bf16"
        # Unused parameters are normal here: a frozen classifier (learning rate 0), the
        # upstream step's branch on three steps in four.
        self.accelerator = Accelerator(
            mixed_precision=mixed, cpu=not torch.cuda.is_available(),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.step_kind = step_kind
        self.command = command
        # A fine-tune continues the history of the weights it starts from (model card stages).
        self.previous_training = None
        if init_from is not None and (Path(init_from) / "config.json").exists():
            started_from = json.loads((Path(init_from) / "config.json").read_text())
            self.previous_training = started_from.get("extra", {}).get("training")
        self.seconds_trained = 0.0
        # Two sources of randomness, both checkpointed: `generator` draws each step's data,
        # augmentation, timesteps, noise and condition drops for the GLOBAL batch, the same on
        # every process, which then takes its slice (so N processes see exactly what one
        # process with N times the batch would); the global RNG (dropout in the classifier)
        # differs per process.
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        torch.manual_seed(t.seed + self.rank)
        self.generator = torch.Generator().manual_seed(t.seed)

        m = config.model
        masks = t.lambda_saliency > 0 or t.classifier_retint > 0
        if masks and (m.vae or step_kind != "joint"):
            raise ValueError("train.lambda_saliency and train.classifier_retint need a "
                             "pixel-space model (no VAE) and the joint step: the masks are in "
                             "pixels, and the upstream-style step has neither")
        self.train_set = LesionDataset(t.data_dir, "train", image_size=m.pixel_size, masks=masks)
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

        model = ClassNDiff(m, cond_drop_prob=t.cond_drop_prob)
        if init_from is not None and not resume:
            # Fine-tune from exported weights (e.g. continue a GPU run on the CPU): weights
            # only; the optimizer, schedule and step count start afresh.
            state = load_file(str(Path(init_from) / "model.safetensors"))
            missing, _ = model.load_state_dict({k: v for k, v in state.items()
                                                if k in model.state_dict()}, strict=False)
            # Only a head the exported weights never carry (the training-only skin-tone
            # adversary) may start fresh.
            unexpected_missing = [k for k in missing if not k.startswith("tone_adversary.")]
            if unexpected_missing:
                raise ValueError(f"{init_from} lacks weights for {unexpected_missing[:3]}")
            logger.info("initialised from %s", init_from)
        if t.lambda_saliency > 0:
            check_cam_head(model.classifier)
        optimizer = build_optimizer(model, config)
        self.schedule = NoiseSchedule(m)
        objective = TrainingObjective(model, self.schedule, t, step_kind)
        self.model, self.optimizer = self.accelerator.prepare(objective, optimizer)
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(self.net, decay=t.ema_decay, use_warmup=True)
        self.step = 0
        self.best_score = -float("inf")
        # Selection by validation applies to the classifier alone: the denoiser keeps
        # improving after the classifier starts to overfit, so the export pairs the latest
        # EMA denoiser with the best-by-validation EMA classifier.
        self.best_classifier: dict[str, torch.Tensor] | None = None
        self.best_step = 0
        if resume:
            self.load_checkpoint()
        if init_from is not None and self.step == 0:
            # The starting classifier is the one to beat.
            self.best_score = self.validate()["score"]
            self.best_classifier = self.classifier_snapshot()
            logger.info("starting validation score %.4f", self.best_score)

    @property
    def net(self) -> ClassNDiff:
        """The model being trained, outside the accelerate/DDP wrapper."""
        return self.accelerator.unwrap_model(self.model).model

    def classifier_snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the EMA classifier's weights (the best-by-validation candidate)."""
        return {k: v.detach().clone().contiguous()
                for k, v in self.ema.module.classifier.state_dict().items()}

    # ---------------------------------------------------------------- batches
    def next_batch(self) -> Batch:
        """This process's slice of the global batch; every random draw is made for the
        global batch, so the generator advances alike on every process."""
        t, m = self.config.train, self.config.model
        n = t.batch_size * self.world
        mine = slice(self.rank * t.batch_size, (self.rank + 1) * t.batch_size)
        idx = torch.multinomial(self.sample_weights, n, replacement=True,
                                generator=self.generator)
        device = self.accelerator.device
        labels = [self.train_set.dx[idx], self.train_set.tone[idx], self.train_set.sex[idx]]
        labels = [x[mine].to(device) for x in labels]
        if self.latents is not None:
            x = self.latents[idx]
            if t.augment:
                x = augment(x, self.generator)
            x = x[mine].to(device)
            return Batch(x, x, *labels, **self.step_noise(x.shape[1:], mine))
        images = self.train_images[idx.to(self.train_images.device)].to(device).float()
        if t.augment:
            images = augment(images, self.generator)
        # RGB to [-1, 1]; a mask channel riding along stays {0, 1}.
        images = torch.cat([images[:, :3] / 127.5 - 1, images[:, 3:]], 1)
        x0 = denoiser_input(images[:, :3], m)
        if t.classifier_retint > 0:  # before the camera jitter, as a real skin would be
            images = retint_augment(images, t.classifier_retint, self.generator)
        if t.classifier_augment == "strong":
            images = strong_augment(images, self.generator)
        elif t.classifier_augment != "light":
            raise ValueError(f"unknown classifier_augment {t.classifier_augment!r}")
        mask = images[mine, 3:] if images.shape[1] > 3 else None
        return Batch(x0[mine], images[mine, :3], *labels, mask=mask,
                     **self.step_noise(x0.shape[1:], mine))

    def step_noise(self, shape: torch.Size, mine: slice) -> dict[str, torch.Tensor]:
        t = self.config.train
        drawn = draw_step_noise(t.batch_size * self.world, tuple(shape),
                                self.schedule.num_timesteps, t.cond_drop_prob, self.generator)
        return {k: v[mine] for k, v in zip(("t", "noise", "drop"), drawn)}

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        folder = self.checkpoint_dir / f"step-{self.step:07d}"
        save_rng(folder, self.generator, self.rank)
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return folder
        state = {"step": self.step, "best_score": self.best_score, "best_step": self.best_step,
                 "seconds_trained": self.seconds_trained}
        best = ({f"classifier.{k}": v for k, v in self.best_classifier.items()}
                if self.best_classifier is not None else None)
        save_checkpoint(folder, self.net, self.ema.module, self.optimizer, state, best)
        old = sorted(self.checkpoint_dir.glob("step-*"))[: -self.config.train.keep_checkpoints]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        return folder

    def load_checkpoint(self) -> bool:
        folders = sorted(self.checkpoint_dir.glob("step-*"))
        folders = [f for f in folders if (f / "state.json").exists()]
        if not folders:
            logger.info("no checkpoint in %s: starting from scratch", self.checkpoint_dir)
            return False
        folder = folders[-1]
        state, best = load_checkpoint(folder, self.net, self.ema.module, self.optimizer,
                                      str(self.accelerator.device))
        self.step = state["step"]
        self.best_score = state["best_score"]
        self.best_step = state.get("best_step", 0)
        self.seconds_trained = state.get("seconds_trained", 0.0)
        if best is not None:
            self.best_classifier = {k.removeprefix("classifier."): v for k, v in best.items()}
        load_rng(folder, self.generator, self.rank)
        self.ema.num_updates = self.step  # ModelEmaV3 warm-up follows the step count
        logger.info("resumed from %s (step %d)", folder, self.step)
        return True

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

    def keep_if_best(self, metrics: dict[str, float]) -> bool:
        """Keep the EMA classifier as the export's classifier when its validation score
        beats the best so far (the first validation always does)."""
        if not metrics["score"] > self.best_score:
            return False
        self.best_score, self.best_step = metrics["score"], self.step
        self.best_classifier = self.classifier_snapshot()
        return True

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
        config.extra["training"] = self.training_record(classifier_step)
        dtype = getattr(torch, self.config.train.export_dtype)
        return save_pretrained(model, config, directory, dtype=dtype)

    def training_record(self, classifier_step: int) -> dict:
        """What config.json says about how the weights were trained. A fine-tune (`init_from`)
        appends itself to the stages of the weights it started from; when it never beat their
        classifier, the classifier is still theirs."""
        t = self.config.train
        this = {"step": self.step, "classifier_step": classifier_step,
                "step_kind": self.step_kind, "images_seen": self.step * t.batch_size,
                "wall_seconds": round(self.seconds_trained, 3)}
        if self.command:
            this["command"] = self.command
        previous = self.previous_training
        if not previous:
            return this
        stages = [*(previous.get("stages") or [previous]), this]
        record = {"stages": stages, "step": self.step, "classifier_step": classifier_step,
                  "classifier_stage": len(stages)}
        if classifier_step == 0:  # the starting classifier was never beaten
            record["classifier_step"] = previous.get("classifier_step", 0)
            record["classifier_stage"] = previous.get("classifier_stage", 1)
        return record

    # ---------------------------------------------------------------- loop
    def train(self, max_steps: int | None = None,
              stop_at: int | None = None) -> dict[str, float]:
        """Train to `max_steps` (the LR schedule's length). `stop_at` ends this process
        earlier, with a checkpoint, as a session that ends would: `resume` continues it."""
        from tqdm.auto import tqdm

        t = self.config.train
        max_steps = max_steps or t.max_steps
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.config.to_json(self.output_dir / "train_config.json")
        log_path = self.output_dir / "log.csv"
        new_log = not log_path.exists() or self.step == 0
        fields = LOG_FIELDS
        if not new_log:  # resuming: keep the columns the log was started with
            with log_path.open(newline="") as f:
                fields = next(csv.reader(f), None) or LOG_FIELDS
        log_file = log_path.open("w" if new_log else "a", newline="")
        writer = csv.DictWriter(log_file, fieldnames=fields, extrasaction="ignore")
        if new_log:
            writer.writeheader()
        self.model.train()
        running: dict[str, list[float]] = {}
        started = last_log = time.perf_counter()
        last_log_step = self.step
        images_per_epoch = len(self.train_set)
        last_val: dict[str, float] = {}
        progress = tqdm(total=max_steps, initial=self.step, desc="train",
                        disable=not self.accelerator.is_main_process, mininterval=5)
        budget = t.time_budget_s
        seconds_before = self.seconds_trained  # from the checkpoint when resuming
        end = min(stop_at or max_steps, max_steps)
        while self.step < end:
            # The time budget counts seconds trained over every resumed run, so a resumed
            # run continues the LR decay instead of starting it again.
            factor = lr_factor(self.step, t.warmup_steps, max_steps,
                               self.seconds_trained / budget if budget else 0.0)
            for group, base in zip(self.optimizer.param_groups,
                                   (t.learning_rate, t.classifier_learning_rate)):
                group["lr"] = base * factor
            batch = self.next_batch()
            with self.accelerator.autocast():
                out = self.model(batch, self.generator)  # through the DDP wrapper
            self.optimizer.zero_grad(set_to_none=True)
            self.accelerator.backward(out["loss"])
            if t.grad_clip:
                self.accelerator.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.optimizer.step()
            self.ema.update(self.net, step=self.step)
            self.step += 1
            running_for = time.perf_counter() - started
            self.seconds_trained = seconds_before + running_for
            progress.update(1)
            for key in ("loss", "mse", "cls_real", "cls_x0", "focus", "adv", "adv_accuracy"):
                if key in out:
                    running.setdefault(key, []).append(float(out[key].detach()))
            row = None
            out_of_time = bool(budget) and self.seconds_trained >= budget
            last_step = self.step == end or out_of_time
            if self.step % t.log_every == 0 or last_step:
                now = time.perf_counter()
                row = {k: round(float(np.mean(v)), 5) for k, v in running.items()}
                row.update(
                    step=self.step,
                    epoch=round(self.step * t.batch_size / images_per_epoch, 3),
                    images_seen=self.step * t.batch_size,
                    lr=round(self.optimizer.param_groups[0]["lr"], 8),
                    seconds=round(now - started, 1),
                    images_per_second=round(
                        (self.step - last_log_step) * t.batch_size / max(now - last_log, 1e-9), 2),
                )
                running, last_log, last_log_step = {}, now, self.step
                progress.set_postfix(loss=row["loss"], mse=row["mse"], cls=row["cls_real"])
            if self.step % t.eval_every == 0 or last_step:
                last_val = self.validate()
                self.model.train()
                row = row or {"step": self.step}
                row.update({f"val_{k}": round(last_val[k], 5) for k in VAL_LOG_KEYS
                            if k in last_val})
                if self.keep_if_best(last_val) and self.accelerator.is_main_process:
                    self.export()
                    (self.output_dir / "best_val.json").write_text(
                        json.dumps({"step": self.step, **last_val}, indent=2))
            if row is not None and self.accelerator.is_main_process:
                writer.writerow(row)
                log_file.flush()
            if self.step % t.checkpoint_every == 0 or last_step:
                self.save_checkpoint()
            if out_of_time:
                logger.info("time budget of %.0f s reached at step %d", budget, self.step)
                break
        progress.close()
        log_file.close()
        if self.accelerator.is_main_process:
            self.export()  # the final denoiser with the best classifier
            self.export(self.output_dir / "last", best_classifier=False)
        return last_val


def train(config: ClassNDiffConfig, output_dir: str | Path, resume: bool = False,
          max_steps: int | None = None, step_kind: str = "joint",
          init_from: str | Path | None = None, command: str | None = None) -> dict[str, float]:
    """Train (or resume, or fine-tune from `init_from` weights) and export to `output_dir`:
    the final EMA denoiser with the best-by-validation EMA classifier. `command` (the command
    line) is recorded in config.json."""
    trainer = Trainer(config, output_dir, resume=resume, step_kind=step_kind,
                      init_from=init_from, command=command)
    return trainer.train(max_steps)
