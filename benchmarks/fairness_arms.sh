#!/usr/bin/env bash
# The fairness table from scratch: seven arms fine-tuned from the same weights for the same
# steps (seed 0, the same data order), then measured and chosen by benchmarks/fairness_table.py.
#
#   bash benchmarks/fairness_arms.sh [START_WEIGHTS] [RUNS_DIR]
#
# START_WEIGHTS: the classifier every arm starts from (default weights/embedded; the table in
# reports/embedded/ started from the previous shipped classifier, see its config.json stages).
# About 20 minutes an arm on a 2-core CPU. The synthetic arm first writes 40 generated images
# per class in each of the brown and darker groups (benchmarks/synthetic_set.py).
set -euo pipefail
START=${1:-weights/embedded}
RUNS=${2:-runs/fairness}
DATA=${CLASSNDIFF_DATA:-../shared/data/ham10000}
COMMON=(--config configs/embedded.json --init-from "$START" --max-steps 1500
        --set "train.data_dir=$DATA" --set train.learning_rate=0 --set train.lambda_cls=0
        --set train.classifier_learning_rate=0.0002 --set train.warmup_steps=50
        --set train.time_budget_s=0)
python benchmarks/synthetic_set.py --weights "$START" --per-class 40 --tones brown darker \
    --output "$RUNS/synthetic-brown-darker"
classndiff train "${COMMON[@]}" --output-dir "$RUNS/baseline"
classndiff train "${COMMON[@]}" --set train.classifier_retint=0.5 --output-dir "$RUNS/retint"
classndiff train "${COMMON[@]}" --set train.classifier_retint=0.9 --output-dir "$RUNS/retint-0.9"
classndiff train "${COMMON[@]}" --set train.classifier_retint=0.5 --set train.tone_consistency=1.0 \
    --output-dir "$RUNS/consistency"
classndiff train "${COMMON[@]}" --set train.classifier_retint=0.5 --set train.tone_consistency=10.0 \
    --output-dir "$RUNS/consistency-10"
classndiff train "${COMMON[@]}" --set model.tone_adversary=true --set train.lambda_adv=1.0 \
    --output-dir "$RUNS/adversarial"
classndiff train "${COMMON[@]}" --set "train.synthetic_dir=$RUNS/synthetic-brown-darker" \
    --output-dir "$RUNS/synthetic"
# Each arm's last EMA classifier (same steps for all), not its best-by-validation export:
# that selection uses accuracy alone and would hide what an arm changed.
python benchmarks/fairness_table.py --arm "baseline=$RUNS/baseline/last" \
    --arm "retint 0.5=$RUNS/retint/last" --arm "retint 0.9=$RUNS/retint-0.9/last" \
    --arm "adversarial=$RUNS/adversarial/last" \
    --arm "synthetic=$RUNS/synthetic/last" \
    --arm "retint 0.5 + consistency=$RUNS/consistency/last" \
    --arm "retint 0.5 + consistency 10=$RUNS/consistency-10/last" \
    --output reports/embedded/fairness_table.json --markdown reports/embedded/fairness_table.md
