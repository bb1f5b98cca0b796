"""Put generator yardsticks side by side (the JSON files `generator_yardstick.py --output`
wrote), e.g. the paper's claim: the joint model (λ > 0) against λ = 0 at the same budget.

    python benchmarks/compare_yardsticks.py \\
        --run "joint λ=0.05=reports/embedded/joint_vs_plain/joint.json" \\
        --run "λ=0=reports/embedded/joint_vs_plain/plain.json" \\
        --markdown reports/embedded/joint_vs_plain/README.md

NAME=PATH splits at the last "=". Ends with ONE JSON line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _bench import emit

MEASURES = (("fd", "FD (ImageNet Lite0)", "lower"), ("kid", "KID", "lower"),
            ("precision", "precision", "higher"), ("recall", "recall", "higher"),
            ("diversity_ratio", "diversity ÷ real", "higher"),
            ("blockiness", "blockiness", "lower"),
            ("class_fidelity_macro", "class fidelity (evaluator)", "higher"),
            ("fd_evaluator", "FD (evaluator's features)", "lower"),
            # Against the real images re-weighted to the generated set's class mix.
            ("fd_mix_matched", "FD (ImageNet Lite0), class mix matched", "lower"),
            ("fd_evaluator_mix_matched", "FD (evaluator's features), class mix matched",
             "lower"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, metavar="NAME=PATH")
    p.add_argument("--markdown", type=Path)
    args = p.parse_args()
    runs = {}
    for item in args.run:
        name, _, path = item.rpartition("=")
        runs[name] = json.loads(Path(path).read_text())
    header = "| measure | " + " | ".join(runs) + " | real floor |"
    lines = [header, "|" + "---|" * (len(runs) + 2)]
    # The same real images in every record; an older record may lack a newer measure, so
    # each floor comes from the first record that has it (in the table and the JSON alike).
    floor: dict[str, float] = {}
    for record in runs.values():
        for key, value in record["real_floor"].items():
            floor.setdefault(key, value)
    for key, label, better in MEASURES:
        values = [r["model"].get(key) for r in runs.values()]
        cells = [("—" if v is None else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}")
                 for v in values]
        f = floor.get(key)
        lines.append(f"| {label} ({better} is better) | " + " | ".join(cells) +
                     f" | {'—' if f is None else round(f, 3)} |")
    for key, label in (("params_M", "denoiser parameters (M)"), ("steps", "training steps"),
                       ("images_seen", "images seen"),
                       ("training_minutes", "training minutes (wall clock)")):
        cells = [str(r.get("denoiser", {}).get(key, "—")) for r in runs.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " | |")
    lines.append("| 4 images, seconds | " + " | ".join(
        f"{r.get('seconds_4_images', float('nan')):.1f}" for r in runs.values()) + " | |")
    tones = [", ".join(f"{k} {v:.0f}°" for k, v in r.get("tone_median_ita", {}).items())
             for r in runs.values()]
    lines.append("| median skin ITA by requested tone | " + " | ".join(tones) + " | |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    emit({"benchmark": "compare_yardsticks",
          "runs": {n: r["model"] for n, r in runs.items()}, "real_floor": floor})


if __name__ == "__main__":
    main()
