"""What a user waits for, through the pipeline (no web server; see app_startup.py for that):
diagnose p50/p95 with and without a Grad-CAM, and generate latency for 1, 4 and 8 images at
the model's default sampler and steps.

    python benchmarks/latency.py --weights weights/embedded    # the bars: 2 threads
    python benchmarks/latency.py --quick                       # tiny random model (CI)

Bars (embedded model, 2 CPU threads; DESIGN.md): diagnose + one Grad-CAM ≤ 60 ms p50; generate 4
images ≤ 10 s. The upload is a synthetic lesion drawn here. Ends with ONE JSON line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _bench import emit, environment, load_pipe, parser, percentiles, print_table, setup, timed
from _bench import synthetic_lesion as lesion


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None,
                   help="diagnose calls per setting (default 50; 10 with --quick)")
    p.add_argument("--generate-repeats", type=int, default=None,
                   help="generate calls per count (default 3; 1 with --quick)")
    p.add_argument("--method", default="gradcam")
    p.add_argument("--output", type=Path, help="also write the JSON here")
    args = p.parse_args()
    setup(args)
    pipe = load_pipe(args)
    repeats = args.repeats or (10 if args.quick else 50)
    gen_repeats = args.generate_repeats or (1 if args.quick else 3)
    image = lesion(pipe.config.model.pixel_size, args.seed)

    settings = {"plain": {"saliency": False}, "saliency": {"saliency": True,
                                                          "cam_method": args.method}}
    for kwargs in settings.values():  # warm-up: CAM objects, allocator, lazy imports
        for _ in range(3):
            pipe.diagnose(image, **kwargs)
    # Interleave the two settings so machine noise hits both alike.
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(repeats):
        for name, kwargs in settings.items():
            times[name].append(timed(lambda kwargs=kwargs: pipe.diagnose(image, **kwargs)))
    diagnose = {name: percentiles(t) for name, t in times.items()}

    generate = {}
    s = pipe.config.sampling
    pipe.generate(dx="mel", num_images=1, seed=0)  # warm-up
    for count in (1, 4, 8):
        if count > s.max_images:
            continue
        runs = [timed(lambda count=count, i=i: pipe.generate(dx="mel", num_images=count,
                                                            seed=100 * i))
                for i in range(gen_repeats)]
        generate[str(count)] = {"median_s": round(float(np.median(runs)), 3),
                                "per_image_s": round(float(np.median(runs)) / count, 3),
                                "repeats": gen_repeats}
    print_table(["diagnose", "p50 ms", "p95 ms", "calls"],
                [[k, v["p50_ms"], v["p95_ms"], v["n"]] for k, v in diagnose.items()])
    print_table(["generate", "median s", "s/image"],
                [[k, v["median_s"], v["per_image_s"]] for k, v in generate.items()])
    cam_p50 = diagnose["saliency"]["p50_ms"]
    emit({"benchmark": "latency", "diagnose": diagnose,
          "saliency_overhead_ms": round(cam_p50 - diagnose["plain"]["p50_ms"], 1),
          "generate": generate, "sampler": s.sampler, "steps": s.steps,
          "guidance_scale": s.guidance_scale, "cam_method": args.method,
          "bar_diagnose_cam_p50_60ms": bool(cam_p50 <= 60),
          "bar_generate4_10s": bool(generate.get("4", {}).get("median_s", 1e9) <= 10),
          **environment(args, pipe)}, args.output)


if __name__ == "__main__":
    main()
