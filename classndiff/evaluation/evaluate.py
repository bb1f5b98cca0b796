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
def predict_split(pipe, dataset: LesionDataset, batch_size: int = 128,  # noqa: ANN001
                  calibrated: bool = True) -> np.ndarray:
    """Probabilities (N, 7) for every image of `dataset` through the pipeline."""
    out = []
    for start in range(0, len(dataset), batch_size):
        pixels = dataset.images[start : start + batch_size].float() / 127.5 - 1
        out.append(pipe.predict_proba(pixels, calibrated=calibrated))
    return torch.cat(out).numpy()


def evaluate_classification(
    pipe,  # noqa: ANN001 - ClassNDiffPipeline
    data_dir: str | Path | None = None,
    split: str = "test",
    limit: int | None = None,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro AUC, malignant AUC, ECE on `split`."""
    started = time.perf_counter()
    dataset = LesionDataset(data_dir, split, image_size=pipe.config.model.pixel_size, limit=limit)
    probs = predict_split(pipe, dataset)
    metrics = classification_metrics(probs, dataset.dx.numpy())
    if pipe.calibrated:
        raw = classification_metrics(predict_split(pipe, dataset, calibrated=False),
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
