"""The one training loop of the project. The joint Class-N-Diff trainer (`train.Trainer`) and
the independent evaluator's (`evaluator.train_classifier`) are both a `TrainingLoop`: they
say what a batch is, how to validate and what to export; the loop does the rest, the same
way for both:

- accelerate (CPU here; several GPUs with `accelerate launch`): the loss is computed by
  calling the prepared objective, so DistributedDataParallel averages the gradients;
- AdamW with per-group learning rates, linear warm-up then cosine decay (`lr.lr_factor`),
  following steps or a time budget that continues across resumes;
- EMA of the weights (timm's ModelEmaV3), gradient clipping, mixed precision;
- validation every N steps with best-by-validation selection of a part of the EMA model;
- a CSV log, and checkpoints (`checkpoint.py`, safetensors + JSON) from which a resumed run
  is the same run: weights, EMA, best, optimizer, step, seconds and every RNG.
"""

from __future__ import annotations

import csv
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from classndiff.training.checkpoint import load_checkpoint, load_rng, save_checkpoint, save_rng
from classndiff.training.lr import lr_factor

logger = logging.getLogger(__name__)


@dataclass
class LoopSettings:
    """How a loop runs (the model-specific configs map onto this)."""

    batch_size: int
    learning_rates: tuple[float, ...]  # one per optimizer parameter group
    warmup_steps: int
    max_steps: int
    lr_floor: float = 0.1  # the cosine decays to this share of each learning rate
    time_budget_s: float | None = None
    grad_clip: float = 0.0
    ema_decay: float = 0.999
    mixed_precision: str = "bf16"
    log_every: int = 20
    eval_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0


class TrainingLoop:
    """Subclasses build their objective (a module whose `.model` is what is trained and whose
    `forward(batch, generator)` returns a dict with "loss") and optimizer, call `prepare`,
    and implement `next_batch`, `validate` (a dict with "score") and, optionally,
    `best_snapshot`, `on_best` and `finish`. Without an output folder nothing is written."""

    log_keys: tuple[str, ...] = ("loss",)  # running means of these outputs are logged
    val_log_keys: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_auc",
                                     "malignant_auc", "score")
    log_fields: tuple[str, ...] = ()  # the CSV columns (default: from the keys above)

    def __init__(self, settings: LoopSettings, output_dir: str | Path | None):
        from accelerate import Accelerator, DistributedDataParallelKwargs

        self.settings = settings
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.checkpoint_dir = self.output_dir / "checkpoints" if self.output_dir else None
        cuda = torch.cuda.is_available()
        mixed = settings.mixed_precision
        if mixed == "fp16" and not cuda:
            mixed = "bf16"
        # On the CPU, bf16 is plain autocast; accelerate's mixed-precision setting is global to
        # the process (a second loop with another setting would be refused), so it is used
        # on GPUs only, where it also scales fp16 gradients.
        self.cpu_bf16 = not cuda and mixed == "bf16"
        # Unused parameters are normal here: a frozen part (learning rate 0), a branch that
        # runs on some steps only.
        self.accelerator = Accelerator(
            mixed_precision=mixed if cuda else "no", cpu=not cuda,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        # Two sources of randomness, both checkpointed: `generator` draws each step's data and
        # noise for the GLOBAL batch, the same on every process, which then takes its slice
        # (N processes see exactly what one process with N times the batch would); the
        # global RNG (dropout) differs per process.
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        torch.manual_seed(settings.seed + self.rank)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.step = 0
        self.seconds_trained = 0.0
        # The share of the run done: steps of max_steps or seconds of the time budget (the two
        # clocks the LR schedule follows), whichever is further. Unlike the cosine's progress
        # it counts the warm-up; derived from the checkpointed step and seconds, it resumes.
        self.share_done = 0.0
        self.best_score = -float("inf")
        self.best_step = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.log_rows: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- to implement
    def next_batch(self) -> Any:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        raise NotImplementedError

    def best_snapshot(self) -> dict[str, torch.Tensor]:
        """What best-by-validation keeps: by default the whole EMA model."""
        return {k: v.detach().clone() for k, v in self.ema.module.state_dict().items()}

    def on_best(self, metrics: dict[str, float]) -> None:
        """Called on the main process when a validation beats the best so far."""

    def finish(self) -> None:
        """Called on the main process at the end of `train`."""

    def on_row(self, row: dict[str, Any]) -> None:
        """Called with every log row (progress reporting)."""

    def after_optimizer_step(self, out: dict[str, torch.Tensor],
                             clip_scale: float | torch.Tensor) -> None:
        """Called on every process after each optimiser step, before the EMA update, with
        the objective's outputs (an update the optimiser does not make) and the factor the
        step's gradients were scaled by to the clipping norm (1 when not clipped)."""

    # ---------------------------------------------------------------- set-up
    def prepare(self, objective: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        from timm.utils import ModelEmaV3

        self.model, self.optimizer = self.accelerator.prepare(objective, optimizer)
        self.ema = ModelEmaV3(self.net, decay=self.settings.ema_decay, use_warmup=True)

    def autocast(self) -> Any:
        if self.cpu_bf16:
            return torch.autocast("cpu", torch.bfloat16)
        return self.accelerator.autocast()

    @property
    def net(self) -> nn.Module:
        """The model being trained, outside the accelerate/DDP wrapper and the objective."""
        return self.accelerator.unwrap_model(self.model).model

    def global_slice(self) -> slice:
        """This process's part of a global batch."""
        n = self.settings.batch_size
        return slice(self.rank * n, (self.rank + 1) * n)

    # ---------------------------------------------------------------- selection
    def keep_if_best(self, metrics: dict[str, float]) -> bool:
        """Keep `best_snapshot()` when the validation score beats the best so far (the first
        validation always does)."""
        if not metrics["score"] > self.best_score:
            return False
        self.best_score, self.best_step = metrics["score"], self.step
        self.best_state = self.best_snapshot()
        return True

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        folder = self.checkpoint_dir / f"step-{self.step:07d}"
        save_rng(folder, self.generator, self.rank)
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return folder
        state = {"step": self.step, "best_score": self.best_score, "best_step": self.best_step,
                 "seconds_trained": self.seconds_trained, "log": self.log_rows}
        save_checkpoint(folder, self.net, self.ema.module, self.optimizer, state,
                        self.best_state)
        for old in sorted(self.checkpoint_dir.glob("step-*"))[: -self.settings.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder, if any (what `load_checkpoint` resumes)."""
        folders = sorted(self.checkpoint_dir.glob("step-*")) if self.checkpoint_dir else []
        folders = [f for f in folders if (f / "state.json").exists()]
        return folders[-1] if folders else None

    def load_checkpoint(self) -> bool:
        folder = self.latest_checkpoint()
        if folder is None:
            logger.info("no checkpoint in %s: nothing to resume", self.checkpoint_dir)
            return False
        state, best = load_checkpoint(folder, self.net, self.ema.module, self.optimizer,
                                      str(self.accelerator.device))
        self.step = state["step"]
        self.best_score = state["best_score"]
        self.best_step = state.get("best_step", 0)
        self.seconds_trained = state.get("seconds_trained", 0.0)
        self.log_rows = state.get("log", [])
        self.best_state = best
        load_rng(folder, self.generator, self.rank)
        self.ema.num_updates = self.step  # ModelEmaV3 warm-up follows the step count
        logger.info("resumed from %s (step %d)", folder, self.step)
        return True

    # ---------------------------------------------------------------- the loop
    def _open_log(self) -> tuple[Any, csv.DictWriter | None]:
        if self.output_dir is None or not self.accelerator.is_main_process:
            return None, None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / "log.csv"
        fields = list(self.log_fields) or [
            "step", "epoch", "images_seen", *self.log_keys, "lr", "seconds",
            "images_per_second", *(f"val_{k}" for k in self.val_log_keys)]
        new = not path.exists() or self.step == 0
        if not new:  # resuming: keep the columns the log was started with
            with path.open(newline="") as f:
                fields = next(csv.reader(f), None) or fields
        file = path.open("w" if new else "a", newline="")
        writer = csv.DictWriter(file, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        return file, writer

    def _step(self, max_steps: int) -> dict[str, torch.Tensor]:
        """One optimisation step at the scheduled learning rate; the objective's outputs."""
        s = self.settings
        budget = s.time_budget_s
        # The time budget counts seconds trained over every resumed run, so a resumed run
        # continues the LR decay instead of starting it again.
        time_progress = self.seconds_trained / budget if budget else 0.0
        self.share_done = max(self.step / max(1, max_steps), time_progress)
        factor = lr_factor(self.step, s.warmup_steps, max_steps, time_progress, s.lr_floor)
        for group, base in zip(self.optimizer.param_groups, s.learning_rates):
            group["lr"] = base * factor
        batch = self.next_batch()
        with self.autocast():
            out = self.model(batch, self.generator)  # through the DDP wrapper
        if not torch.isfinite(out["loss"]):
            raise FloatingPointError(f"the loss is {float(out['loss'])} at step {self.step}: "
                                     "stopping rather than training on it")
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(out["loss"])
        clip_scale = 1.0
        if s.grad_clip:
            norm = self.accelerator.clip_grad_norm_(self.model.parameters(), s.grad_clip)
            # torch's own coefficient, kept a tensor: reading it would sync every step.
            clip_scale = (s.grad_clip / (norm + 1e-6)).clamp(max=1.0)
        self.optimizer.step()
        self.after_optimizer_step(out, clip_scale)
        self.ema.update(self.net, step=self.step)
        self.step += 1
        return out

    def _log_row(self, running: dict[str, list[float]], epoch_size: int | None,
                 images_per_second: float) -> dict[str, Any]:
        """The log's row for now: running means of the logged terms, and where training is."""
        s = self.settings
        row: dict[str, Any] = {k: round(float(np.mean(v)), 5) for k, v in running.items()}
        row.update(
            step=self.step,
            epoch=round(self.step * s.batch_size * self.world / epoch_size, 3)
            if epoch_size else None,
            images_seen=self.step * s.batch_size * self.world,
            lr=round(self.optimizer.param_groups[0]["lr"], 8),
            seconds=round(self.seconds_trained, 1),
            images_per_second=round(images_per_second, 2),
        )
        return row

    def train(self, max_steps: int | None = None, stop_at: int | None = None,
              epoch_size: int | None = None) -> dict[str, float]:
        """Train to `max_steps` (the LR schedule's length). `stop_at` ends this process
        earlier, with a checkpoint, as a session that ends would: `resume` continues it.
        `epoch_size` (images) only labels the log."""
        from tqdm.auto import tqdm

        s = self.settings
        max_steps = max_steps or s.max_steps
        log_file, writer = self._open_log()
        self.model.train()
        running: dict[str, list[float]] = {}
        started = last_log = time.perf_counter()
        last_log_step = self.step
        last_val: dict[str, float] = {}
        progress = tqdm(total=max_steps, initial=self.step, desc="train", mininterval=5,
                        disable=not self.accelerator.is_main_process or self.output_dir is None)
        budget = s.time_budget_s
        seconds_before = self.seconds_trained  # from the checkpoint when resuming
        end = min(stop_at or max_steps, max_steps)
        while self.step < end:
            out = self._step(max_steps)
            self.seconds_trained = seconds_before + time.perf_counter() - started
            progress.update(1)
            for key in self.log_keys:
                if key in out:
                    running.setdefault(key, []).append(float(out[key].detach()))
            row = None
            out_of_time = bool(budget) and self.seconds_trained >= budget
            last_step = self.step == end or out_of_time
            if self.step % s.log_every == 0 or last_step:
                now = time.perf_counter()
                row = self._log_row(running, epoch_size, (self.step - last_log_step) * s.batch_size
                                    * self.world / max(now - last_log, 1e-9))
                running, last_log, last_log_step = {}, now, self.step
                progress.set_postfix({k: row[k] for k in self.log_keys[:3] if k in row})
            if self.step % s.eval_every == 0 or last_step:
                last_val = self.validate()
                self.model.train()
                row = row or {"step": self.step}
                row.update({f"val_{k}": round(last_val[k], 5) for k in self.val_log_keys
                            if k in last_val})
                if self.keep_if_best(last_val) and self.accelerator.is_main_process:
                    self.on_best(last_val)
            if row is not None:
                self.log_rows.append(row)
                self.on_row(row)
                if writer is not None:
                    writer.writerow(row)
                    log_file.flush()
            if self.step % s.checkpoint_every == 0 or last_step:
                self.save_checkpoint()
            if out_of_time:
                logger.info("time budget of %.0f s reached at step %d", budget, self.step)
                break
        progress.close()
        if log_file is not None:
            log_file.close()
        if self.accelerator.is_main_process:
            self.finish()
        return last_val
