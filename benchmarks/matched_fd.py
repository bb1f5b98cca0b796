"""The paper's claim (issue #10) at matched FD, read from joint_at_matched_fd.sh's records.

Rule (written before any point was measured, session 25): F* is the λ = 0 arm's validation
FD at the shipped guidance (4.5). For each arm, its best class fidelity (independent
evaluator) among its guidance settings whose FD ≤ F*. The claim is met if the joint arm's is
higher than the λ = 0 arm's by more than 0.009 (two images in 224, the noise of the count).
Session 33 adds: where the records carry FD in the independent evaluator's features too
(`fd_evaluator`, from session 33 on), a point must also be at or under the λ = 0 arm's
evaluator-feature FD at 4.5 — a term trained on features of a network fine-tuned from the
yardstick's ImageNet weights could lower the ImageNet FD by construction. Older records,
without it, are read as before.
Why: the joint term does part of guidance's job (it makes each class easier to recognise), so
at equal guidance it overshoots into classes drawn alike; whether the term helps is whether it
buys more fidelity at the same FD, each arm given the same menu of guidance scales.

Prints the table (markdown) and, last, one JSON line with the verdict.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

SHIPPED_GUIDANCE = 4.5
NOISE = 0.009


def load(folder: Path) -> dict[str, dict[float, dict]]:
    arms: dict[str, dict[float, dict]] = {}
    for path in sorted(folder.glob("*-g*.json")):
        match = re.fullmatch(r"(\w+)-g([\d.]+)\.json", path.name)
        if match:
            arms.setdefault(match[1], {})[float(match[2])] = json.loads(path.read_text())["model"]
    return arms


def best_fidelity(points: dict[float, dict], fd_cap: float,
                  evaluator_fd_cap: float | None = None) -> tuple[float | None, float]:
    """(guidance, fidelity) of the highest fidelity with FD ≤ fd_cap (and, given a cap, FD in
    the evaluator's features ≤ evaluator_fd_cap); (None, 0) if none."""
    eligible = [(m["class_fidelity_macro"], g) for g, m in points.items()
                if m["fd"] <= fd_cap and (evaluator_fd_cap is None
                                          or m.get("fd_evaluator", float("inf"))
                                          <= evaluator_fd_cap)]
    if not eligible:
        return None, 0.0
    fidelity, guidance = max(eligible)
    return guidance, fidelity


def reading(guidance: float | None, fidelity: float) -> str:
    return ("no guidance tried reaches FD ≤ F*" if guidance is None
            else f"{fidelity:.3f} (guidance {guidance:g})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    args = p.parse_args()
    arms = load(args.folder)
    if set(arms) != {"joint", "plain"} or SHIPPED_GUIDANCE not in arms["plain"]:
        raise SystemExit(f"need joint-g*.json and plain-g*.json (plain-g{SHIPPED_GUIDANCE} "
                         f"among them) in {args.folder}")
    print("| arm | guidance | FD | FD (evaluator's features) | precision / recall | diversity "
          "| blockiness | fidelity |")
    print("|---|---|---|---|---|---|---|---|")
    for arm in ("joint", "plain"):
        for g, m in sorted(arms[arm].items()):
            second = m.get("fd_evaluator")
            print(f"| {arm} | {g:g} | {m['fd']:.1f} | {'—' if second is None else f'{second:.1f}'} "
                  f"| {m['precision']:.2f} / {m['recall']:.2f} "
                  f"| {m['diversity_ratio']:.3f} | {m['blockiness']:.2f} "
                  f"| {m['class_fidelity_macro']:.3f} |")
    fd_cap = arms["plain"][SHIPPED_GUIDANCE]["fd"]
    evaluator_fd_cap = arms["plain"][SHIPPED_GUIDANCE].get("fd_evaluator")
    joint_g, joint_fidelity = best_fidelity(arms["joint"], fd_cap, evaluator_fd_cap)
    plain_g, plain_fidelity = best_fidelity(arms["plain"], fd_cap, evaluator_fd_cap)
    met = joint_g is not None and joint_fidelity > plain_fidelity + NOISE
    caps = f"F* (λ = 0 at guidance {SHIPPED_GUIDANCE:g}) = {fd_cap:.1f}" + (
        "" if evaluator_fd_cap is None else f", {evaluator_fd_cap:.1f} in the evaluator's features")
    print(f"\n{caps}; best fidelity with FD ≤ F*: joint {reading(joint_g, joint_fidelity)}, "
          f"λ = 0 {reading(plain_g, plain_fidelity)}; claim {'met' if met else 'not met'}")
    print(json.dumps({"fd_cap": fd_cap, "evaluator_fd_cap": evaluator_fd_cap,
                      "joint": [joint_g, joint_fidelity], "plain": [plain_g, plain_fidelity],
                      "claim_met": met}))


if __name__ == "__main__":
    main()
