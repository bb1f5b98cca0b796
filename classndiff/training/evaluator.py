"""The independent evaluator: a small timm classifier trained on REAL HAM10000 training
images only, never on generated ones, so that generated images are not graded by the
model that made them (class fidelity, Fréchet distance and KID in its feature space).

It sees 64 px inputs: generated images come out of the embedded denoiser at 64 px, and
real images are downsampled to 64 px with antialiasing — the same path the denoiser's
training images took — so real and generated images reach it the same way.

    classndiff train-evaluator --output-dir weights/evaluator
    ev = load_evaluator("weights/evaluator"); ev.features(images_in_minus1_1)

`train_classifier` is shared with the classification accuracy score (a classifier trained
on generated images only) and the fairness experiment.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from classndiff.labels import DX_CODES
from classndiff.metrics import classification_metrics, selection_score
from classndiff.training.checkpoint import cpu_contiguous
from classndiff.training.loop import LoopSettings, TrainingLoop

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class EvaluatorConfig:
    backbone: str = "resnet10t"  # chosen by measurement: fastest small timm net at 64 px here
    image_size: int = 64
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    label_smoothing: float = 0.1
    balance_power: float = 0.5  # sample weight ∝ count(dx)^-power (0.5: sqrt-balanced)
    ema_decay: float = 0.998
    mixed_precision: str = "bf16"  # "bf16" autocast on CPU, or "no"
    seed: int = 0
    steps: int | None = None  # overrides epochs (CAS, fairness and tests use a step budget)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluatorConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Evaluator(nn.Module):
    """Images in [-1, 1] at any size → logits over the 7 classes, or pooled features."""

    def __init__(self, config: EvaluatorConfig):
        super().__init__()
        self.config = config
        self.backbone = timm.create_model(config.backbone, pretrained=False,
                                          num_classes=len(DX_CODES))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > size)
        return ((x + 1) / 2 - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features: the space FD and KID are measured in."""
        return self.backbone.forward_head(self.backbone.forward_features(self.prepare(x)),
                                          pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.prepare(x))

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(features, probabilities) for a stack of images (uint8 or [-1, 1] floats)."""
        self.eval()
        feats, probs = [], []
        device = self.mean.device
        for start in range(0, images.shape[0], batch_size):
            x = as_float(images[start : start + batch_size].to(device))
            f = self.features(x)
            feats.append(f.float().cpu())
            probs.append(torch.softmax(self.backbone.get_classifier()(f).float(), 1).cpu())
        return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) → float in [-1, 1]; floats pass through."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()


def downsample_uint8(images: torch.Tensor, size: int, batch_size: int = 512) -> torch.Tensor:
    """uint8 images → uint8 at `size` px, bilinear with antialiasing (the denoiser's path)."""
    if images.shape[-1] == size:
        return images
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flips, 90° turns and a small shift — label-preserving for dermoscopy; no colour
    jitter, so the feature space stays sensitive to colour errors in generated images."""
    n = x.shape[0]
    flip = (torch.rand(n, 2, generator=generator) < 0.5).to(x.device)
    x = torch.where(flip[:, 0, None, None, None], x.flip(-1), x)
    x = torch.where(flip[:, 1, None, None, None], x.flip(-2), x)
    turns = int(torch.randint(0, 4, (), generator=generator))  # one turn per batch: cheap
    x = torch.rot90(x, turns, dims=(-2, -1))
    pad = max(1, x.shape[-1] // 16)
    dy, dx = (int(v) for v in torch.randint(-pad, pad + 1, (2,), generator=generator))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


@torch.no_grad()
def read_in_batches(model: nn.Module, read: Callable[[torch.Tensor], torch.Tensor],
                    images: torch.Tensor, batch_size: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`read` (a method of `model`, in eval mode) over uint8 images in batches, on the CPU,
    as `dtype`."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([read(as_float(images[s : s + batch_size].to(device))).to(dtype).cpu()
                      for s in range(0, images.shape[0], batch_size)])


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Class probabilities of uint8 images (N, 3, H, W) at the evaluator's size."""
    return torch.softmax(read_in_batches(model, model, images, batch_size), 1).numpy()


def pooled_features(model: Evaluator, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Pooled penultimate features of uint8 images (N, 3, H, W) at the evaluator's size: a
    feature space trained on dermoscopy alone, from scratch, for a second Fréchet distance."""
    return read_in_batches(model, model.features, images, batch_size).numpy().astype(np.float64)


@dataclass
class TrainResult:
    model: Evaluator
    log: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class EvaluatorObjective(nn.Module):
    """The evaluator's loss as a module (the loop calls it through the DDP wrapper)."""

    def __init__(self, model: Evaluator, label_smoothing: float):
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor],
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x, labels = batch
        logits = self.model(x)
        return {"loss": F.cross_entropy(logits.float(), labels,
                                        label_smoothing=self.label_smoothing)}


class EvaluatorTrainer(TrainingLoop):
    """An `Evaluator` on uint8 images with dx labels, on the project's one loop: sqrt-balanced
    sampling, flips/turns/shift augmentation, AdamW + cosine, bf16, EMA, best by validation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, config: EvaluatorConfig,
                 val: tuple[torch.Tensor, torch.Tensor] | None = None,
                 work_dir: str | Path | None = None, eval_every: int | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None):
        steps_per_epoch = max(1, math.ceil(len(labels) / config.batch_size))
        total = config.steps or config.epochs * steps_per_epoch
        every = eval_every or steps_per_epoch
        super().__init__(LoopSettings(
            batch_size=config.batch_size, learning_rates=(config.learning_rate,),
            warmup_steps=config.warmup_steps, max_steps=total, lr_floor=0.02,
            ema_decay=config.ema_decay, mixed_precision=config.mixed_precision,
            log_every=every, eval_every=every, checkpoint_every=every, keep_checkpoints=1,
            seed=config.seed), work_dir)
        self.config = config
        device = self.accelerator.device
        self.images = downsample_uint8(images, config.image_size).to(device)
        self.labels = labels.long().to(device)
        self.val = val
        self.progress = progress
        counts = torch.bincount(self.labels, minlength=len(DX_CODES)).clamp(min=1).float()
        self.weights = (counts[self.labels] ** (-config.balance_power)).cpu()
        model = Evaluator(config)
        self.prepare(EvaluatorObjective(model, config.label_smoothing),
                     torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                       weight_decay=config.weight_decay))

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.settings.batch_size * self.world
        idx = torch.multinomial(self.weights, n, replacement=True, generator=self.generator)
        x = augment_batch(as_float(self.images[idx.to(self.images.device)]), self.generator)
        mine = self.global_slice()
        return x[mine], self.labels[idx.to(self.labels.device)][mine]

    def validate(self) -> dict[str, float]:
        if self.val is None:
            return {"score": -float("inf")}  # nothing to select on: the last EMA is kept
        metrics = classification_metrics(predict(self.ema.module, self.val[0]),
                                         self.val[1].cpu().numpy())
        metrics["score"] = selection_score(metrics)
        return metrics

    def on_row(self, row: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress({k: v for k, v in row.items() if v is not None})

    def result(self) -> TrainResult:
        final = Evaluator(self.config)
        final.load_state_dict(self.best_state if self.best_state is not None
                              else self.ema.module.state_dict())
        rows = [{k: v for k, v in row.items() if v is not None} for row in self.log_rows]
        best_row = next((r for r in rows if r["step"] == self.best_step and "val_score" in r),
                        {})
        best = ({"step": self.best_step, **{k.removeprefix("val_"): v for k, v in
                                            best_row.items() if k.startswith("val_")}}
                if best_row else {})
        return TrainResult(final.eval(), rows, best, self.seconds_trained)


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    config: EvaluatorConfig,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    work_dir: str | Path | None = None,
    resume: bool = False,
    eval_every: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train an `Evaluator` on uint8 images (N, 3, S, S) with dx labels (`EvaluatorTrainer`).
    With `val`, the EMA weights are scored every `eval_every` steps (default: once an epoch)
    and the best by validation is kept; with `work_dir`, a log and resumable checkpoints."""
    trainer = EvaluatorTrainer(images, labels, config, val, work_dir, eval_every, progress)
    if resume:
        trainer.load_checkpoint()
    trainer.train()
    return trainer.result()


# ---------------------------------------------------------------------------- save / load
def save_evaluator(model: Evaluator, directory: str | Path, info: dict[str, Any] | None = None,
                   half: bool = True) -> Path:
    """config.json + model.safetensors (fp16 by default: half the size, same argmax)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(cpu_contiguous(state), str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    data = {"kind": "classndiff-evaluator", **asdict(model.config), **(info or {})}
    (directory / CONFIG_NAME).write_text(json.dumps(data, indent=2) + "\n")
    return directory


def load_evaluator(directory: str | Path, device: str | torch.device = "cpu") -> Evaluator:
    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"no evaluator in {directory}: run `classndiff train-evaluator --output-dir "
            f"{directory}` first")
    config = EvaluatorConfig.from_dict(json.loads((directory / CONFIG_NAME).read_text()))
    model = Evaluator(config)
    state = load_file(str(directory / WEIGHTS_NAME), device=str(device))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in state.items()})
    return model.to(device).eval()


# ---------------------------------------------------------------------------- the command
def train_evaluator(
    output_dir: str | Path,
    data_dir: str | Path | None = None,
    config: EvaluatorConfig | None = None,
    work_dir: str | Path | None = None,
    resume: bool = False,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train on the real train split, select on val, score on test; write the folder:
    config.json, model.safetensors, test_metrics.json, training_log.csv."""
    config = config or EvaluatorConfig()
    output_dir = Path(output_dir)
    work_dir = Path(work_dir) if work_dir else Path("runs") / f"{output_dir.name}-work"
    train_set, val_set, test_set = (load_split(data_dir, split, config.image_size, limit)
                                    for split in ("train", "val", "test"))

    def report(row: dict[str, Any]) -> None:
        logger.info("evaluator %s", row)
        print(json.dumps(row), flush=True)

    result = train_classifier(train_set.images, train_set.dx, config,
                              val=(val_set.images, val_set.dx), work_dir=work_dir,
                              resume=resume, progress=report)
    probs = predict(result.model, test_set.images)
    labels = test_set.dx.numpy()
    test = classification_metrics(probs, labels)
    predictions = probs.argmax(1)
    test["recall_per_class"] = {code: float((predictions[labels == c] == c).mean())
                                for c, code in enumerate(DX_CODES) if (labels == c).any()}
    test["confusion_matrix"] = _confusion(labels, predictions).tolist()
    test["labels"] = list(DX_CODES)
    info = {
        "trained_on": "real HAM10000 train split only (never generated images)",
        "data_dir": str(train_set.root),
        "train_images": len(train_set), "val_images": len(val_set), "test_images": len(test_set),
        "selected_at_step": result.best.get("step"), "validation": result.best,
        "test": {k: test[k] for k in ("accuracy", "balanced_accuracy", "macro_auc",
                                      "malignant_auc", "ece", "n")},
        "training_seconds": round(result.seconds, 1),
        "torch": torch.__version__, "timm": timm.__version__,
    }
    save_evaluator(result.model, output_dir, info)
    (output_dir / "test_metrics.json").write_text(json.dumps(
        {"split": "test", "command": "classndiff train-evaluator", **test}, indent=2) + "\n")
    if result.log:
        keys = list(dict.fromkeys(k for row in result.log for k in row))
        with (output_dir / "training_log.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(result.log)
    return info


def load_split(root: str | Path | None, split: str, size: int, limit: int | None = None,
               read_size: int = 128):  # noqa: ANN201 - a LesionDataset
    """A split read at the data's 128 px, then downsampled to `size` the denoiser's way."""
    from classndiff.data import LesionDataset

    dataset = LesionDataset(root, split, image_size=read_size, limit=limit)
    dataset.images = downsample_uint8(dataset.images, size)
    return dataset


def _confusion(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    matrix = np.zeros((len(DX_CODES), len(DX_CODES)), dtype=int)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix
