"""Seconds per training step from a run's log.csv, between its first and its last row (the
start-up before the first logged step is left out). Shared by the scripts that time arms.

    python benchmarks/seconds_per_step.py LOG               # e.g. "0.93 s a step (steps 20–60)"
    python benchmarks/seconds_per_step.py LOG --minutes M   # the steps that fit in M minutes
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path


def seconds_per_step(log: Path) -> tuple[float, int, int]:
    """(seconds a step, first logged step, last logged step) of a training log.csv."""
    with log.open() as f:
        rows = list(csv.DictReader(f))
    first, last = int(rows[0]["step"]), int(rows[-1]["step"])
    if last <= first:
        raise SystemExit(f"{log}: needs two logged steps to time, has steps {first}–{last}")
    return (float(rows[-1]["seconds"]) - float(rows[0]["seconds"])) / (last - first), first, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("log", type=Path, help="a training run's log.csv")
    parser.add_argument("--minutes", type=float, default=None,
                        help="print the steps that fit in these minutes instead")
    args = parser.parse_args()
    per_step, first, last = seconds_per_step(args.log)
    if args.minutes is None:
        print(f"{per_step:.2f} s a step (steps {first}–{last})")
    else:
        print(round(args.minutes * 60 / per_step))


if __name__ == "__main__":
    main()
