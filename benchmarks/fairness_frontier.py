"""Where the fairness arms sit between tone invariance and the rare classes, and whether a
post-hoc class-prior shift (logit adjustment, Menon et al. 2021: p(c) ÷ prior(c)^τ with the
training split's class frequencies) moves an arm off that line. Per arm, on one split
(validation by default), for τ in a fixed list: accuracy, balanced accuracy, malignant AUC,
malignant sensitivity at P(malignant) ≥ 0.5 and the proxy flip rate to darker skin; and, at
τ = 0, which classes the flips go between and how the flips fall by the quartile of the
top-two margin. One view per image, as the fairness table reads it. A diagnosis of the arms,
not a selection rule: nothing here ships.

    python benchmarks/fairness_frontier.py --arm base=RUNS/arm-0/last \\
        --arm "λ_c 3=RUNS/consistency-3/last" --output reports/.../frontier.json

Ends with ONE JSON line."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _bench import MaskedSplit, emit, environment, load_pipe, parser, print_table, probabilities

TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)
METRICS = ("accuracy", "balanced_accuracy", "malignant_auc", "sensitivity")


def figures(probs: np.ndarray, darker: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The fairness rule's figures: the evaluation's metrics and the flip test's flip rate."""
    from classndiff.evaluation.bootstrap import fast_metrics
    from classndiff.trust.fairness import flip_report

    found = fast_metrics(probs, labels)
    return {**{key: found[key] for key in METRICS},
            "flip_rate_darker": flip_report(probs, darker, labels)["flip_rate"]}


def adjusted(probs: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    shifted = probs / prior ** tau
    return shifted / shifted.sum(1, keepdims=True)


def flip_anatomy(probs: np.ndarray, darker: np.ndarray) -> dict[str, Any]:
    from classndiff.labels import DX_CODES

    before, after = probs.argmax(1), darker.argmax(1)
    pairs = Counter(f"{DX_CODES[i]}→{DX_CODES[j]}" for i, j in zip(before, after) if i != j)
    ranked = np.sort(probs, 1)
    margin = ranked[:, -1] - ranked[:, -2]
    quartile = np.searchsorted(np.quantile(margin, [0.25, 0.5, 0.75]), margin, side="right")
    flipped = before != after
    return {"pairs": dict(pairs.most_common()),
            "flip_rate_by_margin_quartile": [float(flipped[quartile == q].mean())
                                             for q in range(4)]}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--arm", action="append", default=[], metavar="NAME=WEIGHTS")
    p.add_argument("--split", default="val")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--output", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    arms = dict(a.rsplit("=", 1) for a in args.arm) if args.arm else {"tiny": None}
    limit = 24 if args.quick else None
    split: MaskedSplit | None = None
    from classndiff.data import LesionDataset

    train_dx = LesionDataset(args.data_dir, "train", image_size=8).dx.numpy()
    prior = np.clip(np.bincount(train_dx, minlength=7) / len(train_dx), 1e-6, None)
    rows: dict[str, Any] = {}
    for name, weights in arms.items():
        args.weights = weights
        pipe = load_pipe(args)
        if split is None:
            split = MaskedSplit(args.data_dir, args.split, pipe.config.model.pixel_size, limit)
        probs = probabilities(pipe, split.images)
        darker = probabilities(pipe, split.retinted["darker"])
        rows[name] = {"weights": weights,
                      "by_tau": {str(t): figures(adjusted(probs, prior, t),
                                                 adjusted(darker, prior, t), split.labels)
                                 for t in TAUS},
                      **flip_anatomy(probs, darker)}
    print_table(["arm", "τ", "accuracy", "balanced", "malignant AUC", "sensitivity",
                 "flips → darker"],
                [[name, tau, *(f"{v:.3f}" for v in f.values())]
                 for name, r in rows.items() for tau, f in r["by_tau"].items()])
    emit({"benchmark": "fairness_frontier", "split": args.split, "taus": list(TAUS),
          "arms": rows, **environment(args)}, args.output)


if __name__ == "__main__":
    main()
