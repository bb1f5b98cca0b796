#!/usr/bin/env bash
# A counterfactual strength per target diagnosis, chosen on the VALIDATION split. One strength
# for every target left melanoma → naevus at 0.52 on test at strength 0.9 while a smaller
# redraw (0.6) made 0.91 (session 18's sweep): making a lesion benign may need less change
# than making it malignant.
#
# Rule, written before these numbers were seen (session 19): at the weights' guidance and
# margin, for each target t of the bar's pairs (mel: nv → mel and bkl → mel; nv: mel → nv),
# the candidates are the strengths whose outside ÷ inside (expert mask) is ≤ 0.25 for every
# pair into t; among them the highest worst validity over the pairs into t (independent
# evaluator), ties within 0.03 (about one image of 48) going to the lower strength. It becomes
# t's own strength (sampling.counterfactual_strength_by_target) only if it beats the general
# strength's worst validity by more than 0.03; other targets keep the general strength. Then
# the test split is measured once, at the weights' defaults (benchmarks/counterfactuals.py).
#
#   bash benchmarks/counterfactual_strength.sh [WEIGHTS] [OUT]     # WRITE=1: into WEIGHTS
set -euo pipefail
WEIGHTS=${1:-weights/embedded}
OUT=${2:-reports/embedded/counterfactual_strength}
PER_PAIR=${PER_PAIR:-48}
mkdir -p "$OUT"
[ -f "$OUT/val.json" ] || python benchmarks/counterfactuals.py --weights "$WEIGHTS" \
    --split val --per-pair "$PER_PAIR" --strength "${GENERAL:-0.9}" \
    --sweep 0.5 0.6 0.7 0.8 0.9 1.0 \
    --output "$OUT/val.json" --figure "$OUT/val.png" > "$OUT/val.log" 2>&1
python - "$OUT/val.json" "$WEIGHTS" "${WRITE:-0}" <<'PY'
import json, sys
from pathlib import Path
record, weights, write = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), sys.argv[3]
general = f"{record['strength']:g}"
sweep = record["sweep"]
chosen = {}
for target in sorted({pair.split("->")[1] for pair in sweep}):
    pairs = [p for p in sweep if p.endswith("->" + target)]
    rows = []
    for level in sweep[pairs[0]]["validity_by_strength"]:
        worst = min(sweep[p]["validity_by_strength"][level] for p in pairs)
        ratio = max(sweep[p]["outside_over_inside_by_strength"][level] for p in pairs)
        print(f"→ {target} strength {level}: worst validity {worst:.3f}, "
              f"worst outside ÷ inside {ratio:.3f}")
        if ratio <= 0.25:
            rows.append((float(level), worst))
    best = max(v for _, v in rows)
    level, worst = min((s, v) for s, v in rows if v >= best - 0.03)
    base = min(sweep[p]["validity_by_strength"][general] for p in pairs)
    keep = worst <= base + 0.03
    print(f"→ {target}: {level:g} (worst {worst:.3f}) against the general {general} "
          f"({base:.3f}): {'keep the general' if keep else 'its own'}")
    if not keep:
        chosen[target] = level
print(json.dumps({"general": float(general), "strength_by_target": chosen}))
if write == "1":  # through the project's config type: an unknown key fails loudly
    from classndiff.config import ClassNDiffConfig

    path = weights / "config.json"
    ClassNDiffConfig.from_json(path).override(
        {"sampling.counterfactual_strength_by_target": chosen}).to_json(path)
    print(f"written into {path}")
PY
