"""Shared plumbing of the speed benchmarks: arguments, the model under test (a real weights
folder, or a tiny random model for --quick), a synthetic upload, timing, and the one JSON
line every benchmark ends with."""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The test suite's tiny model: a DiT at 16 px and a small timm net at 32 px (random init).
TINY_MODEL = {
    "image_size": 16, "in_channels": 3, "patch_size": 4, "hidden_size": 32, "depth": 2,
    "num_heads": 2, "classifier_backbone": "test_resnet", "classifier_image_size": 32,
    "pixel_size": 32, "num_train_timesteps": 1000,
}


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="a tiny random model and few repeats (CI, under a minute)")
    p.add_argument("--weights", default=None,
                   help="a weights folder or Hub id (default: weights/embedded)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    return p


def setup(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def tiny_pipe(seed: int = 0) -> Any:
    """A ClassNDiffPipeline over a randomly initialised tiny model: it measures the code
    path, not the embedded model."""
    from classndiff.config import ClassNDiffConfig
    from classndiff.models.joint import ClassNDiff
    from classndiff.pipelines.pipeline import ClassNDiffPipeline

    config = ClassNDiffConfig.from_dict({
        "model": TINY_MODEL, "train": {"batch_size": 8, "mixed_precision": "no"},
        "sampling": {"steps": 20, "max_images": 16, "max_steps": 1000}})
    torch.manual_seed(seed)
    return ClassNDiffPipeline(ClassNDiff(config.model).eval(), config, "cpu",
                              source="tiny random model (--quick)")


def load_pipe(args: argparse.Namespace) -> Any:
    from classndiff.pipelines.pipeline import ClassNDiffPipeline

    if args.quick and not args.weights:
        return tiny_pipe(args.seed)
    return ClassNDiffPipeline.from_pretrained(args.weights or str(ROOT / "weights/embedded"),
                                              device="cpu", fallback=False)


def synthetic_lesion(size: int = 128, seed: int = 0) -> Any:
    """A skin-coloured square with a dark blob: an upload that is not a dataset image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.ones((size, size, 3)) * np.array([205, 160, 140])
    image[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2] = (110, 70, 50)
    return Image.fromarray(np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8))


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def percentiles(times: list[float]) -> dict[str, float]:
    """p50 / p95 in milliseconds."""
    return {"p50_ms": round(float(np.percentile(times, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(times, 95)) * 1000, 1), "n": len(times)}


def print_table(header: list[str], rows: list[list[Any]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)), flush=True)


def environment(args: argparse.Namespace, pipe: Any | None = None) -> dict[str, Any]:
    return {"quick": bool(args.quick), "threads": torch.get_num_threads(),
            "weights": getattr(pipe, "source", args.weights), "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine()}


def probabilities(pipe: Any, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """The pipeline's calibrated class probabilities for uint8 (N, H, W, 3) images."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return np.concatenate([pipe.predict_proba(x[i:i + batch_size]).numpy()
                           for i in range(0, len(x), batch_size)])


def first_masked_of_class(data: Any, dx: str, count: int) -> np.ndarray:
    """Indices of the first `count` images of diagnosis `dx` that have an expert mask in a
    `LesionDataset` loaded with masks: the images the counterfactual benchmarks edit."""
    from classndiff.labels import DX_CODES

    return np.flatnonzero((data.dx.numpy() == DX_CODES.index(dx))
                          & data.has_mask.numpy())[:count]


class MaskedSplit:
    """A split's images that have an expert mask, uint8 (N, H, W, 3), with their masks,
    labels, lesion ids and skin-tone groups, and their skin re-tinted to each group of
    `fairness.RETINT_TARGETS` (computed once, shared by every model measured on them)."""

    def __init__(self, data_dir: Path | None, split: str, size: int, limit: int | None = None):
        from classndiff.data import LesionDataset
        from classndiff.trust.fairness import RETINT_TARGETS, retint_many

        data = LesionDataset(data_dir, split, image_size=size, masks=True, limit=limit)
        keep = np.flatnonzero(data.has_mask.numpy())
        self.images = data.images[keep].permute(0, 2, 3, 1).numpy()
        self.masks = data.masks[keep, 0].numpy().astype(bool)
        self.labels = data.dx.numpy()[keep]
        self.lesion_ids = [data.lesion_ids[i] for i in keep]
        self.tone = np.array([data.rows[i].get("skin_tone_group") or "unknown" for i in keep])
        self.retinted = {t: retint_many(self.images, self.masks, t) for t in RETINT_TARGETS}

    @functools.cached_property
    def whole_field(self) -> dict[str, np.ndarray]:
        """The images re-tinted to each target over the whole field, lesion included, its
        contrast with the skin kept (`skintone.retint_field_torch`)."""
        from classndiff.trust.fairness import RETINT_TARGETS, retint_many

        return {t: retint_many(self.images, self.masks, t, whole_field=True)
                for t in RETINT_TARGETS}


def edit_weights_config(pipe: Any, edit: Callable[[Any], str]) -> None:
    """`edit` a weights folder's config.json in place (as written, not as loaded: nothing the
    loader fills in is saved) for a benchmark's --apply; `edit` returns what it changed, in
    words, which is printed. A tiny --quick model has no folder: nothing is written."""
    from classndiff.config import ClassNDiffConfig
    from classndiff.hub import CONFIG_NAME

    if getattr(pipe, "weights_path", None) is None:
        print("--apply: no weights folder (a tiny model): nothing written", flush=True)
        return
    path = Path(pipe.weights_path) / CONFIG_NAME
    config = ClassNDiffConfig.from_json(path)
    changed = edit(config)
    config.to_json(path)
    print(f"{path}: {changed}", flush=True)


def save_rows(path: Path, rows: list[np.ndarray]) -> None:
    """A figure of image rows (uint8 H×W×3 each, equal widths), stacked top to bottom."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def emit(result: dict[str, Any], output: Path | None = None) -> None:
    """The final line of every benchmark: its figures as one JSON object (also written,
    indented, to `output` when given)."""
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps(result, default=float), flush=True)
