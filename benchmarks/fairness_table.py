"""The fairness table: one row per trained arm (baseline, adversarial skin-tone head, re-tint
augmentation, ...), every figure measured here from its weights folder, and the arm to ship
chosen by a rule fixed before the test split is looked at.

    python benchmarks/fairness_table.py \\
        --arm baseline=runs/baseline --arm retint=runs/retint --arm adversarial=runs/adv \\
        --output reports/embedded/fairness_table.json --markdown reports/embedded/fairness_table.md
    python benchmarks/fairness_table.py --quick

Per arm, on the lesion-grouped test split: accuracy, balanced accuracy and malignant AUC
overall and on the brown skin-tone group, with lesion-bootstrap 95 % intervals; the
skin-tone counterfactual (classndiff/trust/fairness.py) to the brown and the darker group: flip
rate and the change of malignant AUC; the adversarial tone head's last training accuracy
(where the arm has one) beside the majority-group rate it should fall towards.

Selection rule (validation split only): among the arms whose validation accuracy and
malignant AUC are each at most 0.01 below the baseline's, ship the one with the lowest
validation flip rate to darker skin (ties: higher validation malignant AUC).

A re-tinted lesion is a proxy: it shows whether the classifier leans on the colour of the
skin around the lesion, not how it performs on patients with dark skin. Ends with ONE JSON
line."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _bench import (
    MaskedSplit,
    emit,
    environment,
    load_pipe,
    parser,
    print_table,
    probabilities,
)

SELECTION_TOLERANCE = 0.01


def number(value: float | None, digits: int = 3) -> str:
    """A figure, or — where it is undefined (a group without both classes)."""
    return "—" if value is None or value != value else f"{value:.{digits}f}"


def signed(value: float | None) -> str:
    return "—" if value is None or value != value else f"{value:+.3f}"


def tone_head_accuracy(weights: str | None) -> float | None:
    """The last logged accuracy of the adversarial tone head in the arm's training log (in
    the folder, or beside it for a run's `last/` export)."""
    if not weights:
        return None
    folder = Path(weights)
    config = json.loads((folder / "config.json").read_text()) if (
        folder / "config.json").exists() else {}
    if not config.get("train", {}).get("lambda_adv"):
        return None  # no adversarial head in this arm
    for path in (folder / "log.csv", folder / "training_log.csv", folder.parent / "log.csv"):
        if path.exists():
            with path.open(newline="") as f:
                values = [r.get("adv_accuracy") for r in csv.DictReader(f)]
            values = [float(v) for v in values if v not in (None, "")]
            return values[-1] if values else None
    return None


def fingerprint(weights: str | None) -> str | None:
    """sha256 of an arm's model.safetensors and config.json (the temperature and test-time
    views change its answers as much as its weights do); None for the --quick random model."""
    if not weights:
        return None
    digest = hashlib.sha256()
    for name in ("model.safetensors", "config.json"):
        digest.update((Path(weights) / name).read_bytes())
    return digest.hexdigest()


def earlier_row(name: str, weights: str | None, mine: str | None,
                earlier: list[tuple[Path, dict[str, Any]]], quick: bool,
                reps: int) -> tuple[dict[str, Any], str] | None:
    """An arm's row from an earlier table that measured the very same model on the same
    splits, and how it was matched. Matched by fingerprint (`mine`, the arm's); a table
    written before rows had one (session 30) is matched by the arm's name and weights folder,
    and the output says so. Never a --quick table for a full one, or one bootstrapped with
    other repetitions."""
    if not weights:
        return None
    for path, table in earlier:
        if bool(table.get("quick")) != quick or table.get("reps", 1000) != reps:
            continue
        for old_name, row in table["arms"].items():
            if row.get("fingerprint") is not None:
                if row["fingerprint"] == mine:
                    return row, f"{path} (same sha256)"
            elif old_name == name and row.get("weights") == weights:
                return row, f"{path} (same name and folder; that table has no fingerprints)"
    return None


def measure(pipe: Any, split: MaskedSplit, reps: int, seed: int) -> dict[str, Any]:
    from classndiff.evaluation.bootstrap import bootstrap, fast_metrics
    from classndiff.evaluation.report.statistics import nest
    from classndiff.trust.fairness import flip_report

    probs = probabilities(pipe, split.images)
    out: dict[str, Any] = {"n": int(len(split.labels))}
    for target in split.retinted:
        report = flip_report(probs, probabilities(pipe, split.retinted[target]), split.labels)
        out[f"flip_rate_{target}"] = report["flip_rate"]
        out[f"malignant_auc_change_{target}"] = (report["malignant_auc_after"]
                                                 - report["malignant_auc_before"])
        out[f"malignant_change_mean_{target}"] = report["malignant_change_mean"]
    # The second proxy: the whole field darkened, the lesion's contrast with its skin kept.
    report = flip_report(probs, probabilities(pipe, split.whole_field["darker"]), split.labels)
    out["flip_rate_darker_whole_field"] = report["flip_rate"]
    out["malignant_auc_change_darker_whole_field"] = (report["malignant_auc_after"]
                                                      - report["malignant_auc_before"])
    brown = split.tone == "brown"

    def stat(index: np.ndarray) -> dict[str, float]:
        values = {f"overall/{k}": v for k, v in
                  fast_metrics(probs[index], split.labels[index]).items()}
        in_brown = index[brown[index]]
        values.update({f"brown/{k}": v for k, v in
                       fast_metrics(probs[in_brown], split.labels[in_brown]).items()})
        return values

    out["ci"] = nest(bootstrap(stat, split.lesion_ids, reps, seed))
    out["brown_images"] = int(brown.sum())
    return out


def choose(rows: dict[str, dict[str, Any]], baseline: str) -> tuple[str, str]:
    """The selection rule of the docstring, on validation figures only."""
    def value(name: str, key: str) -> float:
        found = rows[name]["val"]["ci"]["overall"][key]["value"]
        return float("nan") if found is None else found

    eligible = [name for name in rows
                if value(name, "accuracy") >= value(baseline, "accuracy") - SELECTION_TOLERANCE
                and value(name, "malignant_auc") >= value(baseline, "malignant_auc")
                - SELECTION_TOLERANCE]
    best = min(eligible, key=lambda n: (rows[n]["val"]["flip_rate_darker"],
                                        -value(n, "malignant_auc")))
    rule = (f"validation accuracy and malignant AUC each ≥ the baseline's − "
            f"{SELECTION_TOLERANCE}; then the lowest validation flip rate to darker skin")
    return best, rule


def field_flips(block: dict[str, Any]) -> str:
    """The whole-field flips to darker skin, "—" for a table measured before they were."""
    flips = block.get("flip_rate_darker_whole_field")
    return "—" if flips is None else f"{100 * flips:.1f} %"


def markdown(rows: dict[str, dict[str, Any]], chosen: str, rule: str, majority: float,
             mark: str = "shipped") -> str:
    def ci(block: dict[str, Any]) -> str:
        if block["value"] is None:
            return "—"
        return f"{number(block['value'])} [{number(block['lo'])}, {number(block['hi'])}]"

    lines = ["| arm | accuracy | balanced acc. | malignant AUC | brown: accuracy | "
             "brown: malignant AUC | flips → brown | flips → darker | Δ mal. AUC (darker) "
             "| flips → darker, whole field | tone-head acc. |", "|" + "---|" * 11]
    for name, r in rows.items():
        t = r["test"]
        overall, brown = t["ci"]["overall"], t["ci"]["brown"]
        head = r["tone_head_accuracy"]
        lines.append(
            f"| {name}{f' ({mark})' if name == chosen else ''} | {ci(overall['accuracy'])} | "
            f"{ci(overall['balanced_accuracy'])} | {ci(overall['malignant_auc'])} | "
            f"{ci(brown['accuracy'])} | {ci(brown['malignant_auc'])} | "
            f"{100 * t['flip_rate_brown']:.1f} % | {100 * t['flip_rate_darker']:.1f} % | "
            f"{signed(t['malignant_auc_change_darker'])} | "
            f"{field_flips(t)} | "
            f"{'—' if head is None else f'{head:.2f} (majority {majority:.2f})'} |")
    first = next(iter(rows.values()))["test"]
    lines += ["", f"Test split: {first['n']} images with expert masks, {first['brown_images']} "
              "of them in the brown group (95 % intervals: lesion bootstrap). Flip rate: share "
              "of test images whose top class changes when only the skin around the lesion is "
              "re-tinted to the group's ITA (whole field: the lesion darkened with its skin, "
              "its contrast kept). Chosen on validation by the rule: " + rule + ". "
              "A re-tinted lesion is a proxy, not evidence on patients with dark skin."]
    lines += [f"Row \"{name}\": copied from {r['reused_from']}, the same model measured there."
              for name, r in rows.items() if r.get("reused_from")]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--arm", action="append", default=[], metavar="NAME=WEIGHTS",
                   help="a trained arm; the first is the baseline unless --baseline says")
    p.add_argument("--baseline", default=None)
    p.add_argument("--mark", default="shipped",
                   help="the word beside the chosen arm in the table (e.g. chosen)")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--reps", type=int, default=1000)
    p.add_argument("--output", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--reuse", action="append", default=[], type=Path, metavar="TABLE.json",
                   help="an earlier table: an arm it measured with the same weights is "
                        "copied from it, not measured again")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # NAME=FOLDER, split at the last "=": a name may hold one ("λ = 0").
    arms = dict(a.rsplit("=", 1) for a in args.arm) if args.arm else {"baseline": None}
    baseline = args.baseline or next(iter(arms))
    if baseline not in arms:
        raise SystemExit(f"--baseline {baseline!r} is not one of the arms: {', '.join(arms)}")
    limit, reps = (24, 20) if args.quick else (None, args.reps)

    from classndiff.data import LesionDataset

    pipes = {}
    for name, weights in arms.items():
        args.weights = weights
        pipes[name] = load_pipe(args)
    size = next(iter(pipes.values())).config.model.pixel_size
    splits: dict[str, MaskedSplit] = {}  # built (and re-tinted: minutes) only if a row needs it
    train_tones = np.array([r.get("skin_tone_group") or "unknown" for r in
                            LesionDataset(args.data_dir, "train", image_size=8).rows])
    majority = float(max(np.mean(train_tones == t) for t in np.unique(train_tones)))

    earlier = [(path, json.loads(path.read_text())) for path in args.reuse]
    rows: dict[str, dict[str, Any]] = {}
    for name, pipe in pipes.items():
        mine = fingerprint(arms[name])  # hashed once: the weights are tens of MB
        found = earlier_row(name, arms[name], mine, earlier, args.quick, reps)
        if found:
            print(f"{name}: reused from {found[1]}")
            measured = {s: found[0][s] for s in ("val", "test")}
        else:
            splits = splits or {s: MaskedSplit(args.data_dir, s, size, limit)
                                for s in ("val", "test")}
            measured = {s: measure(pipe, split, reps, args.seed) for s, split in splits.items()}
        rows[name] = {"weights": arms[name], "fingerprint": mine,
                      "tone_head_accuracy": tone_head_accuracy(arms[name]), **measured,
                      **({"reused_from": found[1]} if found else {})}
    chosen, rule = choose(rows, baseline)
    print_table(["arm", "split", "accuracy", "malignant AUC", "flips → brown", "flips → darker",
                 "Δ mal. AUC darker", "flips → darker, whole field"],
                [[name, s, number(r[s]["ci"]["overall"]["accuracy"]["value"]),
                  number(r[s]["ci"]["overall"]["malignant_auc"]["value"]),
                  f"{100 * r[s]['flip_rate_brown']:.1f} %",
                  f"{100 * r[s]['flip_rate_darker']:.1f} %",
                  signed(r[s]["malignant_auc_change_darker"]), field_flips(r[s])]
                 for name, r in rows.items() for s in ("val", "test")])
    print(f"chosen on validation: {chosen}")
    result = {"benchmark": "fairness_table", "arms": rows, "baseline": baseline, "reps": reps,
              "chosen": chosen, "rule": rule, "majority_tone_rate": majority}
    result["bar_flip_rate_10pct"] = bool(rows[chosen]["test"]["flip_rate_darker"] <= 0.10)
    result["bar_flip_rate_below_baseline"] = bool(
        rows[chosen]["test"]["flip_rate_darker"] < rows[baseline]["test"]["flip_rate_darker"])
    result["bar_malignant_auc_change"] = bool(
        rows[chosen]["test"]["malignant_auc_change_darker"] >= -0.02)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(rows, chosen, rule, majority, args.mark))
    result.update(environment(args))
    emit(result, args.output)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
