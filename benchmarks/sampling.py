"""The default sampler against the upstream one, same model, same seeds, one run:
DPM-Solver++ 20 steps vs ancestral DDPM 250 steps (the published code's sampler).

    python benchmarks/sampling.py --weights weights/embedded --evaluator weights/evaluator
    python benchmarks/sampling.py --quick      # tiny random model, random evaluator (CI)

Conditions (dx, tone, sex) are copied from randomly drawn real test images, so the
generated set has the test set's class mix; Fréchet distance of each sampler's images to
the real test images, in the independent evaluator's feature space.
Bars: ≥ 10× faster, FD within 10 % of DDPM-250's (FD_dpm ≤ 1.1 × FD_ddpm).
Prints a table, then ONE JSON line with the figures."""

from __future__ import annotations

import time

import numpy as np
import torch
from _bench import ROOT, emit, environment, load_pipe, parser, print_table, setup


def reference_set(args, size: int):  # noqa: ANN001, ANN201
    """(real uint8 images, dx, tone, sex) — the test split, or random blobs for --quick."""
    from classndiff.data import LesionDataset

    if args.quick and not args.data_dir:
        g = torch.Generator().manual_seed(1)
        n = 64
        images = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)
        labels = [torch.randint(0, k, (n,), generator=g) for k in (7, 3, 2)]
        return images, *labels
    data = LesionDataset(args.data_dir, "test", image_size=size, limit=args.limit)
    return data.images, data.dx, data.tone, data.sex


def evaluator_for(args):  # noqa: ANN001, ANN201
    from classndiff.training.evaluator import Evaluator, EvaluatorConfig, load_evaluator

    path = args.evaluator or (None if args.quick else str(ROOT / "weights/evaluator"))
    if path:
        return load_evaluator(path)
    torch.manual_seed(0)  # --quick: random weights, the plumbing only
    return Evaluator(EvaluatorConfig(backbone="test_resnet", image_size=32)).eval()


def run(pipe, sampler: str, steps: int, labels, seeds: list[int], batch: int):  # noqa: ANN001, ANN201
    """All images for one sampler, in batches; returns (uint8 images, seconds)."""
    from classndiff.models.diffusion import make_scheduler, sample

    out, seconds = [], 0.0
    guidance = pipe.config.sampling.guidance_scale
    for start in range(0, len(seeds), batch):
        part = [x[start:start + batch] for x in labels]
        generators = [torch.Generator().manual_seed(s) for s in seeds[start:start + batch]]
        began = time.perf_counter()
        x = sample(pipe.model, make_scheduler(sampler, pipe.config.model), *part, steps=steps,
                   guidance_scale=guidance, generators=generators)
        pixels = pipe._to_pixels(x)
        seconds += time.perf_counter() - began
        out.append(((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    return torch.cat(out), seconds


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--evaluator", help="evaluator folder (default weights/evaluator)")
    p.add_argument("--data-dir", help="HAM10000-layout folder (default: the shared copy)")
    p.add_argument("--limit", type=int, help="first N test images as the reference")
    p.add_argument("-n", "--num-images", type=int, default=None,
                   help="images per sampler (default 64; 8 with --quick)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--fast-steps", type=int, default=20)
    p.add_argument("--slow-steps", type=int, default=250)
    args = p.parse_args()
    setup(args)
    from classndiff.evaluation.generation import frechet_distance

    pipe = load_pipe(args)
    evaluator = evaluator_for(args)
    images, dx, tone, sex = reference_set(args, pipe.config.model.pixel_size)
    n = args.num_images or (8 if args.quick else 64)
    rng = np.random.default_rng(args.seed)
    pick = torch.as_tensor(rng.choice(len(dx), n, replace=len(dx) < n))
    labels = [dx[pick].long(), tone[pick].long(), sex[pick].long()]
    seeds = [args.seed + i for i in range(n)]
    real_feats, _ = evaluator.embed(images)

    # Warm-up (scheduler construction, allocator) outside the timed region, both samplers.
    for sampler in ("dpm++", "ddpm"):
        run(pipe, sampler, 2, [x[:1] for x in labels], seeds[:1], 1)
    # Batches alternate between the samplers, so load from other processes on this machine
    # falls on both alike; the ratio is of the summed times.
    plan = {"dpm++": ("dpm++", args.fast_steps), "ddpm": ("ddpm", args.slow_steps)}
    parts: dict[str, list] = {k: [] for k in plan}
    seconds = dict.fromkeys(plan, 0.0)
    for start in range(0, n, args.batch):
        chunk = [x[start:start + args.batch] for x in labels]
        for name, (sampler, steps) in plan.items():
            images_part, took = run(pipe, sampler, steps, chunk, seeds[start:start + args.batch],
                                    args.batch)
            parts[name].append(images_part)
            seconds[name] += took
    results = {}
    for name, (_, steps) in plan.items():
        feats, probs = evaluator.embed(torch.cat(parts[name]))
        results[name] = {"steps": steps, "seconds": round(seconds[name], 2),
                         "seconds_per_image": round(seconds[name] / n, 4),
                         "fd": round(frechet_distance(real_feats, feats), 4),
                         "fidelity": round(float((probs.argmax(1) == labels[0].numpy()).mean()),
                                           4)}
    speedup = results["ddpm"]["seconds"] / results["dpm++"]["seconds"]
    fd_ratio = results["dpm++"]["fd"] / max(results["ddpm"]["fd"], 1e-12)
    print_table(["sampler", "steps", "seconds", "s/image", "FD vs real test", "fidelity"],
                [[k, v["steps"], v["seconds"], v["seconds_per_image"], v["fd"], v["fidelity"]]
                 for k, v in results.items()])
    print(f"speed-up {speedup:.1f}x (bar >= 10x); FD dpm++/ddpm = {fd_ratio:.3f} "
          f"(bar <= 1.10); {n} images, {len(images)} real reference images")
    emit({"benchmark": "sampling", "images": n, "reference_images": int(len(images)),
          "guidance_scale": pipe.config.sampling.guidance_scale, **results,
          "speedup": round(speedup, 2), "fd_ratio": round(fd_ratio, 4),
          "bar_speedup_10x": bool(speedup >= 10), "bar_fd_within_10pct": bool(fd_ratio <= 1.10),
          "evaluator": args.evaluator or ("random (quick)" if args.quick else "weights/evaluator"),
          **environment(args, pipe)})


if __name__ == "__main__":
    main()
