"""Which embedded model fits this CPU? Times one joint Class-N-Diff training step (denoiser
+ classifier on real images + classifier on x̂0) for candidate sizes, in one run.

    python benchmarks/candidates.py            # the candidates behind configs/embedded.json
    python benchmarks/candidates.py --quick    # tiny sizes, seconds (CI)

Prints a table, then one JSON line with images/s per candidate and the ratios to the
chosen config. Measured as ratios in one run: this machine is noisy."""

from __future__ import annotations

import argparse
import json
import time

import torch

from classndiff.config import ClassNDiffConfig, ModelConfig, TrainConfig
from classndiff.models.diffusion import NoiseSchedule
from classndiff.models.joint import ClassNDiff
from classndiff.training.losses import Batch, joint_loss

CANDIDATES = {
    # name: (model overrides, joint batch fraction)
    "DiT-256x8 p8 @64 + resnet10t@128 (chosen)": (
        dict(image_size=64, patch_size=8, hidden_size=256, depth=8, num_heads=4,
             classifier_backbone="resnet10t"), 0.5),
    "DiT-256x8 p8 @64 + resnet18@128": (
        dict(image_size=64, patch_size=8, hidden_size=256, depth=8, num_heads=4), 0.5),
    "DiT-256x8 p4 @64 + resnet18@128": (
        dict(image_size=64, patch_size=4, hidden_size=256, depth=8, num_heads=4), 0.5),
    "DiT-384x12 p8 @64 + resnet18@128": (
        dict(image_size=64, patch_size=8, hidden_size=384, depth=12, num_heads=6), 0.5),
    "DiT-256x8 p8 @64 + efficientnet_b0@128": (
        dict(image_size=64, patch_size=8, hidden_size=256, depth=8, num_heads=4,
             classifier_backbone="efficientnet_b0"), 0.5),
    "DiT-256x8 p8 @64 + resnet18@128, x̂0 on the full batch": (
        dict(image_size=64, patch_size=8, hidden_size=256, depth=8, num_heads=4), 1.0),
}
QUICK = {
    "tiny p4 @16 + test_resnet@32 (chosen)": (
        dict(image_size=16, patch_size=4, hidden_size=32, depth=2, num_heads=2,
             classifier_backbone="test_resnet", classifier_image_size=32, pixel_size=32), 0.5),
    "tiny p2 @16 + test_resnet@32": (
        dict(image_size=16, patch_size=2, hidden_size=32, depth=2, num_heads=2,
             classifier_backbone="test_resnet", classifier_image_size=32, pixel_size=32), 0.5),
}


def time_step(overrides: dict, fraction: float, batch_size: int, steps: int,
              bf16: bool) -> float:
    """Training images per second of the joint step (after 2 warm-up steps)."""
    model_config = ModelConfig(**overrides)
    train = TrainConfig(joint_batch_fraction=fraction)
    config = ClassNDiffConfig(model=model_config, train=train)
    torch.manual_seed(0)
    model = ClassNDiff(config.model).train()
    schedule = NoiseSchedule(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    m = config.model
    batch = Batch(torch.rand(batch_size, 3, m.image_size, m.image_size) * 2 - 1,
                  torch.rand(batch_size, 3, m.pixel_size, m.pixel_size) * 2 - 1,
                  torch.randint(0, 7, (batch_size,)), torch.randint(0, 3, (batch_size,)),
                  torch.randint(0, 2, (batch_size,)))
    timings = []
    for i in range(steps + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = joint_loss(model, batch, schedule, train)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        if i >= 2:
            timings.append(time.perf_counter() - start)
    timings.sort()
    return batch_size / timings[len(timings) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-bf16", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    candidates = QUICK if args.quick else CANDIDATES
    steps = 2 if args.quick else args.steps
    batch = 8 if args.quick else args.batch_size
    results = {}
    for name, (overrides, fraction) in candidates.items():
        params = ClassNDiff(ModelConfig(**overrides))
        n_den = sum(p.numel() for p in params.denoiser.parameters()) / 1e6
        n_cls = sum(p.numel() for p in params.classifier.parameters()) / 1e6
        rate = time_step(overrides, fraction, batch, steps, bf16=not args.no_bf16)
        epoch_minutes = 7011 / rate / 60
        results[name] = {"images_per_second": round(rate, 2), "denoiser_M": round(n_den, 1),
                         "classifier_M": round(n_cls, 1),
                         "minutes_per_epoch": round(epoch_minutes, 1)}
        print(f"{name:58s} {rate:7.1f} img/s  denoiser {n_den:5.1f} M  classifier "
              f"{n_cls:5.1f} M  {epoch_minutes:6.1f} min/epoch", flush=True)
    chosen = next(v for k, v in results.items() if "(chosen)" in k)["images_per_second"]
    for value in results.values():
        value["relative_to_chosen"] = round(value["images_per_second"] / chosen, 3)
    print(json.dumps({"benchmark": "candidates", "threads": args.threads, "batch_size": batch,
                      "bf16": not args.no_bf16, "results": results}))


if __name__ == "__main__":
    main()
