"""The camera-shift test on a weights folder: the test images under the photometric shifts
other dermatoscopes produce (classndiff/shifts.py), accuracy, balanced accuracy and
malignant AUC under each.

    python benchmarks/camera_shift.py --weights weights/embedded \\
        --output reports/embedded/camera_shift.json
    python benchmarks/camera_shift.py --quick

It is a proxy: real dermoscopy from other devices differs in more ways. Ends with ONE JSON
line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from _bench import emit, environment, load_pipe, parser, print_table, probabilities, setup


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--output", type=Path)
    args = p.parse_args()
    setup(args)
    from classndiff.data import LesionDataset
    from classndiff.evaluation.shifts import SHIFTS
    from classndiff.metrics import classification_metrics

    pipe = load_pipe(args)
    data = LesionDataset(args.data_dir, args.split, image_size=pipe.config.model.pixel_size,
                         limit=40 if args.quick else None)
    images = data.images.permute(0, 2, 3, 1).numpy()
    labels = data.dx.numpy()
    result = {"benchmark": "camera_shift", "split": args.split, "n": int(len(labels)),
              "shifts": {}}
    for name, shift in SHIFTS.items():
        m = classification_metrics(probabilities(pipe, np.stack([shift(im) for im in images])),
                                   labels)
        result["shifts"][name] = {k: m.get(k) for k in ("accuracy", "balanced_accuracy",
                                                         "macro_auc", "malignant_auc")}
    print_table(["shift", "accuracy", "balanced acc.", "malignant AUC"],
                [[name, f"{r['accuracy']:.3f}", f"{r['balanced_accuracy']:.3f}",
                  f"{r['malignant_auc']:.3f}"] for name, r in result["shifts"].items()])
    worst = min(r["accuracy"] for r in result["shifts"].values())
    result["worst_accuracy"] = worst
    result.update(environment(args, pipe))
    emit(result, args.output)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
