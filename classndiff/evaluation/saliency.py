"""The saliency measures: how much of the CAM's energy falls inside the expert lesion
mask (`classndiff saliency WEIGHTS`), and the latency of a map."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from classndiff.explain.saliency import make_target


def mask_energy(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total energy that falls inside the mask (1 = all inside)."""
    total = float(cam.sum())
    return float(cam[mask].sum() / total) if total > 0 else float("nan")


def mask_overlap(cam: np.ndarray, mask: np.ndarray, threshold: float = 0.5) -> tuple[float, float]:
    """(IoU, lesion coverage) of the map's hot region (cam ≥ threshold) with the mask. Energy
    in the mask alone rewards a map squeezed into one spot of the lesion; coverage says how
    much of the lesion the map actually marks."""
    hot = cam >= threshold
    inter = float(np.logical_and(hot, mask).sum())
    union = float(np.logical_or(hot, mask).sum())
    area = float(mask.sum())
    return (inter / union if union else float("nan"), inter / area if area else float("nan"))


# ------------------------------------------------------------------ measurement (CLI)
def _mask_as_cam(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """What a CAM that knew the mask exactly could show at the layer's resolution: the mask
    averaged to `grid`, upsampled and scaled as pytorch-grad-cam does. Its mask energy is a
    ceiling for maps taken at that layer (a 4×4 map cannot hug a lesion's outline)."""
    x = torch.from_numpy(mask.astype(np.float32))[None, None]
    small = torch.nn.functional.adaptive_avg_pool2d(x, grid)
    up = torch.nn.functional.interpolate(small, size=mask.shape, mode="bilinear",
                                         align_corners=False)[0, 0]
    return ((up - up.min()) / (up.max() - up.min() + 1e-7)).numpy()


def measure_mask_energy(
    pipe: Any,
    data_dir: str | Path | None = None,
    split: str = "test",
    method: str = "gradcam",
    target: str | None = None,
    limit: int | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Mean share of CAM energy inside the expert lesion masks (masks/<image_id>.png),
    next to what a uniform map would score (the mean mask area) for reference."""
    from classndiff.data import LesionDataset, default_data_dir

    root = Path(data_dir) if data_dir else default_data_dir()
    data = LesionDataset(root, split, image_size=pipe.config.model.pixel_size, limit=limit,
                         masks=True)
    if not data.has_mask.all():
        missing = [data.image_ids[i] for i in (~data.has_mask).nonzero().flatten().tolist()]
        raise FileNotFoundError(f"no lesion mask in {root / 'masks'} for {len(missing)} image(s), "
                                f"e.g. {missing[0]}.png")
    explainer = pipe.explainer
    grid = explainer.grid()  # the mask seen at the CAM layer's resolution: the ceiling
    energies, areas, ceilings, ious, coverages, by_dx = [], [], [], [], [], {}
    for start in range(0, len(data), batch_size):
        index = range(start, min(start + batch_size, len(data)))
        pixels = torch.stack([data[i]["image"] for i in index]).to(pipe.device)
        with torch.no_grad():  # one pass predicts and gives the native CAM its map
            logits, feature_map, _ = explainer.classifier.forward_views(pixels, explainer.views)
        targets = [make_target(target, p)[0] for p in logits.argmax(1).tolist()]
        cams, _ = explainer.maps(pixels, targets, method, feature_map)
        for i, cam in zip(index, cams):
            mask = data.masks[i, 0].numpy() > 0
            energy = mask_energy(cam, mask)
            energies.append(energy)
            iou, coverage = mask_overlap(cam, mask)
            ious.append(iou)
            coverages.append(coverage)
            areas.append(float(mask.mean()))
            ceilings.append(mask_energy(_mask_as_cam(mask, grid), mask))
            by_dx.setdefault(data.rows[i]["dx"], []).append(energy)
    energies_a = np.array(energies)
    finite = energies_a[np.isfinite(energies_a)]  # an all-zero map has no energy to share

    def mean(values: list[float]) -> float | None:
        values = [v for v in values if np.isfinite(v)]
        return round(float(np.mean(values)), 4) if values else None

    ceiling = mean(ceilings)
    return {
        "split": split, "method": method, "target": target or "predicted",
        "layer": explainer.layer_name, "n": len(energies),
        "n_empty_maps": int(len(energies_a) - len(finite)),
        "mean_energy_in_mask": float(finite.mean()) if len(finite) else float("nan"),
        "median_energy_in_mask": float(np.median(finite)) if len(finite) else float("nan"),
        "share_of_images_over_0.5": float((finite > 0.5).mean()) if len(finite) else 0.0,
        "uniform_map_baseline": float(np.mean(areas)),
        "mask_at_layer_resolution": float("nan") if ceiling is None else ceiling,
        "mean_iou_at_0.5": mean(ious),
        "mean_lesion_coverage_at_0.5": mean(coverages),
        "layer_grid": list(grid),
        "per_dx": {dx: mean(v) for dx, v in sorted(by_dx.items())},
    }


def measure_latency(pipe: Any, repeats: int = 50, method: str = "gradcam") -> dict[str, float]:
    """diagnose(saliency=True) on one 128-px image, wall-clock ms (p50, p90)."""
    rng = np.random.default_rng(0)
    size = pipe.config.model.pixel_size
    yy, xx = np.mgrid[:size, :size]
    image = np.ones((size, size, 3)) * np.array([205, 160, 140])
    image[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2] = (110, 70, 50)
    image = Image.fromarray(np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8))
    for _ in range(3):  # warm-up: CAM objects built, allocator warm
        pipe.diagnose(image, saliency=True, cam_method=method)
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        pipe.diagnose(image, saliency=True, cam_method=method)
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    # CPU time (all threads) tells what the call costs when the machine is shared: on an
    # idle machine the wall-clock time is at most about this much.
    return {"p50_ms": float(np.percentile(times, 50)), "p90_ms": float(np.percentile(times, 90)),
            "cpu_p50_ms": float(np.percentile(cpu, 50)),
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg")
            else None,
            "threads": torch.get_num_threads(), "repeats": repeats, "method": method}
