"""`classndiff` command: train, sample, classify, evaluate, export, calibrate. Thin: every
command is a few lines over the pipeline, the trainer or the evaluator."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from classndiff.labels import DX_CODES, SEXES, TONE_GROUPS
from classndiff.trust.threshold import DEFAULT_TARGET_SENSITIVITY


def _parse_value(text: str):  # noqa: ANN202
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def cmd_train(args: argparse.Namespace) -> int:
    from classndiff.config import ClassNDiffConfig
    from classndiff.training.trainer import train

    config = ClassNDiffConfig.from_json(args.config)
    overrides = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        overrides[key] = _parse_value(value)
    if args.data_dir:
        overrides["train.data_dir"] = str(args.data_dir)
    if args.max_steps:
        overrides["train.max_steps"] = args.max_steps
    if args.time_budget:
        overrides["train.time_budget_s"] = args.time_budget
    config = config.override(overrides)
    command = shlex.join(["classndiff", *sys.argv[1:]]) if sys.argv[1:2] == ["train"] else None
    metrics = train(config, args.output_dir, resume=args.resume, step_kind=args.step_kind,
                    init_from=args.init_from, command=command)
    print(json.dumps({"output_dir": str(args.output_dir), "validation": metrics}, indent=2))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from classndiff.pipelines.pipeline import ClassNDiffPipeline

    pipe = ClassNDiffPipeline.from_pretrained(args.weights)
    out = pipe.generate(dx=args.dx, skin_tone=args.skin_tone, sex=args.sex,
                        num_images=args.num_images, steps=args.steps,
                        guidance_scale=args.guidance_scale, seed=args.seed,
                        sampler=args.sampler, keep_only_agreeing=args.keep_only_agreeing)
    folder = Path(args.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{out.settings['dx'] or 'any'}_{out.settings['skin_tone'] or 'any'}"
    files = []
    for image, seed, confidence in zip(out.images, out.seeds, out.confidences):
        path = folder / f"{stem}_seed{seed}.png"
        image.save(path)
        files.append({"file": path.name, "seed": seed, "confidence": round(confidence, 4)})
    sidecar = folder / f"{stem}_seed{out.settings['seed']}.json"
    sidecar.write_text(json.dumps({**out.settings, "images": files}, indent=2) + "\n")
    print(f"wrote {len(files)} images and {sidecar} (SYNTHETIC images, not patient data)")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from classndiff.pipelines.pipeline import ClassNDiffPipeline

    pipe = ClassNDiffPipeline.from_pretrained(args.weights)
    results, failed = [], 0
    for path in args.images:
        try:
            d = pipe.diagnose(path)
            results.append({"image": str(path), **d.to_dict()})
        except ValueError as error:
            failed += 1
            results.append({"image": str(path), "error": str(error)})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        header = (f"{'image':40s} {'prediction':>10s} {'conf':>6s} {'malignant':>9s} "
                  f"{'call':>10s}")
        print(header)
        for r in results:
            if "error" in r:
                print(f"{r['image'][-40:]:40s} error: {r['error']}")
            else:
                prediction = r["prediction"] or "abstain"
                call = {True: "suspicious", False: "not flagged"}.get(r["malignant_call"], "—")
                print(f"{r['image'][-40:]:40s} {prediction:>10s} {r['confidence']:6.3f} "
                      f"{r['malignant']:9.3f} {call:>10s}")
                if r.get("reason"):
                    print(f"{'':40s} {r['reason']}")
        threshold = next((r["malignant_threshold"] for r in results
                          if r.get("malignant_threshold") is not None), None)
        if threshold is not None:
            print(f"call: P(malignant) ≥ {threshold:.3f}, the threshold fitted on validation "
                  "for the sensitivity in the weights' calibration (suspicious = flagged).")
        print("Research demo, not a medical device.")
    return 1 if failed and failed == len(args.images) else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.report:
        return _evaluate_report(args)
    from classndiff.evaluation.evaluate import evaluate_classification, write_json
    from classndiff.pipelines.pipeline import ClassNDiffPipeline

    pipe = ClassNDiffPipeline.from_pretrained(args.weights, fallback=False)
    result = evaluate_classification(pipe, args.data_dir, args.split, limit=args.limit)
    output = args.output or (Path(pipe.weights_path) / "metrics.json"
                             if Path(str(args.weights)).exists() else Path("metrics.json"))
    write_json(result, output)
    print(json.dumps(result["classification"], indent=2))
    print(f"wrote {output}")
    return 0


def _evaluate_command(args: argparse.Namespace) -> str:
    """The command line that regenerates a report, written at the top of report.md: the
    options that differ from the parser's own defaults (and the compared model's name)."""
    defaults = vars(build_parser().parse_args(["evaluate", str(args.weights)]))
    parts = ["classndiff", "evaluate", str(args.weights), "--report", str(args.report)]
    for dest in ("data_dir", "evaluator", "compare", "compare_name", "generate_per_cell",
                 "fairness_augment", "bootstrap", "cas_steps", "fairness_steps", "fd_reps",
                 "saliency_methods", "saliency_limit", "limit", "seed"):
        value = getattr(args, dest)
        named = dest == "compare_name" and args.compare is not None
        if value is not None and (value != defaults[dest] or named):
            parts += ["--" + dest.replace("_", "-"), str(value)]
    return shlex.join(parts)


def _evaluate_report(args: argparse.Namespace) -> int:
    import time

    from classndiff.evaluation.report import build_report

    started = time.perf_counter()
    methods = [m for m in (args.saliency_methods or "").split(",") if m.strip()]
    result = build_report(
        args.weights, args.report, data_dir=args.data_dir, evaluator_dir=args.evaluator,
        compare=args.compare, compare_name=args.compare_name,
        generate_per_cell=args.generate_per_cell, limit=args.limit,
        fairness_augment=args.fairness_augment, reps=args.bootstrap, seed=args.seed,
        cas_steps=args.cas_steps, fairness_steps=args.fairness_steps, fd_reps=args.fd_reps,
        saliency_methods=methods, saliency_limit=args.saliency_limit,
        command=_evaluate_command(args),
        progress=lambda text: print(f"[{time.perf_counter() - started:7.1f} s] {text}",
                                    flush=True))
    c = result["classification"]
    print(json.dumps({k: c[k] for k in ("accuracy", "balanced_accuracy", "macro_auc",
                                        "malignant_auc", "ece")}, indent=2))
    print(f"wrote {Path(args.report) / 'report.md'} and metrics.json")
    return 0


def cmd_train_evaluator(args: argparse.Namespace) -> int:
    from classndiff.training.evaluator import EvaluatorConfig, train_evaluator

    overrides = {k: v for k, v in (("epochs", args.epochs), ("backbone", args.backbone),
                                   ("image_size", args.image_size), ("steps", args.steps),
                                   ("batch_size", args.batch_size), ("seed", args.seed))
                 if v is not None}
    info = train_evaluator(args.output_dir, args.data_dir, EvaluatorConfig(**overrides),
                           work_dir=args.work_dir, resume=args.resume, limit=args.limit)
    print(json.dumps({"output_dir": str(args.output_dir), **info}, indent=2))
    return 0


def cmd_train_autoencoder(args: argparse.Namespace) -> int:
    from classndiff.training.autoencoder import AutoencoderConfig, train_autoencoder

    config = AutoencoderConfig()
    overrides = {k: _parse_value(v) for k, _, v in
                 (item.partition("=") for item in args.set or [])}
    unknown = set(overrides) - set(vars(config))
    if unknown:
        raise SystemExit(f"unknown autoencoder setting(s): {', '.join(sorted(unknown))}")
    if args.time_budget:
        overrides["time_budget_s"] = args.time_budget
    config = AutoencoderConfig.from_dict({**vars(config), **overrides})
    metrics = train_autoencoder(args.output_dir, config, args.data_dir, resume=args.resume)
    print(json.dumps({"output_dir": str(args.output_dir), "validation": metrics}, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from classndiff.evaluation.export import export_folder

    folder = export_folder(args.weights, args.output_dir, repo_id=args.repo_id)
    print(f"exported to {folder}")
    if args.push:
        from classndiff.hub import push_to_hub

        if not args.repo_id:
            print("--push needs --repo-id", file=sys.stderr)
            return 2
        print(push_to_hub(folder, args.repo_id, private=not args.public))
    return 0


def cmd_graft(args: argparse.Namespace) -> int:
    from classndiff.hub import graft_denoiser

    print("wrote", graft_denoiser(args.weights, args.denoiser_from,
                                  args.output_dir or args.weights, args.new_denoiser,
                                  args.decoder_from))
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from classndiff.evaluation.card import write_model_card
    from classndiff.evaluation.card_figures import plot_training_log, sample_grid
    from classndiff.pipelines.pipeline import ClassNDiffPipeline

    out = Path(args.output_dir or args.weights)
    if args.log:
        for i, log in enumerate(args.log, start=1):
            name = "training_curves.png" if i == 1 else f"training_curves_stage{i}.png"
            print("wrote", plot_training_log(log, out / name))
    if args.card_only:
        print("wrote", write_model_card(out))
        return 0
    pipe = ClassNDiffPipeline.from_pretrained(args.weights, device="cpu")
    print("wrote", sample_grid(pipe, out / "samples_grid.png", per_tone=args.per_tone,
                               seed=args.seed))
    print("wrote", write_model_card(out))
    return 0


def cmd_examples(args: argparse.Namespace) -> int:
    from classndiff.evaluation.card_figures import select_examples
    from classndiff.pipelines.pipeline import ClassNDiffPipeline
    from classndiff.training.evaluator import load_evaluator

    pipe = ClassNDiffPipeline.from_pretrained(args.weights, device="cpu")
    evaluator = load_evaluator(args.evaluator)
    chosen = select_examples(pipe, evaluator, args.output_dir, per_class=args.per_class,
                             candidates=args.candidates, seed=args.seed)
    agree = sum(c["evaluator_agrees"] for c in chosen)
    accepted = sum(c["passes_abstention_check"] for c in chosen)
    same = sum(c["pipeline_prediction"] == c["diagnosis"] for c in chosen)
    print(f"wrote {len(chosen)} examples to {args.output_dir}; the evaluator agrees with "
          f"{agree} of them; the pipeline accepts {accepted} as dermoscopy-like and "
          f"diagnoses {same} as the class they were made for")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from classndiff.cli.calibrate import calibrate_folder

    result = calibrate_folder(args.weights, args.data_dir, args.report, args.percentile,
                              train_limit=args.train_limit, progress=True,
                              malignant_sensitivity=args.malignant_sensitivity)
    print(json.dumps(result, indent=2))
    return 0


def _fraction(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value:g}")
    return value


# Long by nature: one argparse declaration per option of every command, no logic.
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="classndiff",
        description="Class-N-Diff: diagnose and generate dermoscopic lesions with one model. "
                    "Research demo, not a medical device.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (or resume) a model")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--init-from", type=Path, metavar="WEIGHTS",
                   help="start from exported weights (fresh optimizer and schedule); "
                        "with --resume, only while the output folder has no checkpoint")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="stop after this long (the LR schedule decays to fit)")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lambda_cls=0")
    p.add_argument("--step-kind", choices=("joint", "upstream"), default="joint",
                   help="joint (one pass) or upstream-style (extra pass; ablation only)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate synthetic lesions (PNGs + a JSON sidecar)")
    p.add_argument("weights", nargs="?", default=None,
                   help="folder, Hub id or id@revision (default: the embedded weights)")
    p.add_argument("--dx", default="mel", choices=[*DX_CODES, "any"])
    p.add_argument("--skin-tone", default=None, choices=[*TONE_GROUPS, "any"])
    p.add_argument("--sex", default=None, choices=[*SEXES, "any"])
    p.add_argument("-n", "--num-images", type=int, default=4)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance-scale", type=float)
    p.add_argument("--sampler", choices=("dpm++", "ddim", "ddpm"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-only-agreeing", action="store_true")
    p.add_argument("--output-dir", type=Path, default=Path("samples"))
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("classify", help="classify dermoscopic images")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--weights", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("evaluate", help="metrics on a split, to JSON; --report: the full report")
    p.add_argument("weights", nargs="?", default="weights/embedded")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--limit", type=int, help="evaluate the first N images only (smoke tests)")
    p.add_argument("--output", type=Path, help="JSON path (default: WEIGHTS/metrics.json)")
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="write DIR/report.md + metrics.json + plots (test split)")
    p.add_argument("--evaluator", default="weights/evaluator",
                   help="the independent evaluator's folder (generation metrics)")
    p.add_argument("--compare", metavar="WEIGHTS", help="a second model for the ablation table")
    p.add_argument("--compare-name", default="lambda0")
    p.add_argument("--generate-per-cell", type=int, default=0, metavar="N",
                   help="images per (dx, tone) cell, tone in any/lighter/brown/darker "
                        "(0: no generation metrics)")
    p.add_argument("--fairness-augment", type=int, default=0, metavar="N",
                   help="fairness experiment: N synthetic images per class of each of the "
                        "brown and darker cells added to a small classifier's training set")
    p.add_argument("--bootstrap", type=int, default=1000, help="lesion bootstrap resamples")
    p.add_argument("--cas-steps", type=int, default=300,
                   help="step budget of the CAS classifier (0: skip CAS)")
    p.add_argument("--fairness-steps", type=int, default=600)
    p.add_argument("--fd-reps", type=int, default=30, help="bootstrap resamples for FD's CI")
    p.add_argument("--saliency-methods", default="gradcam,gradcam++",
                   help="comma-separated CAM methods ('' to skip)")
    p.add_argument("--saliency-limit", type=int, help="first N test images for saliency")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train-evaluator",
                       help="train the independent evaluator (real training images only)")
    p.add_argument("--output-dir", type=Path, default=Path("weights/evaluator"))
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps", type=int, help="a step budget instead of epochs")
    p.add_argument("--backbone", help="timm model name (default resnet10t)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--work-dir", type=Path,
                   help="resumable checkpoints (default runs/<output name>-work)")
    p.add_argument("--resume", action="store_true", help="continue from the work-dir checkpoint")
    p.add_argument("--limit", type=int, help="first N images of each split (smoke tests)")
    p.set_defaults(func=cmd_train_evaluator)

    p = sub.add_parser("train-autoencoder",
                       help="train the small autoencoder of a latent-space denoiser")
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--time-budget", type=float, metavar="SECONDS")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting, e.g. --set batch_size=16")
    p.set_defaults(func=cmd_train_autoencoder)

    p = sub.add_parser("export", help="a Hub-ready folder with a model card")
    p.add_argument("weights")
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--repo-id", help="Hub repo id to name in the card (and to push to)")
    p.add_argument("--push", action="store_true", help="upload to the Hub (only when asked)")
    p.add_argument("--public", action="store_true", help="with --push: a public repo")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("graft", help="a weights folder with the denoiser of a run fine-tuned "
                       "from it (classifier and its measurements kept)")
    p.add_argument("weights")
    p.add_argument("--denoiser-from", required=True, type=Path, help="the run's output folder")
    p.add_argument("--output-dir", type=Path, help="default: the weights folder itself")
    p.add_argument("--new-denoiser", action="store_true",
                   help="the run trained its own denoiser (not fine-tuned from WEIGHTS; its "
                   "architecture may differ): its stages are added to the record")
    p.add_argument("--decoder-from", type=Path,
                   help="an autoencoder folder whose decoder (fine-tuned on the bundled "
                   "encoder: train-autoencoder --set train_encoder=false) replaces the bundled one")
    p.set_defaults(func=cmd_graft)

    p = sub.add_parser("figures", help="model card: training curves, a sample grid, MODEL_CARD.md")
    p.add_argument("weights", nargs="?", default=None)
    p.add_argument("--log", type=Path, nargs="*", default=[],
                   help="the trainer's log.csv of each training stage, in order")
    p.add_argument("--output-dir", type=Path, help="default: the weights folder")
    p.add_argument("--per-tone", type=int, default=2)
    p.add_argument("--card-only", action="store_true",
                   help="only re-render MODEL_CARD.md from the JSON files")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("examples", help="generated examples per class, chosen by the evaluator")
    p.add_argument("weights", nargs="?", default=None)
    p.add_argument("--evaluator", type=Path, default=Path("weights/evaluator"))
    p.add_argument("--output-dir", type=Path, default=Path("examples"))
    p.add_argument("--per-class", type=int, default=2)
    p.add_argument("--candidates", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_examples)

    p = sub.add_parser("calibrate", help="fit the temperature, the malignant threshold and the "
                                         "abstention statistics (rewrites the weights folder)")
    p.add_argument("weights", help="a local weights folder (config.json + model.safetensors)")
    p.add_argument("--data-dir", type=Path, help="HAM10000-layout folder (default: the config's)")
    p.add_argument("--report", type=Path,
                   help="folder for reliability_val.png + calibration.json (default: WEIGHTS)")
    p.add_argument("--percentile", type=float, default=99.5,
                   help="abstention thresholds: this percentile of validation scores")
    p.add_argument("--train-limit", type=int, help="fit on the first N training images only")
    p.add_argument("--malignant-sensitivity", type=_fraction,
                   default=DEFAULT_TARGET_SENSITIVITY, metavar="S",
                   help="the malignant call: the highest P(malignant) threshold whose "
                        "validation sensitivity is at least S (default %(default)s)")
    p.set_defaults(func=cmd_calibrate)

    # The measurement harnesses parse their own options (`classndiff trust --help`): `main`
    # hands them the rest of the command line; these entries only list them.
    for name, text in HARNESSES.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


HARNESSES = {"trust": "measure the trust bars of a weights folder (after calibrate)",
             "saliency": "CAM energy inside the expert lesion masks; diagnose latency"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in HARNESSES:
        import classndiff.cli.checks as checks

        return getattr(checks, f"{argv[0]}_main")(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ValueError as error:  # bad input or arguments: a message, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
