#!/usr/bin/env bash
# How far the redrawn region may reach beyond the lesion when the target is melanoma, chosen
# on the VALIDATION split. Naevus → melanoma stays at 0.69 on validation (0.625 on test; bar
# 0.70) at every strength, guidance and classifier-guidance step tried (sessions 18–20): a
# melanoma is usually larger and more irregular than the naevus it is drawn from, and the
# margin (32 px, stopped where its ring would cover 30 % of the skin) bounds how far it may
# grow. Session 16 chose that margin for all targets at once, on the previous generator; the
# redraw towards a benign target needs no room to grow.
#
# Rule, written before these numbers were seen (session 20): at the weights' strength,
# guidance and classifier guidance for mel, PER_PAIR validation images of nv → mel and
# bkl → mel, for each (margin, share) of SETTINGS: the candidates are the settings whose
# outside ÷ inside (expert mask) is ≤ 0.25 for both pairs and whose Fréchet distance to real
# melanomas is at most 1.1 × the current setting's for both (a region grown into the skin
# must not buy the evaluator's verdict with less believable images); among them the highest
# worst validity (independent evaluator), ties within 0.03 going to the lower worst outside ÷
# inside. It becomes mel's own margin only if its worst validity beats the current setting's
# by more than 0.03. Then the test split once (benchmarks/counterfactuals.py), figure looked at.
#
#   bash benchmarks/counterfactual_margin_by_target.sh [WEIGHTS] [OUT]
set -euo pipefail
WEIGHTS=${1:-weights/embedded}
OUT=${2:-reports/embedded/counterfactual_margin_mel}
CURRENT=${CURRENT:-"32 0.3"}  # the weights' margin and share
mkdir -p "$OUT"
IFS=';' read -ra settings <<< "$CURRENT;${SETTINGS:-32 0.45;32 0;48 0.3;48 0.45}"
for setting in "${settings[@]}"; do
  read -r margin share <<< "$setting"
  name="m${margin}_s${share}"
  [ -f "$OUT/$name.json" ] || python benchmarks/counterfactuals.py --weights "$WEIGHTS" \
      --split val --per-pair "${PER_PAIR:-48}" --pairs "nv->mel" "bkl->mel" --sweep \
      --margin "$margin" --margin-share "$share" \
      --output "$OUT/$name.json" --figure "$OUT/$name.png" > "$OUT/$name.log" 2>&1
done
python - "$OUT" "$CURRENT" <<'PY'
import json, sys
from pathlib import Path
out, current = Path(sys.argv[1]), "m{}_s{}".format(*sys.argv[2].split())
records = {p.stem: json.loads(p.read_text())["pairs"] for p in sorted(out.glob("m*_s*.json"))}
base = {pair: arms["target"] for pair, arms in records[current].items()}
rows = {}
for name, pairs in records.items():
    arms = {pair: a["target"] for pair, a in pairs.items()}
    worst = min(a["validity"] for a in arms.values())
    ratio = max(a["outside_over_inside"] for a in arms.values())
    ok = ratio <= 0.25 and all(a["fd_to_real_target"] <= 1.1 * base[p]["fd_to_real_target"]
                               for p, a in arms.items())
    print(name, {p: (round(a["validity"], 3), round(a["outside_over_inside"], 3),
                     round(a["fd_to_real_target"])) for p, a in arms.items()},
          "" if ok else "(not a candidate)")
    if ok:
        rows[name] = (worst, ratio)
top = max(v for v, _ in rows.values())
chosen = min((k for k, (v, _) in rows.items() if v >= top - 0.03), key=lambda k: rows[k][1])
keep = rows[chosen][0] <= rows[current][0] + 0.03 if current in rows else False
print(json.dumps({"best": chosen, "worst_validity": rows[chosen][0],
                  "current": current, "current_worst_validity": min(
                      a["validity"] for a in base.values()),
                  "mel_margin": current if keep else chosen}))
PY
