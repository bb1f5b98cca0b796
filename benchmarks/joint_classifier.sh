#!/usr/bin/env bash
# Does the joint term help the classifier? The paper's claim for classification, at one
# budget: the shipped classifier fine-tuned further with (λ = 0.2) and without (λ = 0) the
# cross-entropy on the frozen denoiser's x̂0, from the same weights, for the same steps, seed,
# data and augmentation (re-tint 0.5, as shipped); then both through the fairness table's
# measurements (validation and test accuracy, balanced accuracy, malignant AUC with
# lesion-bootstrap CIs, the skin-tone counterfactual).
#
#   bash benchmarks/joint_classifier.sh [START_WEIGHTS] [STEPS] [RUNS_DIR]
#
# About 1 s a step for either arm on a 2-core CPU (~10 minutes each); the table ~25 minutes.
set -euo pipefail
START=${1:-weights/embedded}
STEPS=${2:-600}
RUNS=${3:-runs/joint_classifier}
DATA=${CLASSNDIFF_DATA:-../shared/data/ham10000}
OUT=reports/embedded
COMMON=(--config "$START/config.json" --init-from "$START" --max-steps "$STEPS"
        --set "train.data_dir=$DATA" --set train.learning_rate=0
        --set train.classifier_learning_rate=0.0001 --set train.warmup_steps=50
        --set train.classifier_retint=0.5 --set train.time_budget_s=0)
classndiff train "${COMMON[@]}" --set train.lambda_cls=0 --output-dir "$RUNS/plain"
classndiff train "${COMMON[@]}" --set train.lambda_cls=0.2 --output-dir "$RUNS/joint"
python benchmarks/fairness_table.py --arm "λ = 0=$RUNS/plain" --arm "joint λ = 0.2=$RUNS/joint" \
    --baseline "λ = 0" --mark chosen --output "$OUT/joint_classifier.json" --markdown "$OUT/joint_classifier.md"
