"""The generation bars on a weights folder, through the public `generate`, in a neutral
feature space (ImageNet EfficientNet-Lite0: classndiff/evaluation/yardstick.py), each
beside the floor real images reach at the same count and size.

    python benchmarks/generator_yardstick.py --weights weights/embedded        # 32 per class
    python benchmarks/generator_yardstick.py --quick                           # tiny (CI)
    python benchmarks/generator_yardstick.py --reference-split val --guidance-scale 3
        # choosing a sampling setting: against validation images, never the test split
    python benchmarks/generator_yardstick.py --reference-split val --per-class 96 --draw 1
        # another draw of the same weights (other sampling seeds, the same real floor): how far
        # the count alone moves each figure

Figures: FD and KID vs real test, precision / recall (k = 5), within-class diversity
(generated ÷ real), blockiness, class fidelity by the independent evaluator
(weights/evaluator, trained on real images only) and FD in its features, median border ITA
per requested skin tone, and seconds for 4 images. Ends with ONE JSON line."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from _bench import ROOT, emit, environment, load_pipe, parser, print_table, setup


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=32)
    p.add_argument("--per-tone", type=int, default=32)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--evaluator", default=str(ROOT / "weights/evaluator"))
    p.add_argument("--output", type=Path, help="also write the JSON here")
    p.add_argument("--reference-split", default="test", choices=("test", "val"),
                   help="the real images compared against (val: for choosing settings)")
    p.add_argument("--guidance-scale", type=float,
                   help="sample with this guidance instead of the weights' default")
    p.add_argument("--guidance-interval", type=float, nargs=2, metavar=("SIGMA_MIN", "SIGMA_MAX"),
                   help="guide only at noise levels σ in (min, max] instead of the weights' "
                        "interval (max ≤ 0: no upper limit)")
    p.add_argument("--grid", type=Path, help="save a sample grid (one row per class) here")
    p.add_argument("--draw", type=int, default=0,
                   help="which draw of sampling seeds (0: the one every record so far used)")
    args = p.parse_args()
    setup(args)
    from classndiff.data import LesionDataset
    from classndiff.evaluation.generation import frechet_distance, pil_to_uint8
    from classndiff.evaluation.yardstick import (
        ImageNetFeatures,
        border_ita,
        mix_matched_fd,
        yardstick,
    )
    from classndiff.labels import DX_CODES, TONE_GROUPS
    from classndiff.training.evaluator import (
        downsample_uint8,
        load_evaluator,
        pooled_features,
        predict,
    )

    pipe = load_pipe(args)
    if args.guidance_scale is not None:
        pipe.config.sampling.guidance_scale = args.guidance_scale
    if args.guidance_interval is not None:
        low, high = args.guidance_interval
        pipe.config.sampling.guidance_sigma_min = low
        pipe.config.sampling.guidance_sigma_max = high if high > 0 else None
    per_class = 4 if args.quick else args.per_class
    per_tone = 4 if args.quick else args.per_tone
    limit = 60 if args.quick else None
    test = LesionDataset(args.data_dir, args.reference_split, limit=limit)
    train = LesionDataset(args.data_dir, "train", limit=limit)

    started = time.perf_counter()
    draw_seed = 100_000 * args.draw  # every seed below shifted alike: another draw
    images, labels = [], []
    chunk = pipe.config.sampling.max_images
    for c, dx in enumerate(DX_CODES):  # default settings, one seed range per class
        for start in range(0, per_class, chunk):
            out = pipe.generate(dx=dx, num_images=min(chunk, per_class - start),
                                seed=draw_seed + 1000 * c + start)
            images += out.images
            labels += [c] * len(out.images)
    generate_s = time.perf_counter() - started
    fake = pil_to_uint8(images)
    fake_labels = np.array(labels)

    # The floor: real train images with the same label mix, same count, same size.
    rng = np.random.default_rng(args.seed)
    floor_idx = np.concatenate([rng.choice(np.flatnonzero(train.dx.numpy() == c),
                                           size=(fake_labels == c).sum(), replace=True)
                                for c in range(len(DX_CODES))])
    features = ImageNetFeatures()
    result = yardstick(features, fake, fake_labels, test.images, test.dx.numpy(),
                       train.images[floor_idx], train.dx.numpy()[floor_idx])

    evaluator_dir = Path(args.evaluator)
    if (evaluator_dir / "config.json").exists() and not args.quick:
        evaluator = load_evaluator(evaluator_dir)
        size = evaluator.config.image_size
        fake_images = downsample_uint8(fake, size)
        predicted = predict(evaluator, fake_images).argmax(1)
        per_class_fidelity = [float((predicted[fake_labels == c] == c).mean())
                              for c in range(len(DX_CODES))]
        result["model"]["class_fidelity_macro"] = float(np.mean(per_class_fidelity))
        result["model"]["class_fidelity"] = dict(zip(DX_CODES, per_class_fidelity))
        floor_images = downsample_uint8(train.images[floor_idx], size)
        real_predicted = predict(evaluator, floor_images).argmax(1)
        result["real_floor"]["class_fidelity_macro"] = float(np.mean(
            [(real_predicted[fake_labels == c] == c).mean() for c in range(len(DX_CODES))]))
        # FD again in a feature space that shares nothing with the ImageNet one (a check on
        # anything trained towards features of a network fine-tuned from those weights).
        reference = pooled_features(evaluator, downsample_uint8(test.images, size))
        for key, imgs in (("model", fake_images), ("real_floor", floor_images)):
            feats = pooled_features(evaluator, imgs)
            result[key]["fd_evaluator"] = frechet_distance(feats, reference)
            result[key]["fd_evaluator_mix_matched"] = mix_matched_fd(
                reference, test.dx.numpy(), feats, fake_labels)  # the full split: every class

    tones = {}
    for t, tone in enumerate(TONE_GROUPS):  # mixed diagnoses, so tone is all that differs
        tone_images = []
        for i, dx in enumerate(("nv", "mel", "bkl", "bcc")):
            tone_images += pipe.generate(dx=dx, skin_tone=tone, num_images=max(1, per_tone // 4),
                                         seed=draw_seed + 50_000 + 100 * t + 10 * i).images
        tones[tone] = float(np.median(border_ita(pil_to_uint8(tone_images))))
    real_ita = float(np.median(border_ita(downsample_uint8(test.images, fake.shape[-1]))))
    result["tone_median_ita"] = {**tones, "real_test": real_ita}
    result["tone_ordered"] = bool(tones["lighter"] > tones["brown"] > tones["darker"])
    result["tone_lighter_minus_darker"] = tones["lighter"] - tones["darker"]

    timings = []
    for repeat in range(1 if args.quick else 3):
        start = time.perf_counter()
        pipe.generate(dx="mel", num_images=4, seed=repeat)
        timings.append(time.perf_counter() - start)
    result["seconds_4_images"] = float(np.median(timings))
    result["seconds_generate_all"] = round(generate_s, 1)

    if args.grid:
        from classndiff.evaluation.generation import sample_grid

        keep = np.concatenate([np.flatnonzero(fake_labels == c)[:8] for c in range(len(DX_CODES))])
        sample_grid(fake[keep], fake_labels[keep], np.full(len(keep), len(TONE_GROUPS)),
                    args.grid, per_cell=8)

    rows = [[name, *(round(v, 3) if isinstance(v, float) else v for v in
                     (result[key].get(k) for k in ("fd", "fd_mix_matched", "kid",
                                                   "precision", "recall",
                                                   "diversity_ratio", "blockiness",
                                                   "class_fidelity_macro")))]
            for name, key in (("generated", "model"), ("real floor", "real_floor"))]
    print_table(["set", "FD", "FD (mix matched)", "KID", "precision", "recall", "diversity",
                 "blockiness", "fidelity"], rows)
    print("median border ITA per requested tone:", {k: round(v, 1) for k, v in
                                                     result["tone_median_ita"].items()})
    print(f"4 images: {result['seconds_4_images']:.2f} s")
    record = pipe.config.training
    index = record.denoiser_stage if record else None  # not a later classifier-only stage
    stage = record.stages[index - 1] if record else None
    result["denoiser"] = {
        "kind": pipe.config.model.denoiser,
        "params_M": round(sum(q.numel() for q in pipe.model.denoiser.parameters()) / 1e6, 2),
        "stage": index, "steps": stage and stage.step, "images_seen": stage and stage.images_seen,
        "training_minutes": round((stage and stage.wall_seconds or 0) / 60, 1),
        "hardware": stage and stage.hardware}
    result.update({"benchmark": "generator_yardstick", "per_class": per_class,
                   "draw": args.draw,
                   "reference_split": args.reference_split,
                   "settings": {k: getattr(pipe.config.sampling, k) for k in
                                ("sampler", "steps", "guidance_scale", "guided",
                                 "guidance_sigma_min", "guidance_sigma_max")},
                   **environment(args, pipe)})
    emit(result, args.output)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
