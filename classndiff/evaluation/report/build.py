"""The evaluation report: `classndiff evaluate WEIGHTS --report DIR`.

Writes DIR/report.md, DIR/metrics.json and PNG plots: headline classification metrics,
thresholds, confusion matrix, ROC curves, reliability; every metric per skin-tone group and
per sex with lesion-grouped bootstrap 95 % intervals and the gaps between groups; generation
quality in the independent evaluator's space; the λ = 0 ablation; the fairness experiment
(synthetic brown / darker images added to a classifier's training set); saliency inside the
expert lesion masks.

Intervals resample LESIONS, not images: HAM10000 has several images of one lesion, and
resampling images would treat near-duplicates as independent evidence (intervals too narrow)."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from classndiff.evaluation.report.figures import (
    plot_confusion,
    plot_groups,
    plot_reliability,
    plot_roc,
)
from classndiff.evaluation.report.markdown import render_markdown
from classndiff.evaluation.report.sections import (
    cas_real_reference,
    classification_section,
    clear_prediction_cache,
    fairness_experiment,
    generation_section,
    load_compare,
    load_evaluator,
    predict_probs,
    saliency_section,
)
from classndiff.labels import DX_CODES

logger = logging.getLogger(__name__)




# ------------------------------------------------------------------ the report
class _Laps:
    """Seconds per phase, said as each ends."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say, self.timings = say, {}
        self.started = self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        self.timings[name] = round(time.perf_counter() - self.last, 1)
        self.say(f"{name}: {self.timings[name]} s")
        self.last = time.perf_counter()

    def total(self) -> dict[str, float]:
        return {**self.timings, "total": round(time.perf_counter() - self.started, 1)}


def _classification(pipe: Any, other_pipe: Any, own_classifier: bool, test: Any, val: Any,
                    out_dir: Path, names: dict[str, str], reps: int,
                    seed: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The classification section (and the compared model's), with its figures."""
    other_probs = predict_probs(other_pipe, test) if own_classifier else None
    cls = classification_section(pipe, test, val, reps, seed, other_probs)
    plot_confusion(cls["labels"], cls["probs"], out_dir / "confusion_matrix.png",
                   f"confusion matrix, test n={len(cls['labels'])}")
    plot_roc(cls["labels"], cls["probs"], out_dir / "roc.png", cls["threshold_used_for_groups"])
    plot_reliability(cls["labels"], cls["probs"], out_dir / "reliability.png",
                     cls["metrics"]["ece"])
    compare_cls = None
    if other_pipe is not None and own_classifier:
        compare_cls = classification_section(other_pipe, test, val, reps, seed)
    for attribute in ("tone", "sex"):
        series = {names["model"]: cls["ci"]}
        if compare_cls:
            series[names["compare"]] = compare_cls["ci"]
        plot_groups(cls["ci"], cls["sizes"][attribute], attribute,
                    out_dir / f"groups_{attribute}.png", series)
    return cls, compare_cls


def _generation(pipe: Any, other_pipe: Any, evaluator: Any, test: Any, out_dir: Path,
                names: dict[str, str], data_dir: Any, per_cell: int, cas_steps: int,
                fd_reps: int, limit: int | None, seed: int,
                lap: _Laps) -> tuple[dict[str, Any], Any]:
    """The generation section for the model (and the compared one), graded by the
    independent evaluator, and the real-data CAS reference; also the generated images."""
    generation: dict[str, Any] = {}
    real_feats, _ = evaluator.embed(test.images)
    generation[names["model"]], generated = generation_section(
        pipe, evaluator, test, per_cell, seed, out_dir, "model", cas_steps, fd_reps, real_feats)
    lap("generation (model)")
    if other_pipe is not None:
        generation[names["compare"]], _ = generation_section(
            other_pipe, evaluator, test, per_cell, seed, out_dir, names["compare"], cas_steps,
            fd_reps, real_feats)
        lap(f"generation ({names['compare']})")
    if cas_steps > 0:
        from classndiff.training.evaluator import load_split

        train = load_split(data_dir, "train", 64, limit)
        generation["cas_real_reference"] = cas_real_reference(train, test, 4 * per_cell,
                                                              cas_steps, seed)
        lap("CAS real reference")
    return generation, generated


def _fairness(pipe: Any, generated: Any, test: Any, data_dir: Any, per_cell: int,
              augment: int, steps: int, reps: int, limit: int | None,
              seed: int) -> dict[str, Any]:
    """The fairness experiment: brown / darker generated images added to a classifier's
    training set (generated here when the generation section made too few)."""
    from classndiff.training.evaluator import load_split

    if generated is None or per_cell < augment:
        from classndiff.evaluation.generation import generate_cells

        cells = [(code, tone) for code in DX_CODES for tone in ("brown", "darker")]
        generated = generate_cells(pipe, cells, augment, seed=seed + 1)
    train = load_split(data_dir, "train", 64, limit)
    return fairness_experiment(train, test, generated, augment, steps, reps, seed)


# Its signature (one keyword per report option) is a third of its length; the phases
# are the helpers above.
def build_report(
    weights: str | Path,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    evaluator_dir: str | Path | None = "weights/evaluator",
    compare: str | Path | None = None,
    compare_name: str = "lambda0",
    generate_per_cell: int = 0,
    limit: int | None = None,
    fairness_augment: int = 0,
    reps: int = 1000,
    seed: int = 0,
    cas_steps: int = 300,
    fairness_steps: int = 600,
    fd_reps: int = 30,
    saliency_methods: Sequence[str] = ("gradcam", "gradcam++"),
    saliency_limit: int | None = None,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Everything above for one model (and optionally a second to compare), written to
    out_dir. Returns the metrics dictionary that metrics.json holds."""
    from classndiff.data import LesionDataset
    from classndiff.evaluation.evaluate import write_json
    from classndiff.pipelines.pipeline import ClassNDiffPipeline
    from classndiff.version import __version__

    lap = _Laps(progress or (lambda text: logger.info(text)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = ClassNDiffPipeline.from_pretrained(weights, fallback=False)
    size = pipe.config.model.pixel_size
    test = LesionDataset(data_dir, "test", image_size=size, limit=limit)
    val = LesionDataset(data_dir, "val", image_size=size, limit=limit)
    lap("load")

    other_pipe, compare_info = load_compare(compare, pipe) if compare else (None, {})
    names = {"model": Path(str(weights)).name or str(weights), "compare": compare_name}
    cls, compare_cls = _classification(pipe, other_pipe, bool(compare_info.get(
        "own_classifier")), test, val, out_dir, names, reps, seed)
    lap("classification, plots and comparison")

    generation: dict[str, Any] = {}
    generated = None
    evaluator = load_evaluator(evaluator_dir)
    if generate_per_cell > 0 and evaluator is None:
        generation["skipped"] = f"no evaluator at {evaluator_dir}"
    elif generate_per_cell > 0:
        generation, generated = _generation(pipe, other_pipe, evaluator, test, out_dir, names,
                                            data_dir, generate_per_cell, cas_steps, fd_reps,
                                            limit, seed, lap)
    fairness: dict[str, Any] = {}
    if fairness_augment > 0:
        fairness = _fairness(pipe, generated, test, data_dir, generate_per_cell,
                             fairness_augment, fairness_steps, reps, limit, seed)
        lap("fairness experiment")
    saliency = saliency_section(pipe, data_dir, saliency_methods, saliency_limit) \
        if saliency_methods else {}
    lap("saliency")

    result: dict[str, Any] = {
        "command": command, "names": names, "weights": pipe.source,
        "data_dir": str(test.root), "split": "test", "limit": limit,
        "calibrated": pipe.calibrated,
        "classification": {**cls["metrics"], "thresholds": cls["thresholds"]},
        "groups": {"threshold": cls["threshold_used_for_groups"], "sizes": cls["sizes"],
                   "ci": cls["ci"]},
        "bootstrap": {"reps": reps, "unit": "lesion (lesion_id)", "interval": "percentile 95 %",
                      "seed": seed},
        "compare": None if other_pipe is None else {
            "name": compare_name, "weights": other_pipe.source, **compare_info,
            "classification": None if compare_cls is None else {
                **compare_cls["metrics"], "thresholds": compare_cls["thresholds"]},
            "ci": None if compare_cls is None else compare_cls["ci"]},
        "generation": generation, "fairness_experiment": fairness, "saliency": saliency,
        "evaluator": str(evaluator_dir) if evaluator is not None else None,
        "timings_s": lap.total(),
        "environment": {"classndiff": __version__, "torch": torch.__version__,
                        "python": platform.python_version(),
                        "threads": torch.get_num_threads()},
    }
    write_json(result, out_dir / "metrics.json")
    (out_dir / "report.md").write_text(render_markdown(result, names, out_dir))
    clear_prediction_cache()
    return result


def rerender(directory: str | Path) -> Path:
    """Rewrite DIR/report.md from DIR/metrics.json (after a wording change, no recompute)."""
    import json

    directory = Path(directory)
    r = json.loads((directory / "metrics.json").read_text())
    names = r.get("names") or {}
    if "model" not in names:
        keys = [k for k in (r.get("generation") or {}) if k not in
                ("cas_real_reference", (r.get("compare") or {}).get("name"), "skipped")]
        names = {"model": keys[0] if keys else "model",
                 "compare": (r.get("compare") or {}).get("name", "compare")}
    (directory / "report.md").write_text(render_markdown(r, names, directory))
    return directory / "report.md"


if __name__ == "__main__":
    import sys

    print(rerender(sys.argv[1]))

