#!/usr/bin/env bash
# Counterfactual defaults for a generator, chosen on the VALIDATION split: validity by the
# independent evaluator at strengths 0.5–0.9 for each target guidance, records in OUT.
#
# Rule, written before these numbers were seen (session 15): the default (strength, guidance)
# is the one with the highest worst-pair validity over nv→mel, bkl→mel and mel→nv (ties: the
# lower strength, then the lower guidance: the smaller edit). Proximity is checked after, on
# the test split, by benchmarks/counterfactuals.py (outside ≤ 1/3 of inside).
#
#   bash benchmarks/counterfactual_defaults.sh [WEIGHTS] [OUT]
set -euo pipefail
WEIGHTS=${1:-weights/embedded}
OUT=${2:-reports/embedded/counterfactual_defaults}
mkdir -p "$OUT"
for guidance in ${GUIDANCES:-3 4.5 6}; do
  [ -f "$OUT/g$guidance.json" ] || python benchmarks/counterfactuals.py --weights "$WEIGHTS" \
      --split val --guidance "$guidance" --strength 0.6 --sweep 0.5 0.7 0.8 0.9 \
      --output "$OUT/g$guidance.json" > "$OUT/g$guidance.log" 2>&1
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
rows = []
for path in sorted(Path(sys.argv[1]).glob("g*.json")):
    result = json.loads(path.read_text())
    curves = {pair: s["validity_by_strength"] for pair, s in result["sweep"].items()}
    for strength in next(iter(curves.values())):
        worst = min(c[strength] for c in curves.values())
        rows.append((worst, -float(strength), -result["guidance_scale"], strength,
                     result["guidance_scale"], {p: round(c[strength], 3) for p, c in curves.items()}))
for row in sorted(rows, reverse=True):
    print(f"strength {row[3]} guidance {row[4]}: worst {row[0]:.3f} {row[5]}")
best = max(rows)
print(json.dumps({"chosen": {"strength": float(best[3]), "guidance": best[4],
                             "worst_pair_validity": best[0]}}))
PY
