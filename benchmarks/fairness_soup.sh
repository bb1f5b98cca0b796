#!/usr/bin/env bash
# Weight averages of the fairness arms (model soups / WiSE-FT). Every consistency arm so far
# trades one aim for the other: λ_c = 3 cuts the proxy flips to darker skin (15.1 → 11.6 % on
# validation) but loses balanced accuracy and malignant sensitivity; class-balanced sampling
# (balance power 1.0) restores both and gives the flips back. All arms continue the same
# classifier for the same 500 steps, so their weights can be averaged; averaged fine-tunes of
# one start often keep what each ingredient gained (Wortsman et al. 2022). No training beyond
# one more ingredient, λ_c = 10 (the strongest invariance tried, session 8's weight).
#
# Candidates (fixed before any was measured; session 22):
#   A  ½ 0-image arm + ½ λ_c 10                          (WiSE-FT towards the invariant arm)
#   B  ½ λ_c 3 + ½ λ_c 5 balance 1.0                     (invariance + the rare classes)
#   C  ½ λ_c 10 + ½ λ_c 5 balance 1.0
#   D  ¼ each of λ_c 3, λ_c 5 balance 0.75, λ_c 5 balance 1.0, λ_c 10 (uniform soup)
# plus λ_c 10 alone, for reference.
#
# Rule, written before these were measured (the session-21 rule, benchmarks/fairness_rule.py):
# on validation, against the 0-image arm: accuracy and malignant AUC each ≥ its − 0.01,
# balanced accuracy ≥ its − 0.02, malignant sensitivity (P(malignant) ≥ 0.5) ≥ its − 0.02,
# flips to darker skin ≤ 10 % and ≥ 1 point under its, change of malignant AUC under the
# darker re-tint ≥ −0.02. Among those that meet every condition, the one with the fewest flips
# to darker skin is made ready as shipped (test_time_views, calibrate, evaluate; then the test
# split is read). None: nothing ships.
#
#   bash benchmarks/fairness_soup.sh [START_WEIGHTS] [RUNS_DIR] [OUT]
#
# RUNS_DIR holds the arms of fairness_synthetic.sh (arm-0), fairness_consistency.sh
# (consistency-3) and fairness_consistency_balanced.sh (consistency-5-balance-*); missing arms
# are trained here (500 steps each, ~17 min on 2 cores).
set -euo pipefail
START=${1:-weights/embedded}
RUNS=${2:-runs/fairness_synthetic}
OUT=${3:-reports/embedded/fairness_soup}
source "$(dirname "$0")/fairness_common.sh"  # COMMON and run()
mkdir -p "$OUT"
run arm-0
run consistency-3 --set train.tone_consistency=3
for power in 0.75 1.0; do
    run "consistency-5-balance-$power" --set train.tone_consistency=5 \
        --set "train.balance_power=$power"
done
run consistency-10 --set train.tone_consistency=10
soup() {  # name ingredient=share ...
    local name=$1; shift
    local args=()
    for ingredient in "$@"; do args+=(--ingredient "$RUNS/$ingredient"); done
    [ -f "$RUNS/$name/model.safetensors" ] || \
        python benchmarks/weight_average.py --output "$RUNS/$name" "${args[@]}"
}
soup soup-A arm-0/last=0.5 consistency-10/last=0.5
soup soup-B consistency-3/last=0.5 consistency-5-balance-1.0/last=0.5
soup soup-C consistency-10/last=0.5 consistency-5-balance-1.0/last=0.5
soup soup-D consistency-3/last=0.25 consistency-5-balance-0.75/last=0.25 \
    consistency-5-balance-1.0/last=0.25 consistency-10/last=0.25
[ -f "$OUT/table.json" ] || python benchmarks/fairness_table.py \
    --arm "0 generated (re-tint 0.5)=$RUNS/arm-0/last" \
    --arm "consistency λ_c = 10=$RUNS/consistency-10/last" \
    --arm "A: ½ 0-image + ½ λ_c 10=$RUNS/soup-A" \
    --arm "B: ½ λ_c 3 + ½ λ_c 5 balance 1.0=$RUNS/soup-B" \
    --arm "C: ½ λ_c 10 + ½ λ_c 5 balance 1.0=$RUNS/soup-C" \
    --arm "D: ¼ each of λ_c 3, 5 b0.75, 5 b1.0, 10=$RUNS/soup-D" \
    --output "$OUT/table.json" --markdown "$OUT/table.md" \
    --mark "picked by the table's older rule (accuracy, malignant AUC, flips)"
python benchmarks/fairness_rule.py "$OUT/table.json" --flip-bar 0.10 --auc-change-bar -0.02 \
    | tee "$OUT/choice.txt"
