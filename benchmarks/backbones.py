"""Which EfficientNet-Lite should the classifier be? Validation metrics against time per image
for classifiers trained the same way from their ImageNet weights (the first classifier
stage: `benchmarks/backbone_study.sh`), each exported at its best validation score.

    python benchmarks/backbones.py --run lite0=RUNS/s1-classifier --run lite2=RUNS/s9-lite2 \\
        --output reports/embedded/backbones.json --markdown reports/embedded/backbones.md
    python benchmarks/backbones.py --quick

Per run: validation accuracy, balanced accuracy, macro and malignant AUC (one view, the
export's own classifier), diagnose p50 with one view (classify + Grad-CAM + abstention,
2 threads; the models timed interleaved in one process, so the machine's noise hits all),
and from the run's log: training images per second, images seen and minutes. The rule (set
after the Lite2 run's training log had been seen, before these exports were measured): the
best validation balanced accuracy among backbones whose one-view diagnose p50 is at most
30 ms, half the 60 ms bar, which leaves room for test-time views. Ends with ONE JSON line."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import torch
from _bench import emit, environment, parser, percentiles, print_table, setup, timed
from _bench import synthetic_lesion as lesion
from _bench import tiny_pipe as make_tiny_pipe

METRICS = ("accuracy", "balanced_accuracy", "macro_auc", "malignant_auc")
ONE_VIEW_BUDGET_MS = 30.0


def read_log(run: Path, step: int | None) -> dict[str, float | None]:
    """Training speed and how far the export had got, from the run's log.csv."""
    log = run / "log.csv"
    if not log.is_file():
        return {"images_per_second": None, "images_seen": None, "minutes": None}
    rows = list(csv.DictReader(log.open()))
    speeds = [float(r["images_per_second"]) for r in rows if r.get("images_per_second")]
    at = [r for r in rows if step is None or int(r["step"]) <= step] or rows
    return {"images_per_second": round(statistics.median(speeds), 1) if speeds else None,
            "images_seen": int(at[-1]["images_seen"]),
            "minutes": round(float(at[-1]["seconds"]) / 60, 1)}


@torch.no_grad()
def val_metrics(pipe, data) -> dict[str, float]:  # noqa: ANN001
    from classndiff.metrics import classification_metrics

    one_view = pipe.model.classifier
    probs = []
    for start in range(0, len(data), 128):
        x = data.images[start:start + 128].float() / 127.5 - 1
        probs.append(torch.softmax(one_view(x), 1))
    metrics = classification_metrics(torch.cat(probs).numpy(), data.dx.numpy())
    return {k: round(float(metrics[k]), 4) for k in METRICS}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], metavar="NAME=FOLDER")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--repeats", type=int, default=None, help="diagnose calls per model")
    p.add_argument("--output", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args()
    setup(args)
    from dataclasses import replace

    from classndiff.data import LesionDataset
    from classndiff.pipelines.pipeline import ClassNDiffPipeline

    pipes = {}
    for spec in args.run:
        name, folder = spec.split("=", 1)
        pipe = ClassNDiffPipeline.from_pretrained(folder, device="cpu")
        one = replace(pipe.config, model=replace(pipe.config.model, classifier_test_views=1))
        pipes[name] = (Path(folder), ClassNDiffPipeline(pipe.model, one, pipe.device, pipe.vae,
                                                        pipe.source, pipe.extras))
    if args.quick and not pipes:
        pipes = {"tiny": (Path("."), make_tiny_pipe(args.seed))}
    image = lesion(next(iter(pipes.values()))[1].config.model.pixel_size, args.seed)
    for _, pipe in pipes.values():  # warm-up: the CAM layer, the allocator
        for _ in range(3):
            pipe.diagnose(image, saliency=True)
    times: dict[str, list[float]] = {name: [] for name in pipes}
    for _ in range(args.repeats or (3 if args.quick else 40)):
        for name, (_, pipe) in pipes.items():
            times[name].append(timed(lambda q=pipe: q.diagnose(image, saliency=True)))

    rows = {}
    for name, (folder, pipe) in pipes.items():
        data = LesionDataset(args.data_dir, "val", image_size=pipe.config.model.pixel_size,
                             limit=40 if args.quick else None)
        record = pipe.config.training
        rows[name] = {"backbone": pipe.config.model.classifier_backbone,
                      "parameters_m": round(sum(t.numel() for t in
                                                pipe.model.classifier.parameters()) / 1e6, 2),
                      **val_metrics(pipe, data),
                      "diagnose_one_view": percentiles(times[name]),
                      **read_log(folder, record.classifier_step if record else None),
                      "export_step": record.classifier_step if record else None,
                      "n_val": len(data)}
    allowed = [n for n, r in rows.items()
               if r["diagnose_one_view"]["p50_ms"] <= ONE_VIEW_BUDGET_MS] or list(rows)
    chosen = max(allowed, key=lambda n: rows[n]["balanced_accuracy"])
    header = ["run", "backbone", "params (M)", *(f"val {k}" for k in METRICS),
              "diagnose p50 ms (1 view)", "train img/s", "images seen", "minutes"]
    table = [[n, r["backbone"], r["parameters_m"], *(r[k] for k in METRICS),
              r["diagnose_one_view"]["p50_ms"], r["images_per_second"], r["images_seen"],
              r["minutes"]] for n, r in rows.items()]
    print_table(header, table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(
            ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             *("| " + " | ".join(str(v) for v in row) + " |" for row in table),
             "", f"Chosen by the rule (best validation balanced accuracy among one-view "
             f"diagnose p50 ≤ {ONE_VIEW_BUDGET_MS:.0f} ms): **{chosen}**.", ""]))
    result = {"benchmark": "backbones", "runs": rows, "chosen": chosen,
              "rule": f"best val balanced accuracy among one-view diagnose p50 <= "
                      f"{ONE_VIEW_BUDGET_MS} ms",
              **environment(args, next(iter(pipes.values()))[1])}
    emit(result, args.output)


if __name__ == "__main__":
    main()
