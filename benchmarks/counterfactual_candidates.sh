#!/usr/bin/env bash
# How many redraws a counterfactual makes before the model's own classifier picks the one most
# like the target (`sampling.counterfactual_candidates`), chosen on the VALIDATION split.
# Naevus → melanoma stays under the 0.70 bar (0.69 val, 0.625 test) at every strength,
# guidance, classifier-guidance step and margin tried in sessions 18–20: one redraw of a naevus
# towards melanoma often comes out as a darker naevus. The generator draws a different lesion
# for each seed; picking among its drawings (rejection sampling, as `generate`'s
# keep_only_agreeing does) is not a nudge of pixels along the classifier's gradient, and
# validity is still read by the independent evaluator only.
#
# Rule, written before these numbers were seen (session 23): at the weights' strength, guidance,
# margin and share, PER_PAIR validation images of each pair (nv → mel, bkl → mel, mel → nv),
# for each K of SETTINGS: the candidates are the K whose median seconds per counterfactual is
# ≤ 4.0 on this CPU (bar 5 s), whose outside ÷ inside change (expert mask) is ≤ 0.25 for every
# pair, and whose Fréchet distance to real images of the target is at most 1.1 × K = 1's for
# every pair (a pick must not buy the evaluator's verdict with less believable images). Among
# them the smallest K whose worst validity (independent evaluator, min over the pairs) is
# ≥ 0.75; when none is, the highest worst validity, ties within 0.03 going to the smaller K.
# It becomes the weights' default only if its worst validity beats K = 1's by more than 0.03.
# Then the test split once (benchmarks/counterfactuals.py), figure looked at.
#
#   bash benchmarks/counterfactual_candidates.sh [WEIGHTS] [OUT]
set -euo pipefail
WEIGHTS=${1:-weights/embedded}
OUT=${2:-reports/embedded/counterfactual_candidates}
mkdir -p "$OUT"
for k in ${SETTINGS:-1 4 8}; do
  [ -f "$OUT/k$k.json" ] || python benchmarks/counterfactuals.py --weights "$WEIGHTS" \
      --split val --per-pair "${PER_PAIR:-48}" --sweep --candidates "$k" \
      --output "$OUT/k$k.json" --figure "$OUT/k$k.png" > "$OUT/k$k.log" 2>&1
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
records = {int(p.stem[1:]): json.loads(p.read_text())["pairs"] for p in out.glob("k*.json")}
base = {pair: arms["target"] for pair, arms in records[1].items()}
rows = {}
for k, pairs in sorted(records.items()):
    arms = {pair: a["target"] for pair, a in pairs.items()}
    worst = min(a["validity"] for a in arms.values())
    ok = (max(a["seconds_median"] for a in arms.values()) <= 4.0
          and max(a["outside_over_inside"] for a in arms.values()) <= 0.25
          and all(a["fd_to_real_target"] <= 1.1 * base[p]["fd_to_real_target"]
                  for p, a in arms.items()))
    print(f"K={k}", {p: (round(a["validity"], 3), round(a["outside_over_inside"], 3),
                         round(a["fd_to_real_target"]), round(a["seconds_median"], 2))
                     for p, a in arms.items()}, "" if ok else "(not a candidate)")
    if ok:
        rows[k] = worst
passing = [k for k, v in rows.items() if v >= 0.75]
if passing:
    chosen = min(passing)
else:
    top = max(rows.values())
    chosen = min(k for k, v in rows.items() if v >= top - 0.03)
adopt = chosen != 1 and rows[chosen] > rows.get(1, min(a["validity"] for a in base.values())) + 0.03
print(json.dumps({"best": chosen, "worst_validity": rows[chosen],
                  "k1_worst_validity": min(a["validity"] for a in base.values()),
                  "candidates": chosen if adopt else 1}))
PY
