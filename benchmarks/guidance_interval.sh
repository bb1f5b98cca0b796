#!/usr/bin/env bash
# Limited-interval guidance on the shipped generator, chosen on the VALIDATION split
# (Kynkäänniemi et al. 2024: guidance at the noisiest steps collapses a class towards one
# layout; leaving them unguided should raise within-class diversity at little cost in class
# fidelity). One yardstick run per (guidance scale, σ interval); records in OUT.
#
# Rule, written before any of these numbers was seen (session 15): among settings with
# val precision ≥ 0.60, FD ≤ the current default's val FD and class fidelity ≥ 0.80, take the
# highest within-class diversity; adopt it as the default if that diversity is ≥ 0.75 and above
# the current default's, else keep the current default. Then the test yardstick once.
#
# Session 16, written before its settings ran: the session-15 choice (guidance 6 on (0, 10])
# measured diversity 0.760 on val but 0.749 on test; 0.01 is within the noise of 32 images a
# class. A new setting (same constraints: precision ≥ 0.60, FD ≤ 83.9, class fidelity ≥ 0.80)
# replaces it only if its val diversity is ≥ 0.770 (the current + 0.01); among those, the
# highest. Run as SETTINGS="7.5 0 5;9 0 5;6 0 7;7.5 0 7;9 0 7;7.5 1 7".
#
#   bash benchmarks/guidance_interval.sh [WEIGHTS] [OUT]
set -euo pipefail
WEIGHTS=${1:-weights/embedded}
OUT=${2:-reports/embedded/guidance_interval}
mkdir -p "$OUT"
run() {  # scale sigma_min sigma_max (≤ 0: no upper limit)
  local name="g$1_s$2-$3"
  [ -f "$OUT/$name.json" ] || python benchmarks/generator_yardstick.py --weights "$WEIGHTS" \
      --reference-split val --guidance-scale "$1" --guidance-interval "$2" "$3" \
      --output "$OUT/$name.json" --grid "$OUT/$name.png" > "$OUT/$name.log" 2>&1
  python - "$OUT/$name.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["model"]
print(sys.argv[1].rsplit("/", 1)[-1], *(f"{k} {m[k]:.3f}" for k in
      ("fd", "precision", "recall", "diversity_ratio", "class_fidelity_macro")))
PY
}
# SETTINGS: "scale sigma_min sigma_max" triples separated by ";"
IFS=';' read -ra settings <<< "${SETTINGS:-4.5 0 0;4.5 0 10;4.5 0 5;6 0 10;6 0 5;4.5 0 20}"
for setting in "${settings[@]}"; do
  run $setting
done
