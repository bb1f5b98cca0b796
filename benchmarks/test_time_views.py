"""How many dihedral views should a prediction average (`model.classifier_test_views`)?
Validation and test metrics for 1, 2, 4 and 8 views, and the diagnose latency each costs
(classify + Grad-CAM + abstention, 2 threads). The rule, fixed before looking at the test
split: the most accurate count on validation among those whose diagnose p50 stays within
three quarters of the latency bar (60 ms): two runs of this benchmark on this machine gave
the same count 35 and 58 ms, so a count at the bar would miss it on a slower day.
`--apply` writes the chosen count into WEIGHTS/config.json (then re-fit the temperature:
`classndiff calibrate`).

    python benchmarks/test_time_views.py --weights weights/embedded --apply \\
        --output reports/embedded/test_time_views.json
    python benchmarks/test_time_views.py --quick

Each image's eight views are classified once; a count's logits are the mean over its first
views (what `forward_views` computes for a head that pools into a linear layer). About six
minutes on a 2-core CPU. Ends with ONE JSON line."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from _bench import (
    edit_weights_config,
    emit,
    environment,
    load_pipe,
    parser,
    percentiles,
    print_table,
    setup,
    timed,
)
from _bench import synthetic_lesion as lesion

COUNTS = (1, 2, 4, 8)
LATENCY_BAR_MS = 60.0
LATENCY_BUDGET_MS = 0.75 * LATENCY_BAR_MS  # the margin: see the docstring
METRICS = ("accuracy", "balanced_accuracy", "macro_auc", "malignant_auc")


@torch.no_grad()
def view_logits(pipe, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:  # noqa: ANN001
    """(8, N, 7) logits of each dihedral view of uint8 (N, 3, H, W) images."""
    from classndiff.models.classifier import DIHEDRAL_VIEWS, dihedral_view

    one_view = read_with(pipe, 1)
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].float() / 127.5 - 1
        out.append(torch.stack([one_view.logits(dihedral_view(x, i))
                                for i in range(len(DIHEDRAL_VIEWS))]))
    return torch.cat(out, dim=1)


def read_with(pipe, views: int):  # noqa: ANN001, ANN201
    """The same model read with `views` test-time views."""
    from classndiff.pipelines.pipeline import ClassNDiffPipeline

    config = replace(pipe.config, model=replace(pipe.config.model, classifier_test_views=views))
    return ClassNDiffPipeline(pipe.model, config, pipe.device, pipe.vae, pipe.source,
                              pipe.extras)


def apply(pipe, views: int) -> None:  # noqa: ANN001
    """Write `views` into the weights folder's config.json."""
    def edit(config) -> str:  # noqa: ANN001
        config.model.classifier_test_views = views
        return (f"model.classifier_test_views = {views}; re-fit the temperature next "
                "(classndiff calibrate)")

    edit_weights_config(pipe, edit)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--repeats", type=int, default=None, help="diagnose calls per count")
    p.add_argument("--output", type=Path)
    p.add_argument("--apply", action="store_true",
                   help="write the chosen count into the weights folder's config.json")
    args = p.parse_args()
    setup(args)
    from classndiff.data import LesionDataset
    from classndiff.metrics import classification_metrics

    pipe = load_pipe(args)
    image = lesion(pipe.config.model.pixel_size, args.seed)
    # Latency first, in a fresh process as the app has it: large batches leave the
    # allocator warm, and a diagnosis after them is faster than a user sees it.
    readers = {count: read_with(pipe, count) for count in COUNTS}
    for reader in readers.values():  # warm-up: the CAM layer, the allocator
        for _ in range(3):
            reader.diagnose(image, saliency=True)
    times: dict[int, list[float]] = {count: [] for count in COUNTS}
    for _ in range(args.repeats or (5 if args.quick else 40)):  # interleaved: noise hits all
        for count, reader in readers.items():
            times[count].append(timed(lambda r=reader: r.diagnose(image, saliency=True)))
    latency = {str(count): percentiles(t) for count, t in times.items()}

    limit = 40 if args.quick else None
    splits = {}
    for split in ("val", "test"):
        data = LesionDataset(args.data_dir, split, image_size=pipe.config.model.pixel_size,
                             limit=limit)
        logits = view_logits(pipe, data.images)
        splits[split] = {
            str(count): {k: round(classification_metrics(
                torch.softmax(logits[:count].mean(0), 1).numpy(), data.dx.numpy())[k], 4)
                for k in METRICS}
            for count in COUNTS}
        splits[split]["n"] = len(data)

    allowed = [c for c in COUNTS if latency[str(c)]["p50_ms"] <= LATENCY_BUDGET_MS] or [1]
    chosen = max(allowed, key=lambda c: (splits["val"][str(c)]["accuracy"], -c))
    print_table(["views", *(f"val {k}" for k in METRICS), "test accuracy", "test mal. AUC",
                 "diagnose p50 ms"],
                [[c, *(splits["val"][str(c)][k] for k in METRICS),
                  splits["test"][str(c)]["accuracy"], splits["test"][str(c)]["malignant_auc"],
                  latency[str(c)]["p50_ms"]] for c in COUNTS])
    result = {"benchmark": "test_time_views", "counts": list(COUNTS), "splits": splits,
              "diagnose_latency": latency, "latency_bar_ms": LATENCY_BAR_MS,
              "latency_budget_ms": LATENCY_BUDGET_MS,
              "rule": "most accurate on val among counts with diagnose p50 <= 0.75 x the bar",
              "chosen": chosen, **environment(args, pipe)}
    if args.apply:
        apply(pipe, chosen)
    emit(result, args.output)


if __name__ == "__main__":
    main()
