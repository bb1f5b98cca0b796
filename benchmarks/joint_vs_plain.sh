#!/usr/bin/env bash
# The paper's claim at one budget: the generator fine-tuned with the joint term (λ = 0.05,
# x̂0 through the frozen classifier, terms under w(t) = 0.05 skipped) against λ = 0, from the
# same weights, for the same steps, seed and data; then both on the neutral yardstick.
#
#   bash benchmarks/joint_vs_plain.sh [START_WEIGHTS] [STEPS] [RUNS_DIR]
#
# About 1 s a step (batch 64) on a 2-core CPU; each yardstick ~3 minutes.
set -euo pipefail
START=${1:-weights/embedded}
STEPS=${2:-1000}
RUNS=${3:-runs/joint_vs_plain}
OUT=reports/embedded/joint_vs_plain
DATA=${CLASSNDIFF_DATA:-../shared/data/ham10000}
COMMON=(--config configs/embedded.json --init-from "$START" --max-steps "$STEPS"
        --set "train.data_dir=$DATA" --set train.classifier_learning_rate=0
        --set train.joint_updates_classifier=false --set train.joint_batch_fraction=0.25
        --set train.lambda_saliency=0 --set train.tone_balance_power=0.5
        --set train.batch_size=64 --set train.learning_rate=0.0001 --set train.warmup_steps=50
        --set train.eval_every=100000 --set train.checkpoint_every=300
        --set train.classifier_augment=light --set train.time_budget_s=0)
classndiff train "${COMMON[@]}" --set train.lambda_cls=0.05 --output-dir "$RUNS/joint"
classndiff train "${COMMON[@]}" --set train.lambda_cls=0 --output-dir "$RUNS/plain"
for arm in joint plain; do
    python benchmarks/generator_yardstick.py --weights "$RUNS/$arm" \
        --output "$OUT/$arm.json" --grid "$OUT/$arm.png"
done
python benchmarks/compare_yardsticks.py --run "start=reports/embedded/generator_yardstick.json" \
    --run "joint λ=0.05=$OUT/joint.json" --run "λ=0=$OUT/plain.json" --markdown "$OUT/table.md"
