"""Two training runs' log.csv side by side at equal steps: where an alignment term stopped
(`train.align_until`: its `align` column reads 0 from then on) and the denoising loss of the
aligned arm minus the other's, while aligned, after the stop and over the last rows.

    python benchmarks/compare_logs.py ALIGNED_LOG PLAIN_LOG [--last 24]

Prints one line a reading and, last, one JSON line."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from statistics import mean


def read(log: Path) -> dict[int, dict[str, float]]:
    with log.open() as f:
        return {int(r["step"]): {k: float(r[k]) for k in ("mse", "align", "seconds")}
                for r in csv.DictReader(f)}


def compare(aligned: dict[int, dict[str, float]], plain: dict[int, dict[str, float]],
            last: int) -> dict:
    steps = sorted(set(aligned) & set(plain))
    if not steps:
        raise SystemExit("the two logs share no logged step")
    # The stop: the first row reading 0 after an aligned one; every row from it should read 0.
    stop = next((s for i, s in enumerate(steps)
                 if i > 0 and aligned[s]["align"] == 0 and aligned[steps[i - 1]]["align"] > 0),
                None)
    on = [s for s in steps if aligned[s]["align"] > 0 and (stop is None or s < stop)]
    off = [s for s in steps if stop is not None and s >= stop]

    def gap(rows: list[int]) -> float | None:
        return round(mean(aligned[s]["mse"] - plain[s]["mse"] for s in rows), 5) if rows else None

    return {"shared_steps": len(steps), "last_aligned_row": on[-1] if on else None,
            "first_row_after_stop": stop,
            "align_zero_after_stop": all(aligned[s]["align"] == 0 for s in off) if off else None,
            "mse_gap_aligned": gap(on), "rows_aligned": len(on),
            "mse_gap_after_stop": gap(off), "rows_after_stop": len(off),
            "mse_gap_last": gap(steps[-last:]), "rows_last": min(last, len(steps)),
            "steps": [max(aligned), max(plain)],
            "stop_seconds": aligned[on[-1]]["seconds"] if on else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("aligned", type=Path, help="log.csv of the arm with train.lambda_align > 0")
    p.add_argument("plain", type=Path, help="log.csv of the λ = 0 arm")
    p.add_argument("--last", type=int, default=24, help="rows at the end to compare (24)")
    args = p.parse_args()
    r = compare(read(args.aligned), read(args.plain), args.last)
    print(f"steps {r['steps'][0]} against {r['steps'][1]}; align > 0 up to the row of step "
          f"{r['last_aligned_row']} ({r['stop_seconds']} s), 0 from step "
          f"{r['first_row_after_stop']} on: {r['align_zero_after_stop']}")
    print(f"denoising loss, aligned − plain at equal steps: {r['mse_gap_aligned']} while aligned "
          f"({r['rows_aligned']} rows), {r['mse_gap_after_stop']} after the stop "
          f"({r['rows_after_stop']}), {r['mse_gap_last']} over the last {r['rows_last']}")
    print(json.dumps({"benchmark": "compare_logs", **r}))


if __name__ == "__main__":
    main()
