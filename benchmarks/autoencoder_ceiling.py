"""What a latent space allows: real images passed through an autoencoder (`classndiff
train-autoencoder`) and graded by the generator's yardstick. A denoiser in these latents
cannot beat its own decoder, so the reconstructions' FD, precision / recall and blockiness
are the ceiling of any generator built on them.

    python benchmarks/autoencoder_ceiling.py --autoencoder runs/ae --output ae.json \
        --figure reconstructions.png

The images are the yardstick's floor sample (real train images, 32 per class, same seed),
against the same real test images, at the autoencoder's size; reconstruction L1 and PSNR are
over the whole validation split, and so is the class ceiling: the independent evaluator's
per-class accuracy on the validation images and on their reconstructions (what the latents
keep of what tells the classes apart; a generator's class fidelity cannot beat it). The
figure: 8 validation images over their reconstructions; the class figure: 6 of each class
over theirs, one pair of rows per class (the hues of the rare classes are what a small
latent loses first). Ends with ONE JSON line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from _bench import ROOT, emit, environment, parser, setup


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → uint8, as saved images are."""
    return ((images + 1) * 127.5).round().to(torch.uint8)


def save_class_reconstructions(images: torch.Tensor, recon: torch.Tensor, labels: np.ndarray,
                               path: Path, per_class: int = 6) -> None:
    """Per class present: its first `per_class` images over their reconstructions, 3×."""
    from PIL import Image
    from torchvision.utils import make_grid

    rows = []
    for c in np.unique(labels):
        idx = torch.from_numpy(np.flatnonzero(labels == c)[:per_class])
        rows += [images[idx], recon[idx]]
    width = max(len(r) for r in rows)
    rows = [torch.cat([r, torch.full((width - len(r), *r.shape[1:]), 255, dtype=torch.uint8)])
            for r in rows]
    grid = make_grid(torch.cat(rows).float() / 255, nrow=width, padding=2, pad_value=1.0)
    image = Image.fromarray((grid * 255).round().byte().permute(1, 2, 0).numpy())
    image.resize((image.width * 3, image.height * 3), Image.Resampling.NEAREST).save(path)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--autoencoder", type=Path, required=True)
    p.add_argument("--per-class", type=int, default=32)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--evaluator", type=Path, default=ROOT / "weights/evaluator")
    p.add_argument("--output", type=Path)
    p.add_argument("--figure", type=Path)
    p.add_argument("--class-figure", type=Path)
    args = p.parse_args()
    setup(args)
    from classndiff.data import LesionDataset
    from classndiff.evaluation.generation import class_fidelity
    from classndiff.evaluation.yardstick import ImageNetFeatures, yardstick
    from classndiff.hub import load_vae
    from classndiff.labels import DX_CODES
    from classndiff.training.autoencoder import reconstruct, save_reconstructions
    from classndiff.training.evaluator import downsample_uint8, load_evaluator, predict

    vae = load_vae(str(args.autoencoder), "vae")
    settings = json.loads((args.autoencoder / "autoencoder.json").read_text())
    size = settings["config"]["image_size"]
    test = LesionDataset(args.data_dir, "test")
    train = LesionDataset(args.data_dir, "train")
    val = LesionDataset(args.data_dir, "val")

    # The yardstick's floor sample: the same label mix, count and seed.
    labels = np.repeat(np.arange(len(DX_CODES)), args.per_class)
    rng = np.random.default_rng(args.seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(train.dx.numpy() == c),
                                     size=(labels == c).sum(), replace=True)
                          for c in range(len(DX_CODES))])
    originals = downsample_uint8(train.images[idx], size)
    result = yardstick(ImageNetFeatures(), as_uint8(reconstruct(vae, originals)), labels,
                       test.images, test.dx.numpy(), train.images[idx], labels)

    val_images = downsample_uint8(val.images, size)
    recon = as_uint8(reconstruct(vae, val_images))
    error = (recon.float() - val_images.float()) / 255
    mse = error.pow(2).mean(dim=(1, 2, 3))
    result["validation"] = {
        "images": len(val_images), "l1": float(error.abs().mean()),
        "psnr_db": float((10 * torch.log10(1 / mse.clamp(min=1e-10))).mean())}
    evaluator = load_evaluator(args.evaluator)
    side = evaluator.config.image_size
    result["class_ceiling"] = {}
    for name, images in (("originals", val_images), ("reconstructions", recon)):
        # the generator's class-fidelity arithmetic, on real images and their reconstructions
        graded = class_fidelity(predict(evaluator, downsample_uint8(images, side)), val.dx.numpy())
        result["class_ceiling"][name] = {**graded["per_class"], "macro": graded["macro"]}
    result["autoencoder"] = {"folder": str(args.autoencoder), "steps": settings["steps"],
                             "seconds_trained": settings["seconds_trained"],
                             "config": settings["config"]}
    if args.figure:
        save_reconstructions(vae, val_images[:8], args.figure)
    if args.class_figure:
        save_class_reconstructions(val_images, recon, val.dx.numpy(), args.class_figure)
    r, floor = result["model"], result["real_floor"]
    print(f"reconstructions of {len(idx)} train images at {size} px vs real test: "
          f"FD {r['fd']:.1f} (real floor {floor['fd']:.1f}), precision {r['precision']:.3f} / "
          f"recall {r['recall']:.3f} ({floor['precision']:.3f} / {floor['recall']:.3f}), "
          f"diversity {r['diversity_ratio']:.2f}, blockiness {r['blockiness']:.3f} "
          f"({floor['blockiness']:.3f}); validation L1 {result['validation']['l1']:.4f}, "
          f"PSNR {result['validation']['psnr_db']:.1f} dB; evaluator macro accuracy on validation "
          f"originals {result['class_ceiling']['originals']['macro']:.2f}, reconstructions "
          f"{result['class_ceiling']['reconstructions']['macro']:.2f}")
    emit({"benchmark": "autoencoder_ceiling", **result, "environment": environment(args)},
         args.output)


if __name__ == "__main__":
    main()
