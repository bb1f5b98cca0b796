"""Training speed of the generator candidates on this CPU, in one run (bf16 autocast, AdamW,
batch 32, 64 px): today's pixel DiT/8 with DiT's linear patch head, the same with U-ViT's
convolutional head and long skips (the shipped choice), a pixel DiT/4 with the conv head,
and a small diffusers UNet2DModel.

    python benchmarks/denoiser_candidates.py
    python benchmarks/denoiser_candidates.py --quick

This measures cost only; the study at equal CPU budget (each candidate trained the same
minutes and graded by benchmarks/generator_yardstick.py) is benchmarks/generator_study.sh.
Ends with ONE JSON line."""

from __future__ import annotations

import time

import torch
from _bench import emit, environment, parser, print_table, setup


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=6)
    args = p.parse_args()
    setup(args)
    from diffusers import UNet2DModel

    from classndiff.config import ModelConfig
    from classndiff.models.dit import DiT

    size = 16 if args.quick else 64
    hidden, depth, heads = (32, 2, 2) if args.quick else (256, 8, 4)
    candidates = {
        "DiT/8 linear head": dict(patch_size=8 if not args.quick else 4),
        "DiT/8 conv head + long skips (shipped)": dict(patch_size=8 if not args.quick else 4,
                                                       output_head="conv", long_skips=True,
                                                       head_width=48),
        "DiT/4 conv head + long skips": dict(patch_size=4 if not args.quick else 2,
                                             output_head="conv", long_skips=True,
                                             head_width=48),
    }
    batch = 4 if args.quick else args.batch_size
    x = torch.randn(batch, 3, size, size)
    t = torch.randint(0, 1000, (batch,))
    labels = torch.zeros(batch, dtype=torch.long)
    models = {name: (DiT(ModelConfig(image_size=size, hidden_size=hidden, depth=depth,
                                     num_heads=heads, **kw)), "dit")
              for name, kw in candidates.items()}
    channels = (8, 16, 16, 16) if args.quick else (32, 64, 128, 128)
    models["UNet2DModel (32, 64, 128, 128)"] = (
        UNet2DModel(sample_size=size, block_out_channels=channels, layers_per_block=1,
                    norm_num_groups=8), "unet")
    rows, result = [], {}
    for name, (model, kind) in models.items():
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, kind=kind, optimizer=optimizer) -> None:  # noqa: ANN001
            with torch.autocast("cpu", torch.bfloat16):
                out = model(x, t, labels, labels, labels) if kind == "dit" else model(x, t).sample
            optimizer.zero_grad(set_to_none=True)
            out.float().square().mean().backward()
            optimizer.step()

        step()  # warm-up
        start = time.perf_counter()
        for _ in range(1 if args.quick else args.steps):
            step()
        per_s = (1 if args.quick else args.steps) * batch / (time.perf_counter() - start)
        params = sum(q.numel() for q in model.parameters()) / 1e6
        result[name] = {"images_per_second": round(per_s, 1), "params_M": round(params, 2)}
        rows.append([name, round(per_s, 1), round(params, 2)])
    print_table(["candidate", "training images/s", "params (M)"], rows)
    emit({"benchmark": "denoiser_candidates", "size": size, "batch_size": batch,
          "candidates": result, **environment(args)})


if __name__ == "__main__":
    main()
