"""Measurement harnesses over a weights folder, above the pipeline (they load it; the
library modules they measure never import it):

    classndiff calibrate WEIGHTS       temperature + abstention statistics (calibrate_folder)
    classndiff trust WEIGHTS --all     the trust bars: natural photos / test lesions rejected,
                                       ECE, ITA agreement, the bad-input corpus
    classndiff saliency WEIGHTS        CAM energy inside the expert lesion masks; latency"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from classndiff.evaluation.saliency import measure_latency, measure_mask_energy
from classndiff.evaluation.trust_checks import (
    measure_bad_inputs,
    measure_calibration,
    measure_ood,
    measure_skin_tone,
)
from classndiff.explain.saliency import CAM_METHODS, SaliencyExplainer
from classndiff.pipelines.pipeline import ClassNDiffPipeline

logger = logging.getLogger(__name__)





def _print_json(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2, default=str), flush=True)


def trust_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="classndiff trust",
        description="Measure the trust bars of a weights folder (run `classndiff calibrate` "
                    "on it first).")
    parser.add_argument("weights", nargs="?", default=None)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--measure-ood", "--ood", action="store_true", dest="ood")
    parser.add_argument("--ece", action="store_true", help="ECE before/after T on the split")
    parser.add_argument("--ita", action="store_true", help="ITA vs the metadata's ita column")
    parser.add_argument("--bad-inputs", action="store_true", help="the bad-input corpus")
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--report-dir", type=Path, help="where to write reliability plots")
    args = parser.parse_args(argv)
    pipe = ClassNDiffPipeline.from_pretrained(args.weights, device="cpu", fallback=False)
    jobs: dict[str, Callable[[], dict[str, Any]]] = {
        "ood": lambda: measure_ood(pipe, args.data_dir, args.split),
        "ece": lambda: measure_calibration(pipe, args.data_dir, args.split, args.report_dir),
        "ita": lambda: measure_skin_tone(args.data_dir, args.split),
        "bad_inputs": lambda: measure_bad_inputs(pipe),
    }
    wanted = [k for k in jobs if args.all or getattr(args, k)]
    if not wanted:
        parser.error("choose at least one of --measure-ood, --ece, --ita, --bad-inputs, --all")
    result: dict[str, Any] = {"weights": pipe.source}
    for key in wanted:
        started = time.perf_counter()
        result[key] = jobs[key]()
        result[key]["seconds"] = round(time.perf_counter() - started, 1)
        _print_json({key: result[key]})
    if args.report_dir:
        args.report_dir.mkdir(parents=True, exist_ok=True)
        (args.report_dir / "trust_measures.json").write_text(json.dumps(result, indent=2) + "\n")
    return 1 if "bad_inputs" in result and result["bad_inputs"]["crashes"] else 0



# ---------------------------------------------------------------------------- saliency
def saliency_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="classndiff saliency",
        description="Share of CAM energy inside the expert lesion masks; diagnose latency.")
    parser.add_argument("weights", nargs="?", default=None)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--method", default="gradcam", choices=CAM_METHODS)
    parser.add_argument("--target", default=None, help="None (predicted), 'malignant' or a dx")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--latency", action="store_true",
                        help="also time diagnose(saliency=True) at the model's pixel size")
    parser.add_argument("--threads", type=int, help="torch threads (the speed bar uses 2)")
    parser.add_argument("--layer", help="backbone layer for the CAM, e.g. layer3 (default: "
                                        "found from the backbone)")
    parser.add_argument("--output", type=Path,
                        help="also write the JSON here (e.g. WEIGHTS/saliency.json, which the "
                             "model card reads)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = ClassNDiffPipeline.from_pretrained(args.weights, device="cpu", fallback=False)
    if args.layer:
        pipe._explainer = SaliencyExplainer(pipe.model.classifier, layer=args.layer)
    result: dict[str, Any] = {"weights": pipe.source}
    if args.latency:
        result["latency"] = measure_latency(pipe, method=args.method)
    else:
        result["mask_energy"] = measure_mask_energy(pipe, args.data_dir, args.split, args.method,
                                                    args.target, args.limit)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0
