"""How cost grows, in one run: sampling time vs number of images and vs steps, and
training step time vs batch size (the joint step).

    python benchmarks/scaling.py --weights weights/embedded
    python benchmarks/scaling.py --quick        # tiny random model (CI)

Prints three small tables, then ONE JSON line with the figures."""

from __future__ import annotations

import time

import numpy as np
import torch
from _bench import emit, environment, load_pipe, parser, print_table, setup, timed


def train_step_seconds(pipe, batch_size: int, repeats: int) -> float:  # noqa: ANN001
    """Median seconds of one joint training step (forward, backward, AdamW) on a copy of
    the model, with the config's mixed precision."""
    import copy

    from classndiff.models.diffusion import NoiseSchedule
    from classndiff.training.losses import Batch, joint_loss

    config = pipe.config
    model = copy.deepcopy(pipe.model).float().train()
    schedule = NoiseSchedule(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    m, g = config.model, torch.Generator().manual_seed(0)
    batch = Batch(torch.rand(batch_size, 3, m.image_size, m.image_size, generator=g) * 2 - 1,
                  torch.rand(batch_size, 3, m.pixel_size, m.pixel_size, generator=g) * 2 - 1,
                  torch.randint(0, 7, (batch_size,), generator=g),
                  torch.randint(0, 3, (batch_size,), generator=g),
                  torch.randint(0, 2, (batch_size,), generator=g))
    bf16 = config.train.mixed_precision == "bf16"
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = joint_loss(model, batch, schedule, config.train)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        if i:  # the first step is a warm-up
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="default 3; 1 with --quick")
    args = p.parse_args()
    setup(args)
    pipe = load_pipe(args)
    repeats = args.repeats or (1 if args.quick else 3)
    s = pipe.config.sampling
    counts = [c for c in (1, 2, 4, 8, 16) if c <= s.max_images]
    step_counts = [5, 10, 20, 40]
    batches = [8, 16, 32] if args.quick else [8, 16, 32, 64]
    pipe.generate(dx="mel", num_images=1, steps=2, seed=0)  # warm-up

    def gen_seconds(n: int, steps: int) -> float:
        return float(np.median([timed(lambda: pipe.generate(dx="mel", num_images=n, steps=steps,
                                                            seed=0)) for _ in range(repeats)]))

    by_count = {n: gen_seconds(n, s.steps) for n in counts}
    by_steps = {k: gen_seconds(4, k) for k in step_counts}
    by_batch = {b: train_step_seconds(pipe, b, repeats) for b in batches}
    print(f"sampling vs number of images ({s.sampler}, {s.steps} steps, "
          f"guidance {s.guidance_scale}):")
    print_table(["images", "seconds", "s/image", "x vs 1 image"],
                [[n, round(v, 3), round(v / n, 3), round(v / by_count[1], 2)]
                 for n, v in by_count.items()])
    print(f"sampling vs steps ({s.sampler}, 4 images):")
    print_table(["steps", "seconds", "s/step", "x vs 5 steps"],
                [[k, round(v, 3), round(v / k, 4), round(v / by_steps[5], 2)]
                 for k, v in by_steps.items()])
    print("joint training step vs batch size:")
    print_table(["batch", "s/step", "images/s", "x vs batch 8"],
                [[b, round(v, 3), round(b / v, 1), round(v / by_batch[8], 2)]
                 for b, v in by_batch.items()])
    emit({"benchmark": "scaling", "sampler": s.sampler, "default_steps": s.steps,
          "sampling_seconds_by_images": {str(k): round(v, 4) for k, v in by_count.items()},
          "sampling_seconds_by_steps_4_images": {str(k): round(v, 4) for k, v in by_steps.items()},
          "train_step_seconds_by_batch": {str(k): round(v, 4) for k, v in by_batch.items()},
          "train_images_per_s_by_batch": {str(k): round(k / v, 2) for k, v in by_batch.items()},
          "repeats": repeats, **environment(args, pipe)})


if __name__ == "__main__":
    main()
