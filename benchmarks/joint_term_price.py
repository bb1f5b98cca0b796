"""What the embedding-only x̂0 term (session 38's: features target, x̂0 low-passed to 32 px,
gradient stopped at the diagnosis embedding) costs a call, by the number of samples it reads,
beside a λ = 0 step's denoiser pass; and how large its gradient on the diagnosis embedding
table is against the denoising loss's (rms per table row, over validation batches). Session
41's reasons for `train.joint_every`. Also the λ = 0 step's whole gradient norm before
`train.grad_clip` (session 42: the clip shrinks the step's gradients by 1/norm, and with
them Adam's second moment, so a push kept out of the gradient is clipped the same way).

    python benchmarks/joint_term_price.py --weights START [--batches 10]

Ends with ONE JSON line."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch
from _bench import emit, environment, load_pipe, parser, setup, timed


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=10, help="validation batches of 64")
    p.add_argument("--lambda-cls", type=float, default=0.14)
    args = p.parse_args()
    setup(args)
    from classndiff.data import LesionDataset
    from classndiff.models.diffusion import NoiseSchedule
    from classndiff.training.losses import DX_TABLE, Batch, draw_step_noise, joint_loss
    from classndiff.training.trainer import encode_in_batches

    pipe = load_pipe(args)
    model, config = pipe.model.train(), pipe.config
    for q in model.classifier.parameters():
        q.requires_grad_(False)
    schedule = NoiseSchedule(config.model)
    train = config.override({
        "train.learning_rate": 1e-4, "train.classifier_learning_rate": 0.0,
        "train.joint_updates_classifier": False, "train.lambda_saliency": 0.0,
        "train.classifier_retint": 0.0, "train.lambda_adv": 0.0, "train.tone_consistency": 0.0,
        "train.cls_x0_target": "features", "train.cls_x0_size": 32,
        "train.cls_x0_reaches": "dx_embedding", "train.cls_min_weight": 0.0}).train
    batch_size, repeats = (8, 2) if args.quick else (64, 10)
    batches = 2 if args.quick else args.batches
    shape = (config.model.in_channels, config.model.image_size, config.model.image_size)
    if args.quick:
        x0_all = torch.randn(batch_size * batches, *shape)
        labels = [torch.randint(0, n, (len(x0_all),)) for n in (7, 3, 2)]
    else:
        data = LesionDataset(None, "val", image_size=config.model.pixel_size)
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))
        pick = pick[:batch_size * batches]
        images = data.images[pick]
        with torch.no_grad():
            x0_all = (encode_in_batches(model, images) if model.vae is not None
                      else images.float() / 127.5 - 1)
        labels = [data.dx[pick], data.tone[pick], data.sex[pick]]

    def batch(start: int, n: int, t: torch.Tensor | None = None) -> Batch:
        sl = slice(start, start + n)
        x0 = x0_all[sl]
        # The trainer's draws, no condition dropped (drop probability 0).
        drawn_t, noise, drop = draw_step_noise(len(x0), shape, schedule.num_timesteps, 0.0,
                                               torch.Generator().manual_seed(start))
        return Batch(x0, x0, *(x[sl] for x in labels), t=drawn_t if t is None else t,
                     noise=noise, drop=drop)

    def step(b: Batch, lam: float, fraction: float) -> dict[str, torch.Tensor]:
        settings = dataclasses.replace(train, lambda_cls=lam, joint_batch_fraction=fraction)
        # As training runs: bf16 autocast on the CPU (the tiny --quick model: float32).
        with (contextlib.nullcontext() if args.quick
              else torch.autocast("cpu", torch.bfloat16)):
            out = joint_loss(model, b, schedule, settings)
        model.zero_grad(set_to_none=True)
        out["loss"].backward()
        return out

    def seconds(fn) -> float:  # noqa: ANN001
        fn()  # warm-up
        return float(np.mean([timed(fn) for _ in range(repeats)]))

    # Every term sample kept (t = 100: w = ᾱ_t well above the floor); the term's price is
    # the joint step's minus the λ = 0 step's on the same batch.
    timing = {}
    low_t = torch.full((batch_size,), 100)
    plain_s = seconds(lambda: step(batch(0, batch_size, low_t), 0.0, 1.0))
    for samples in (1, 2, 4):
        joint_s = seconds(lambda s=samples: step(batch(0, batch_size, low_t), args.lambda_cls,
                                                 s / batch_size))
        timing[samples] = round((joint_s - plain_s) * 1000, 1)
    print(f"λ = 0 step's denoiser pass, batch {batch_size}: {plain_s * 1000:.0f} ms")
    for samples, ms in timing.items():
        print(f"the term on {samples} sample(s): +{ms:.0f} ms a call")

    table = model.denoiser.get_parameter(DX_TABLE)
    mse_sq = term_sq = 0
    norms = []  # the λ = 0 step's whole gradient norm, before train.grad_clip
    for i in range(batches):
        start = i * batch_size
        step(batch(start, batch_size), 0.0, 4 / batch_size)
        g_mse = table.grad.clone()
        norms.append(float(torch.nn.utils.get_total_norm(
            [q.grad for q in model.denoiser.parameters() if q.grad is not None])))
        step(batch(start, batch_size), args.lambda_cls, 4 / batch_size)
        g_term = table.grad - g_mse
        mse_sq, term_sq = mse_sq + g_mse.pow(2).sum(1), term_sq + g_term.pow(2).sum(1)
    reached = term_sq > 0
    ratio = (term_sq[reached] / mse_sq[reached]).sqrt().numpy()
    print(f"term ÷ denoising gradient on the table rows it reached (rms, λ {args.lambda_cls}, "
          f"4 samples): {np.round(ratio, 3).tolist()}")
    print(f"the denoiser's gradient norm on a λ = 0 step (before the clip at "
          f"{train.grad_clip}): {np.round(norms, 2).tolist()}")
    emit({"benchmark": "joint_term_price", "plain_pass_ms": round(plain_s * 1000, 1),
          "denoiser_gradient_norm": [round(x, 3) for x in norms],
          "term_ms_by_samples": timing, "table_rows_reached": int(reached.sum()),
          "table_gradient_ratio": [round(float(r), 4) for r in ratio],
          **environment(args, pipe)})


if __name__ == "__main__":
    main()
