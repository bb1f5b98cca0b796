"""`classndiff calibrate WEIGHTS`: the temperature and the abstention statistics, fitted on
the validation split and written into the weights' config.json (and OOD tensors)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classndiff.evaluation.trust_checks import data_dir_for
from classndiff.labels import malignant_mask
from classndiff.pipelines.pipeline import ClassNDiffPipeline
from classndiff.trust.abstention import (
    DEFAULT_PERCENTILE,
    STAT_NAMES,
    OODDetector,
    calibration_summary,
    collect,
    fit_temperature,
    reliability_diagram,
)
from classndiff.trust.threshold import DEFAULT_TARGET_SENSITIVITY, fit_threshold, rates

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- calibration
def _stored_dtype(path: Path, model_keys: set[str]) -> torch.dtype | None:
    """The one floating dtype the model's weights were exported in (e.g. float16), so that
    rewriting the folder keeps its size; None when mixed."""
    from safetensors import safe_open

    names = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
             "F64": torch.float64}
    with safe_open(str(path), "pt") as f:
        found = {f.get_slice(k).get_dtype() for k in f.keys() if k in model_keys}
    found &= set(names)
    return names[found.pop()] if len(found) == 1 else None


def calibrate_folder(
    weights: str | Path,
    data_dir: str | Path | None = None,
    report_dir: str | Path | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    batch_size: int = 64,
    train_limit: int | None = None,
    progress: bool = False,
    malignant_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
) -> dict[str, Any]:
    """Fit the temperature (on val), the malignant threshold (on val, after the temperature,
    for `malignant_sensitivity`) and the abstention statistics (train; thresholds on val),
    and rewrite `weights`/config.json + model.safetensors in place (atomically). Writes the
    reliability diagram and a JSON summary to `report_dir` (default: the weights folder)."""
    from classndiff.config import Calibration, ClassNDiffConfig
    from classndiff.hub import CONFIG_NAME, WEIGHTS_NAME, is_weights_dir, save_pretrained

    folder = Path(weights)
    if not is_weights_dir(folder):
        raise FileNotFoundError(
            f"{folder} is not a weights folder (config.json + model.safetensors)")
    pipe = ClassNDiffPipeline.from_pretrained(folder, device="cpu", fallback=False)
    root = data_dir_for(pipe.config, data_dir)
    started = time.perf_counter()
    val = collect(pipe, "val", root, batch_size, progress=progress)
    # Only the features of the training split are used (the abstention fit): one view.
    train = collect(pipe, "train", root, batch_size, limit=train_limit, progress=progress,
                    views=1)

    temperature = fit_temperature(val["logits"], val["labels"])
    summary = calibration_summary(val["logits"], val["labels"], temperature)
    malignant = torch.tensor(malignant_mask())
    p_malignant = torch.softmax(val["logits"] / temperature, 1)[:, malignant].sum(1).numpy()
    is_malignant = malignant[val["labels"]].numpy()
    threshold = sensitivity = specificity = None
    if is_malignant.any() and not is_malignant.all():
        # Unrounded: a rounded-up threshold would drop the lesion it was fitted on.
        threshold = fit_threshold(p_malignant, is_malignant, malignant_sensitivity)
        sensitivity, specificity = (round(r, 4) for r in
                                    rates(p_malignant, is_malignant, threshold))
    else:
        logger.warning("the validation split lacks malignant or benign lesions: no malignant "
                       "threshold is fitted (the pipeline will show no call)")
    detector = OODDetector.fit(train["features"], train["labels"], train["stats"],
                               val["features"], val["stats"], percentile)
    val_checks = detector.check(val["features"], val["stats"])
    val_rejected = float(np.mean([c["abstain"] for c in val_checks]))

    config = ClassNDiffConfig.from_json(folder / CONFIG_NAME)  # as written, not as loaded
    config.calibration = Calibration(
        temperature=round(temperature, 6), ece_before=round(summary["ece_before"], 6),
        ece_after=round(summary["ece_after"], 6), nll_before=round(summary["nll_before"], 6),
        nll_after=round(summary["nll_after"], 6), split="val", n=int(len(val["labels"])),
        malignant_threshold=threshold, malignant_target_sensitivity=malignant_sensitivity,
        malignant_sensitivity=sensitivity, malignant_specificity=specificity)
    config.abstention = detector.to_config(
        method="Mahalanobis (class means, shared Ledoit-Wolf covariance) on the classifier's "
               "pooled features, OR one Gaussian on image colour/texture statistics",
        stats=list(STAT_NAMES), fit_split="train", n_fit=int(len(train["labels"])),
        threshold_split="val", val_rejected=round(val_rejected, 4))
    extras = {k: v for k, v in pipe.extras.items() if not k.startswith(OODDetector.PREFIX)}
    extras.update(detector.to_tensors())
    dtype = _stored_dtype(folder / WEIGHTS_NAME, set(pipe.model.state_dict()))
    # Write next to the old files, then swap: a crash never leaves a half-written folder.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".calibrate-") as tmp:
        save_pretrained(pipe.model, config, tmp, extras, dtype=dtype)
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            os.replace(Path(tmp) / name, folder / name)

    report = Path(report_dir) if report_dir else folder
    report.mkdir(parents=True, exist_ok=True)
    diagram = reliability_diagram(val["logits"], val["labels"], temperature,
                                  report / "reliability_val.png",
                                  title=f"Validation split (n = {len(val['labels'])})")
    result = {
        "weights": str(folder), "data_dir": str(root),
        "calibration": asdict(config.calibration),
        "abstention": {k: v for k, v in asdict(config.abstention).items() if k != "stats"},
        "reliability_diagram": str(diagram),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (report / "calibration.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
