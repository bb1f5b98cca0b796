#!/usr/bin/env bash
# The joint classifier's guidance on x̂0 in a counterfactual, a step size per target, chosen on
# the VALIDATION split. Target guidance and a strength per target left naevus → melanoma at
# 0.69 on validation and 0.625 on test (session 19; bar 0.70): classifier-free guidance stops
# rising past 12.5 and the strength past 0.9. The paper's link between its two halves — the
# classifier's gradient on the denoiser's x̂0 — was last measured on the 8-pixel-mosaic
# generator (session 13: no help); this re-measures it on the latent generator.
#
# Rule, written before these numbers were seen (session 20): at the weights' strength per
# target, guidance and margin, PER_PAIR validation images a pair, step sizes SCALES; for each
# target t of the bar's pairs (mel: nv → mel and bkl → mel; nv: mel → nv) the candidates are
# the step sizes at which, for every pair into t, outside ÷ inside (expert mask) is ≤ 0.25, the
# median seconds ≤ 3.5 (room under the 5 s bar) and the Fréchet distance to real images of t is
# at most 1.1 × step 0's (guidance must not buy the evaluator's verdict with edits that look
# less like t: the known trap is an adversarial change). Among them the highest worst validity
# (independent evaluator), ties within 0.03 going to the smaller step; it becomes t's own step
# (sampling.counterfactual_classifier_scale_by_target) only if its worst validity beats step 0's
# by more than 0.03. Then the test split once, at the weights' defaults
# (benchmarks/counterfactuals.py), and the figure looked at.
#
#   bash benchmarks/counterfactual_classifier_scale.sh [WEIGHTS] [OUT]   # WRITE=1: into WEIGHTS
set -euo pipefail
WEIGHTS=${1:-weights/embedded}
OUT=${2:-reports/embedded/counterfactual_classifier_scale}
mkdir -p "$OUT"
for scale in ${SCALES:-0 0.03 0.1 0.3 1}; do
  [ -f "$OUT/s$scale.json" ] || python benchmarks/counterfactuals.py --weights "$WEIGHTS" \
      --split val --per-pair "${PER_PAIR:-48}" --classifier-scale "$scale" --sweep \
      --output "$OUT/s$scale.json" --figure "$OUT/s$scale.png" > "$OUT/s$scale.log" 2>&1
done
python - "$OUT" "$WEIGHTS" "${WRITE:-0}" <<'PY'
import json, sys
from pathlib import Path
out, weights, write = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
records = {float(p.stem[1:]): json.loads(p.read_text())["pairs"] for p in out.glob("s*.json")}
chosen = {}
for target in sorted({pair.split("->")[1] for pair in records[0.0]}):
    pairs = [p for p in records[0.0] if p.endswith("->" + target)]
    rows = []
    for scale, record in sorted(records.items()):
        arms = [record[p]["target"] for p in pairs]
        worst = min(a["validity"] for a in arms)
        ok = all(a["outside_over_inside"] <= 0.25 and a["seconds_median"] <= 3.5
                 and a["fd_to_real_target"] <= 1.1 * records[0.0][p]["target"]["fd_to_real_target"]
                 for p, a in zip(pairs, arms))
        print(f"→ {target} step {scale:g}: worst validity {worst:.3f}, "
              + ", ".join(f"{p} {a['validity']:.3f} out/in {a['outside_over_inside']:.2f} "
                          f"{a['seconds_median']:.1f} s FD {a['fd_to_real_target']:.0f}"
                          for p, a in zip(pairs, arms))
              + ("" if ok else "  (not a candidate)"))
        if ok:
            rows.append((scale, worst))
    best = max(v for _, v in rows)
    scale, worst = min((s, v) for s, v in rows if v >= best - 0.03)
    base = min(records[0.0][p]["target"]["validity"] for p in pairs)
    if worst > base + 0.03:
        chosen[target] = scale
    print(f"→ {target}: step {scale:g} (worst {worst:.3f}) against step 0 ({base:.3f}): "
          + ("its own" if target in chosen else "keep 0"))
print(json.dumps({"classifier_scale_by_target": chosen}))
if write == "1":  # through the project's config type: an unknown key fails loudly
    from classndiff.config import ClassNDiffConfig

    path = weights / "config.json"
    ClassNDiffConfig.from_json(path).override(
        {"sampling.counterfactual_classifier_scale_by_target": chosen}).to_json(path)
    print(f"written into {path}")
PY
