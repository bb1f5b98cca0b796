#!/usr/bin/env bash
# What each joint set-up costs per training step on this machine, from one start: λ = 0, the
# frozen classifier's teacher term (session 24's arm), and the paper's set-up (the classifier
# learning beside the denoiser from real images and from x̂0, CE to the label, λ 0.05 —
# session 18's arm), and session 38's embedding-only term on a quarter or a sixteenth of each
# batch. Each runs STEPS steps of batch 64 with joint_vs_plain.sh's settings
# (joint_common.sh) and the from-scratch recipe; seconds per step are read from the log
# between step 20 and the last (start-up excluded). Run on a quiet machine, one arm after
# the other.
#
#   bash benchmarks/joint_step_cost.sh START [STEPS] [RUNS_DIR]     # ARMS= picks arms
set -euo pipefail
START=$1
STEPS=${2:-60}
RUNS=${3:-runs/joint_step_cost}
# shellcheck source=benchmarks/joint_common.sh
source "$(dirname "$0")/joint_common.sh"
# The from-scratch recipe (latent_generator.sh's), and a log line every 20 steps.
SCRATCH=(--set train.learning_rate=0.0003 --set train.warmup_steps=100
         --set train.balance_power=0.75 --set train.checkpoint_every=100000
         --set train.log_every=20)
for arm in ${ARMS:-plain frozen-teacher learning-classifier}; do
    case $arm in
        plain) settings=(--set train.lambda_cls=0) ;;
        frozen-teacher) settings=(--set train.lambda_cls=0.2
                                  --set train.cls_x0_target=teacher --set train.cls_x0_size=32) ;;
        # Session 38's term stopped at the diagnosis embedding, on a quarter of each batch
        # (joint_common.sh) or on a sixteenth: the second pass and the classifier's reading
        # scale with the term's samples, beside a fixed price per call (session 40).
        embedding|embedding-sixteenth)
            settings=(--set train.lambda_cls=0.14 --set train.cls_x0_target=features
                      --set train.cls_x0_size=32 --set train.cls_x0_reaches=dx_embedding)
            [ "$arm" = embedding-sixteenth ] && settings+=(--set train.joint_batch_fraction=0.0625)
            ;;
        learning-classifier) settings=(--set train.lambda_cls=0.05
                                       --set train.classifier_learning_rate=0.0001
                                       --set train.joint_updates_classifier=true) ;;
    esac
    classndiff train "${COMMON[@]}" "${SCRATCH[@]}" "${settings[@]}" --output-dir "$RUNS/$arm" \
        > "$RUNS-$arm.log" 2>&1
    timing=$(python "$(dirname "$0")/seconds_per_step.py" "$RUNS/$arm/log.csv")
    echo "$arm: $timing"
done
