#!/usr/bin/env bash
# Whole-field re-tints beside the skin-only ones (session 27). The skin-only re-tint of the
# counterfactual test (and of the training augmentation) leaves the lesion as it was, so a
# faint lesion on light skin becomes a pale island on darker skin: 945 of the 1,497 test
# lesions end paler than their new skin, and 15.2 % of those flip against 10.7 % of the rest
# (benchmarks/skin_tone_counterfactual.py on the shipped weights, session 27). The shipped
# classifier also flips 18.5 % of test answers, malignant AUC 0.910 → 0.856, when the WHOLE
# field is darkened to the same skin (skintone.retint_field_torch: the lesion darkened with
# its skin, its contrast kept; one gain per channel in linear light, i.e. also what a dimmer,
# warmer exposure does) — an invariance it was never shown. This arm shows it: the 0-image
# arm's recipe (same 500 steps, seed, data order, start) with the re-tint drawn for 75 % of
# the images instead of 50 %, a third of those over the whole field
# (train.classifier_retint_whole_field = 1/3): the same half of the images re-tinted skin-only
# in expectation, plus a quarter whole-field.
#
# Rule, written before the arm ran (session 25's, unchanged: benchmarks/fairness_rule.py): on
# validation, against the 0-image arm: accuracy and malignant AUC each ≥ its − 0.01, balanced
# accuracy ≥ its − 0.02, malignant sensitivity (P(malignant) ≥ 0.5) ≥ its − 0.02, flips to
# darker skin (the bar's skin-only re-tint) ≤ 10 % and ≥ 1 point under its, change of
# malignant AUC under the darker re-tint ≥ −0.02. If the arm meets every condition it is made
# ready as shipped (test_time_views, calibrate, evaluate; then the test split is read).
# Otherwise nothing ships under it. The whole-field flips are reported beside.
#
# A second rule, for robustness rather than #13's bar (added before the table was read, once
# the whole-field test had shown the shipped model's malignant sensitivity falling 0.646 →
# 0.371 on darker images): `fairness_rule.py --whole-field` — the same four quality checks
# against the 0-image arm, skin-only flips to darker skin not above its + 0.5 point, and on
# the whole-field darker re-tint flips ≥ 3 points under its and the change of malignant AUC
# ≥ its + 0.02. If the arm meets it, it is made ready as shipped as above: a model that keeps
# its answers when the whole image is darker is the safer one to serve, bar or no bar.
#
#   bash benchmarks/fairness_whole_field.sh [START_WEIGHTS] [RUNS_DIR] [OUT]
#
# RUNS_DIR/arm-0 is fairness_synthetic.sh's 0-image arm (trained here if missing; ~9 min on
# 2 cores; the whole-field arm ~18).
set -euo pipefail
START=${1:-weights/embedded}
RUNS=${2:-runs/fairness_synthetic}
OUT=${3:-reports/embedded/fairness_whole_field}
source "$(dirname "$0")/fairness_common.sh"  # COMMON and run()
mkdir -p "$OUT"
run arm-0
run whole-field --set train.classifier_retint=0.75 \
    --set train.classifier_retint_whole_field=0.3333333333
[ -f "$OUT/table.json" ] || python benchmarks/fairness_table.py \
    --arm "0 generated (re-tint 0.5)=$RUNS/arm-0/last" \
    --arm "re-tint 0.75, a third of it whole-field=$RUNS/whole-field/last" \
    --output "$OUT/table.json" --markdown "$OUT/table.md" \
    --mark "picked by the table's older rule (accuracy, malignant AUC, flips)"
python benchmarks/fairness_rule.py "$OUT/table.json" --flip-bar 0.10 --auc-change-bar -0.02 \
    | tee "$OUT/choice.txt"
python benchmarks/fairness_rule.py "$OUT/table.json" --whole-field | tee "$OUT/choice_whole_field.txt"
