#!/usr/bin/env bash
# The paper's claim at one budget: the generator fine-tuned with the joint term (λ = 0.05,
# x̂0 through the frozen classifier on a quarter of each batch, terms under w(t) = 0.05
# skipped) against λ = 0, from the same weights, for the same CPU minutes (or steps), seed
# and data; then both on the neutral yardstick and a table.
#
#   bash benchmarks/joint_vs_plain.sh [START_WEIGHTS] [STEPS] [RUNS_DIR]
#   BUDGET_S=1500 SPLIT=val JOINT_SET="--set train.cls_x0_size=32" ARMS="joint plain" \
#       bash benchmarks/joint_vs_plain.sh weights/embedded 100000 RUNS
#
# BUDGET_S: wall seconds per arm instead of steps (equal CPU budget; the joint arm's steps
# cost more). JOINT_SET: extra settings of the joint arm (e.g. the low-passed x̂0 of
# train.cls_x0_size). SPLIT: the yardstick's real images (val when a result may choose what
# ships). JOINT_LAMBDA: the joint arm's λ (0.05); JOINT_LABEL: its name in the table.
# BOTH_SET: settings of both arms, after the common ones (e.g. the paper's set-up, a
# classifier learning beside the denoiser:
# "--set train.classifier_learning_rate=0.0001 --set train.joint_updates_classifier=true").
# The start's own config is the base (a latent generator keeps its autoencoder). An arm whose
# RUNS/ARM/model.safetensors exists is not retrained (e.g. a λ = 0 arm linked from an earlier
# run of the same budget).
# About 1 s a step (batch 64) on a 2-core CPU; each yardstick ~5 minutes.
set -euo pipefail
START=${1:-weights/embedded}
STEPS=${2:-1000}
RUNS=${3:-runs/joint_vs_plain}
OUT=${OUT:-reports/embedded/joint_vs_plain}
SPLIT=${SPLIT:-test}
mkdir -p "$OUT"
# shellcheck source=benchmarks/joint_common.sh
source "$(dirname "$0")/joint_common.sh"
for arm in ${ARMS:-joint plain}; do
    if [ ! -f "$RUNS/$arm/model.safetensors" ]; then
        if [ "$arm" = joint ]; then
            # shellcheck disable=SC2086  # BOTH_SET and JOINT_SET are lists of --set options
            classndiff train "${COMMON[@]}" ${BOTH_SET:-} \
                --set "train.lambda_cls=${JOINT_LAMBDA:-0.05}" ${JOINT_SET:-} \
                --output-dir "$RUNS/$arm"
        else
            # shellcheck disable=SC2086
            classndiff train "${COMMON[@]}" ${BOTH_SET:-} --set train.lambda_cls=0 \
                --output-dir "$RUNS/$arm"
        fi
    fi
    # Measured under the start's classifier, calibration and trust settings, as shipped. An
    # arm whose classifier learnt (the paper's set-up) changed it: its denoiser alone is taken.
    graft_opts=()
    python -c 'import json, sys; t = json.load(open(sys.argv[1]))["train"]
sys.exit(0 if t["classifier_learning_rate"] > 0 else 1)' "$RUNS/$arm/train_config.json" 2>/dev/null \
        && graft_opts=(--new-denoiser)
    [ -f "$RUNS/$arm-grafted/model.safetensors" ] || classndiff graft "$START" \
        --denoiser-from "$RUNS/$arm" --output-dir "$RUNS/$arm-grafted" "${graft_opts[@]}"
    python benchmarks/generator_yardstick.py --weights "$RUNS/$arm-grafted" \
        --reference-split "$SPLIT" --output "$OUT/$arm.json" --grid "$OUT/$arm.png"
done
# The table needs both arms: with ARMS run apart (side by side), the arm that ends last writes it.
if [ ! -f "$OUT/joint.json" ] || [ ! -f "$OUT/plain.json" ]; then
    echo "table.md waits for the other arm's yardstick"
    exit 0
fi
# START_YARDSTICK: the start's own yardstick on the same split.
python benchmarks/compare_yardsticks.py \
    --run "start=${START_YARDSTICK:-reports/embedded/generator_yardstick.json}" \
    --run "${JOINT_LABEL:-joint λ=${JOINT_LAMBDA:-0.05}}=$OUT/joint.json" --run "λ=0=$OUT/plain.json" \
    --markdown "$OUT/table.md"
