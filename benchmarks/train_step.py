"""The fast joint training step against the upstream-style one, in one run.

    python benchmarks/train_step.py --weights weights/embedded   # its config, batch 32
    python benchmarks/train_step.py                               # configs/embedded.json
    python benchmarks/train_step.py --quick                       # tiny model (CI)

joint: one denoiser pass; x̂0 from that ε̂ feeds the classifier
(classndiff.training.losses.joint_loss).
upstream: the published code's step — on a random quarter of steps a SECOND denoiser pass
makes the classifier's input (upstream_style_loss). Both include the classifier on real
images, backward and AdamW, with the config's mixed precision. Steps alternate in blocks
(A B A B ...) so that machine noise hits both alike; the upstream step's branch draws use a
fixed generator, so both see the same number of branch steps run to run.
Bar: joint ≥ 1.3× the upstream steps per second. Ends with ONE JSON line."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch
from _bench import ROOT, TINY_MODEL, emit, environment, parser, print_table, setup


def build(args):  # noqa: ANN001, ANN201
    from classndiff.config import ClassNDiffConfig

    if args.quick and not args.weights:
        return ClassNDiffConfig.from_dict({"model": TINY_MODEL,
                                           "train": {"mixed_precision": "no"}})
    if args.weights:
        from classndiff.hub import resolve

        return ClassNDiffConfig.from_json(resolve(args.weights, fallback=False).path /
                                          "config.json")
    return ClassNDiffConfig.from_json(ROOT / "configs/embedded.json")


def make_batch(config, batch_size: int, generator: torch.Generator):  # noqa: ANN001, ANN201
    from classndiff.training.losses import Batch

    m = config.model
    return Batch(torch.rand(batch_size, m.in_channels, m.image_size, m.image_size,
                            generator=generator) * 2 - 1,
                 torch.rand(batch_size, 3, m.pixel_size, m.pixel_size, generator=generator) * 2
                 - 1, torch.randint(0, 7, (batch_size,), generator=generator),
                 torch.randint(0, 3, (batch_size,), generator=generator),
                 torch.randint(0, 2, (batch_size,), generator=generator))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per kind (default 24; 8 with --quick)")
    p.add_argument("--block", type=int, default=4, help="steps per alternating block")
    args = p.parse_args()
    setup(args)
    from classndiff.config import ClassNDiffConfig
    from classndiff.models.diffusion import NoiseSchedule
    from classndiff.models.joint import ClassNDiff
    from classndiff.training.losses import joint_loss, upstream_style_loss

    config = build(args)
    # The two steps differ in how x̂0 reaches the classifier, so both are timed with the joint
    # term on: a weights folder whose last stage trained the classifier alone (λ = 0) is timed
    # at the recipe's λ, and without the skin-tone consistency term, whose re-tinted real
    # images a random batch lacks (it costs both steps the same).
    recipe = ClassNDiffConfig.from_json(ROOT / "configs/embedded.json").train
    config.train = replace(config.train, lambda_cls=config.train.lambda_cls or recipe.lambda_cls,
                           tone_consistency=0.0)
    t = config.train
    steps = args.steps or (8 if args.quick else 24)
    batch_size = 8 if args.quick and not args.weights else args.batch_size
    model = ClassNDiff(config.model, cond_drop_prob=t.cond_drop_prob).train()
    schedule = NoiseSchedule(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    bf16 = t.mixed_precision == "bf16"
    batch = make_batch(config, batch_size, torch.Generator().manual_seed(0))
    losses = {"joint": joint_loss, "upstream": upstream_style_loss}
    generators = {k: torch.Generator().manual_seed(args.seed) for k in losses}
    times: dict[str, list[float]] = {k: [] for k in losses}
    branch_steps = 0

    def step(kind: str) -> float:
        nonlocal branch_steps
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = losses[kind](model, batch, schedule, t, generator=generators[kind])
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        if kind == "upstream":
            branch_steps += int(out["took_branch"])
        return time.perf_counter() - start

    for kind in losses:  # warm-up: allocator, autocast caches, first-call overheads
        for _ in range(2):
            step(kind)
    branch_steps = 0
    done = 0
    while done < steps:
        n = min(args.block, steps - done)
        for kind in losses:
            times[kind] += [step(kind) for _ in range(n)]
        done += n
    rate = {k: len(v) / sum(v) for k, v in times.items()}
    ratio = rate["joint"] / rate["upstream"]
    print_table(["step", "steps/s", "images/s", "median s/step", "steps"],
                [[k, round(rate[k], 3), round(rate[k] * batch_size, 1),
                  round(float(np.median(times[k])), 4), len(times[k])] for k in losses])
    print(f"joint / upstream = {ratio:.2f}x (bar >= 1.3x); upstream took its extra denoiser "
          f"pass on {branch_steps} of {steps} steps (expected 25 %)")
    emit({"benchmark": "train_step", "batch_size": batch_size, "timed_steps": steps,
          "bf16": bf16, "joint_batch_fraction": t.joint_batch_fraction,
          "lambda_cls": t.lambda_cls,
          "joint_steps_per_s": round(rate["joint"], 4),
          "upstream_steps_per_s": round(rate["upstream"], 4),
          "upstream_branch_steps": branch_steps, "ratio": round(ratio, 3),
          "bar_1_3x": bool(ratio >= 1.3),
          "model": {k: getattr(config.model, k) for k in
                    ("image_size", "patch_size", "hidden_size", "depth",
                     "classifier_backbone", "classifier_image_size")},
          **environment(args)})


if __name__ == "__main__":
    main()
