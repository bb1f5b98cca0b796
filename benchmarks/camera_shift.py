"""The camera-shift test on a weights folder: the test images under the photometric shifts
other dermatoscopes produce (classndiff/evaluation/shifts.py), accuracy, balanced accuracy,
malignant AUC and sensitivity under each (at 0.5, and the model's own malignant call —
sensitivity and specificity at its validation-fitted threshold — when it has one), and the
share of answers (top class) each shift changes. A quarter turn, which no camera makes but a
hand holding one does, is read beside them: it is not one of the dihedral test-time views the
model may average (the shipped one reads one view), so it gives the churn of the model's
answers under a change that carries no information at all — the scale against which the skin
re-tint's flips (benchmarks/skin_tone_counterfactual.py) can be read.

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

# Not a camera shift: the control for the answers a shift changes (see the docstring).
QUARTER_TURN = "quarter turn (control: no camera shift)"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--output", type=Path)
    args = p.parse_args()
    setup(args)
    from classndiff.data import LesionDataset
    from classndiff.evaluation.shifts import SHIFTS
    from classndiff.labels import malignant_mask
    from classndiff.metrics import classification_metrics
    from classndiff.trust.fairness import flip_report
    from classndiff.trust.threshold import rates

    pipe = load_pipe(args)
    data = LesionDataset(args.data_dir, args.split, image_size=pipe.config.model.pixel_size,
                         limit=40 if args.quick else None)
    images = data.images.permute(0, 2, 3, 1).numpy()
    labels = data.dx.numpy()
    result = {"benchmark": "camera_shift", "split": args.split, "n": int(len(labels)),
              "shifts": {}}
    shifts = {**SHIFTS, QUARTER_TURN: np.rot90}
    threshold = getattr(pipe, "malignant_threshold", None)
    malignant = np.asarray(malignant_mask())
    if threshold is not None:
        result["malignant_call_threshold"] = threshold
    unshifted = None
    for name, shift in shifts.items():
        probs = probabilities(pipe, np.stack([shift(im) for im in images]))
        unshifted = probs if unshifted is None else unshifted
        m = classification_metrics(probs, labels)
        changed = flip_report(unshifted, probs, labels)
        result["shifts"][name] = {
            **{k: m.get(k) for k in ("accuracy", "balanced_accuracy", "macro_auc",
                                     "malignant_auc")},
            "malignant_sensitivity": changed["malignant_sensitivity_after"],
            "answers_changed": changed["flip_rate"],
            "answers_changed_by_confidence": changed["flip_rate_by_confidence"]}
        if threshold is not None:  # the model's own malignant call, as the app makes it
            call = rates(probs[:, malignant].sum(1), malignant[labels], threshold)
            result["shifts"][name]["malignant_call"] = dict(zip(("sensitivity", "specificity"),
                                                                call))
    print_table(["shift", "accuracy", "balanced acc.", "malignant AUC", "mal. sensitivity",
                 "call: sens. / spec.", "answers changed"],
                [[name, f"{r['accuracy']:.3f}", f"{r['balanced_accuracy']:.3f}",
                  f"{r['malignant_auc']:.3f}", f"{r['malignant_sensitivity']:.3f}",
                  "{sensitivity:.3f} / {specificity:.3f}".format(**r["malignant_call"])
                  if "malignant_call" in r else "—",
                  f"{100 * r['answers_changed']:.1f} %"]
                 for name, r in result["shifts"].items()])
    worst = min(r["accuracy"] for name, r in result["shifts"].items() if name != QUARTER_TURN)
    result["worst_accuracy"] = worst
    result.update(environment(args, pipe))
    emit(result, args.output)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
