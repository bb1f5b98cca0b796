"""Generation quality in the independent evaluator's feature space.

    feats_real, _ = evaluator.embed(real_uint8)
    feats_gen, probs_gen = evaluator.embed(generated_uint8)
    frechet_distance(feats_real, feats_gen)        # FD (FID-style, but not Inception)
    kernel_distance(feats_real, feats_gen)         # KID: unbiased MMD², cubic kernel
    class_fidelity(probs_gen, requested_dx)        # evaluator argmax == requested dx
    classification_accuracy_score(gen, gen_dx, test, test_dx, steps=300)

The evaluator was trained on real images only, so the model under test never grades itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classndiff.labels import DX_CODES, TONE_GROUPS
from classndiff.plots import pyplot, save_figure


# ------------------------------------------------------------------ distances
def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: np.ndarray, b: np.ndarray, weights_a: np.ndarray | None = None
                     ) -> float:
    """‖μa − μb‖² + tr Σa + tr Σb − 2 tr (Σa^½ Σb Σa^½)^½.

    The trace term is taken from the eigenvalues of the symmetric Σa^½ Σb Σa^½, which is
    stable when the covariances are singular (fewer images than feature dimensions, the
    usual case per class here), unlike a general sqrtm of Σa Σb. `weights_a` (≥ 0, one per
    row of `a`) weighs a's mean and covariance (numpy's reliability weights): a reference
    re-weighted to another mix of its members (yardstick.class_mix_weights)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    mu = np.average(a, axis=0, weights=weights_a) - b.mean(0)
    cov_a = np.cov(a, rowvar=False, aweights=weights_a)
    cov_b = np.cov(b, rowvar=False)
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(max(0.0, mu @ mu + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt))


def kernel_distance(a: np.ndarray, b: np.ndarray, subsets: int = 20, subset_size: int = 200,
                    seed: int = 0) -> dict[str, float]:
    """KID: unbiased MMD² with the kernel (x·y/d + 1)³, mean and std over random subsets
    (each subset as large as the smaller set allows, up to `subset_size`)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m = min(len(a), len(b), subset_size)
    if m < 2:
        return {"mean": float("nan"), "std": float("nan"), "subset_size": m}
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        off = 1 - np.eye(m)
        values.append((kxx * off).sum() / (m * (m - 1)) + (kyy * off).sum() / (m * (m - 1))
                      - 2 * kxy.mean())
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "subset_size": m}


def class_fidelity(probs: np.ndarray, requested: np.ndarray) -> dict[str, Any]:
    """Share of generated images the evaluator assigns to the requested class, per class
    and macro over the classes asked for (each class counts once, whatever its count)."""
    probs = np.asarray(probs)
    requested = np.asarray(requested)
    hits = probs.argmax(1) == requested
    per_class = {DX_CODES[c]: float(hits[requested == c].mean())
                 for c in range(len(DX_CODES)) if (requested == c).any()}
    return {"macro": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
            "per_class": per_class, "n": int(len(requested))}


# ------------------------------------------------------------------ generating a set
def pil_to_uint8(images: Sequence[Any]) -> torch.Tensor:
    """PIL RGB images → uint8 (N, 3, H, W)."""
    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])
                            ).permute(0, 3, 1, 2).contiguous()


def generate_cells(
    pipe: Any,
    cells: Sequence[tuple[str, str | None]],
    per_cell: int,
    seed: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    guidance_scale: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """`per_cell` images for each (dx, tone) cell (tone None = any), in batches the
    pipeline allows. Cell k uses seeds seed + 10_000·k + i, so two models given the same
    arguments draw from the same noise (a paired comparison)."""
    batch = max(1, int(pipe.config.sampling.max_images))
    images, dx, tone = [], [], []
    for k, (code, group) in enumerate(cells):
        done = 0
        while done < per_cell:
            n = min(batch, per_cell - done)
            out = pipe.generate(dx=code, skin_tone=group, num_images=n, steps=steps,
                                sampler=sampler, guidance_scale=guidance_scale,
                                seed=seed + 10_000 * k + done)
            images.append(pil_to_uint8(out.images))
            done += n
        dx += [DX_CODES.index(code)] * per_cell
        tone += [TONE_GROUPS.index(group) if group else len(TONE_GROUPS)] * per_cell
        if progress is not None:
            progress(k + 1, len(cells))
    return {"images": torch.cat(images), "dx": np.array(dx), "tone": np.array(tone)}


# ------------------------------------------------------------------ CAS
def classification_accuracy_score(
    train_images: torch.Tensor,
    train_dx: np.ndarray | torch.Tensor,
    test_images: torch.Tensor,
    test_dx: np.ndarray | torch.Tensor,
    steps: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a small classifier (the evaluator's recipe, a fixed step budget) on the given
    images only — generated ones, for CAS — and score it on real test images."""
    from classndiff.metrics import classification_metrics
    from classndiff.training.evaluator import EvaluatorConfig, predict, train_classifier

    config = EvaluatorConfig(steps=steps, warmup_steps=max(1, min(100, steps // 5)), seed=seed,
                             batch_size=min(64, len(train_images)))
    result = train_classifier(train_images, torch.as_tensor(np.asarray(train_dx)), config)
    probs = predict(result.model, test_images)
    metrics = classification_metrics(probs, np.asarray(test_dx))
    metrics.update(train_images=int(len(train_images)), steps=steps,
                   seconds=round(result.seconds, 1))
    return metrics


# ------------------------------------------------------------------ all of it
def generation_quality(
    real_feats: np.ndarray,
    real_dx: np.ndarray,
    real_tone: np.ndarray,
    gen_feats: np.ndarray,
    gen_probs: np.ndarray,
    gen_dx: np.ndarray,
    gen_tone: np.ndarray,
    min_real: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """FD and KID per class (generated with any/lighter tone vs real test of that class),
    per tone (generated in that tone cell vs real test of that tone), their macro means, and
    class fidelity overall and per tone cell. A comparison with fewer than `min_real` real
    images is left out (None) rather than reported as a number."""
    real_dx, real_tone = np.asarray(real_dx), np.asarray(real_tone)
    gen_dx, gen_tone = np.asarray(gen_dx), np.asarray(gen_tone)
    lighter, null_tone = TONE_GROUPS.index("lighter"), len(TONE_GROUPS)

    def compare(real_mask: np.ndarray, gen_mask: np.ndarray) -> dict[str, Any]:
        n_real, n_gen = int(real_mask.sum()), int(gen_mask.sum())
        row: dict[str, Any] = {"n_real": n_real, "n_generated": n_gen}
        if n_real < min_real or n_gen < 2:
            row.update(fd=None, kid=None, note=f"fewer than {min_real} real images")
            return row
        row["fd"] = frechet_distance(real_feats[real_mask], gen_feats[gen_mask])
        row["kid"] = kernel_distance(real_feats[real_mask], gen_feats[gen_mask], seed=seed)["mean"]
        return row

    # Real test images are ~94 % lighter skin: per-class FD uses the generated images whose
    # tone was left blank or set to lighter, so tone does not masquerade as class error.
    class_gen = (gen_tone == lighter) | (gen_tone == null_tone)
    per_class = {DX_CODES[c]: compare(real_dx == c, class_gen & (gen_dx == c))
                 for c in range(len(DX_CODES)) if (gen_dx == c).any()}
    per_tone = {TONE_GROUPS[g]: compare(real_tone == g, gen_tone == g)
                for g in range(len(TONE_GROUPS)) if (gen_tone == g).any()}
    fds = [r["fd"] for r in per_class.values() if r["fd"] is not None]
    kids = [r["kid"] for r in per_class.values() if r["kid"] is not None]
    fidelity = class_fidelity(gen_probs, gen_dx)
    fidelity_by_tone = {
        (TONE_GROUPS[g] if g < len(TONE_GROUPS) else "any"):
            class_fidelity(gen_probs[gen_tone == g], gen_dx[gen_tone == g])
        for g in range(len(TONE_GROUPS) + 1) if (gen_tone == g).any()}
    return {
        "fd_macro_over_classes": float(np.mean(fds)) if fds else None,
        "kid_macro_over_classes": float(np.mean(kids)) if kids else None,
        "fd_pooled": frechet_distance(real_feats, gen_feats),
        "per_class": per_class,
        "per_tone": per_tone,
        "fidelity": fidelity,
        "fidelity_by_tone": fidelity_by_tone,
        "n_generated": int(len(gen_dx)),
    }


def sample_grid(images: torch.Tensor, dx: np.ndarray, tone: np.ndarray, path: str | Path,
                per_cell: int = 4) -> Path:
    """A PNG grid: one row per class, one block of `per_cell` images per tone cell."""
    plt = pyplot()

    dx, tone = np.asarray(dx), np.asarray(tone)
    tones = [g for g in range(len(TONE_GROUPS) + 1) if (tone == g).any()]
    classes = [c for c in range(len(DX_CODES)) if (dx == c).any()]
    side = images.shape[-1]
    canvas = np.full((len(classes) * (side + 2), len(tones) * per_cell * (side + 2) +
                      (len(tones) - 1) * 8, 3), 255, np.uint8)
    for row, c in enumerate(classes):
        for block, g in enumerate(tones):
            chosen = np.flatnonzero((dx == c) & (tone == g))[:per_cell]
            for i, index in enumerate(chosen):
                y = row * (side + 2)
                x = block * (per_cell * (side + 2) + 8) + i * (side + 2)
                canvas[y:y + side, x:x + side] = images[index].permute(1, 2, 0).numpy()
    width = canvas.shape[1] / 64
    fig, ax = plt.subplots(figsize=(max(4.0, width), canvas.shape[0] / 64 + 0.6), dpi=64)
    ax.imshow(canvas)
    ax.set_yticks([(r + 0.5) * (side + 2) for r in range(len(classes))],
                  [DX_CODES[c] for c in classes])
    block_w = per_cell * (side + 2) + 8
    ax.set_xticks([(b + 0.5) * block_w for b in range(len(tones))],
                  [TONE_GROUPS[g] if g < len(TONE_GROUPS) else "any tone" for g in tones])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("SYNTHETIC samples (rows: requested dx; columns: requested tone)", fontsize=9)
    return save_figure(fig, path, dpi=64)


__all__ = [
    "class_fidelity", "classification_accuracy_score", "frechet_distance",
    "generate_cells", "generation_quality", "kernel_distance", "pil_to_uint8", "sample_grid",
]
