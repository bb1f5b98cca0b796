"""Would a lesion-centred input cut the skin-tone flips? (#13: the flips might fall if skin
were a smaller share of the pixels.) The classifier as shipped, on one split's images with an
expert mask, read whole and read as a square crop around the lesion — segmented on the image
itself (`skintone.segment_by_contrast`, the same on the re-tinted copy: no expert mask at
inference), side = PAD × the lesion box's longer side, at least MIN × the image, resized back
to the model's size — for the original images and their skin re-tinted to the darker group.
Accuracy, balanced accuracy, malignant AUC and sensitivity, flips → darker. A probe, not a
selection rule: nothing here ships.

    python benchmarks/lesion_crop.py --weights weights/embedded --split val \\
        --output reports/embedded/lesion_crop_s23.json

Ends with ONE JSON line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _bench import MaskedSplit, emit, environment, load_pipe, parser, print_table, probabilities

CROPS = ((1.3, 0.5), (1.6, 0.6), (2.0, 0.7))


def lesion_boxes(images: np.ndarray) -> list[tuple[int, int, int, int] | None]:
    """(top, bottom, left, right) of each uint8 image's segmented lesion; None where none."""
    from kornia.color import rgb_to_lab

    from classndiff.trust.skintone import segment_by_contrast

    labs = rgb_to_lab(torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255).numpy()
    boxes = []
    for lab in labs:
        lesion = segment_by_contrast(lab)
        if lesion.sum() < 0.01 * lesion.size:
            boxes.append(None)
            continue
        ys, xs = np.nonzero(lesion)
        boxes.append((ys.min(), ys.max(), xs.min(), xs.max()))
    return boxes


def crop_to_lesion(images: np.ndarray, boxes: list, pad: float, smallest: float) -> np.ndarray:
    """Square crops around each box (the whole image where there is none), back at full size."""
    size = images.shape[1]
    out = []
    for image, box in zip(images, boxes):
        if box is None:
            out.append(image)
            continue
        top, bottom, left, right = box
        side = int(min(size, max(smallest * size, pad * max(bottom - top, right - left) + pad)))
        y = int(np.clip(round((top + bottom - side) / 2), 0, size - side))
        x = int(np.clip(round((left + right - side) / 2), 0, size - side))
        piece = torch.from_numpy(image[y:y + side, x:x + side]).permute(2, 0, 1)[None].float()
        resized = F.interpolate(piece, size=(size, size), mode="bilinear", antialias=True,
                                align_corners=False)
        out.append(resized[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy())
    return np.stack(out)


def main() -> None:
    from classndiff.evaluation.bootstrap import fast_metrics
    from classndiff.trust.fairness import flip_report

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--split", default="val")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--output", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipe(args)
    split = MaskedSplit(args.data_dir, args.split, pipe.config.model.pixel_size,
                        24 if args.quick else None)
    darker = split.retinted["darker"]
    boxes = {"original": lesion_boxes(split.images), "darker": lesion_boxes(darker)}

    def figures(original: np.ndarray, retinted: np.ndarray) -> dict[str, float]:
        probs, moved = probabilities(pipe, original), probabilities(pipe, retinted)
        found = fast_metrics(probs, split.labels)
        return {**{k: float(found[k]) for k in ("accuracy", "balanced_accuracy",
                                                  "malignant_auc", "sensitivity")},
                "flip_rate_darker": flip_report(probs, moved, split.labels)["flip_rate"]}

    rows = {"whole image": figures(split.images, darker)}
    for pad, smallest in CROPS:
        rows[f"crop ×{pad}, ≥ {smallest:.0%}"] = figures(
            crop_to_lesion(split.images, boxes["original"], pad, smallest),
            crop_to_lesion(darker, boxes["darker"], pad, smallest))
    print_table(["input", "accuracy", "balanced", "malignant AUC", "sensitivity",
                 "flips → darker"],
                [[name, *(f"{v:.3f}" for v in r.values())] for name, r in rows.items()])
    emit({"benchmark": "lesion_crop", "split": args.split, "n": len(split.labels),
          "segmented": sum(b is not None for b in boxes["original"]), "inputs": rows,
          **environment(args, pipe)}, args.output)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
