"""Evaluation on a data split: the headline classification metrics, written to JSON."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classndiff.data import LesionDataset
from classndiff.metrics import classification_metrics
from classndiff.version import __version__


@torch.no_grad()
def split_logits(pipe, dataset: LesionDataset, batch_size: int = 128,  # noqa: ANN001
                 ) -> torch.Tensor:
    """Classifier logits (N, 7) for every image of `dataset`, through the pipeline: the one
    prediction loop of the evaluation (calibrated and raw probabilities both come from it)."""
    return torch.cat([pipe.logits(dataset.images[i:i + batch_size].float() / 127.5 - 1).cpu()
                      for i in range(0, len(dataset), batch_size)])


def probabilities(pipe, logits: torch.Tensor, calibrated: bool = True,  # noqa: ANN001
                  ) -> np.ndarray:
    """Softmax of `split_logits`, temperature-scaled when `calibrated` and fitted."""
    return torch.softmax(logits / (pipe.temperature if calibrated else 1.0), 1).numpy()


def evaluate_classification(
    pipe,  # noqa: ANN001 - ClassNDiffPipeline
    data_dir: str | Path | None = None,
    split: str = "test",
    limit: int | None = None,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro AUC, malignant AUC, ECE on `split`."""
    started = time.perf_counter()
    dataset = LesionDataset(data_dir, split, image_size=pipe.config.model.pixel_size, limit=limit)
    logits = split_logits(pipe, dataset)
    metrics = classification_metrics(probabilities(pipe, logits), dataset.dx.numpy())
    if pipe.calibrated:
        raw = classification_metrics(probabilities(pipe, logits, calibrated=False),
                                     dataset.dx.numpy())
        metrics["ece_uncalibrated"] = raw["ece"]
    return {
        "split": split,
        "data_dir": str(dataset.root),
        "weights": pipe.source,
        "calibrated": pipe.calibrated,
        "classification": metrics,
        "seconds": round(time.perf_counter() - started, 1),
        "environment": {"classndiff": __version__, "torch": torch.__version__,
                        "python": platform.python_version()},
    }


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    return path
