#!/usr/bin/env bash
# The generator candidates at EQUAL CPU BUDGET: each trained from scratch for the same CPU
# minutes on the same data with the same seed and recipe (plain denoising loss, λ = 0, so
# that only the denoiser differs), then graded by the same yardstick
# (benchmarks/generator_yardstick.py: 32 images per class through the public `generate`).
#
#   bash benchmarks/generator_study.sh [MINUTES] [RUNS_DIR]
#
# The budget is turned into steps per candidate from its own speed, timed first on a quiet
# machine (24 training steps each): a run slowed by other work then takes longer but gets
# the same share of training, instead of fewer steps. Candidates: today's DiT/8 with U-ViT's
# conv head and long skips (the shipped architecture), the same at patch 4 (256 tokens), and
# a small diffusers UNet2DModel (ADM-style, attention at 16 and 8 px), and a DiT/2 in the
# 16×16×4 latents of a small autoencoder trained here first (`classndiff train-autoencoder`,
# AE_MINUTES of its own, 25 by default: a one-off cost any latent denoiser shares, reported
# apart). Each yardstick takes 2–4 minutes on a 2-core CPU.
set -euo pipefail
MINUTES=${1:-15}
RUNS=${2:-runs/generator_study}
AE_MINUTES=${AE_MINUTES:-25}
OUT=reports/embedded/generator_study
DATA=${CLASSNDIFF_DATA:-../shared/data/ham10000}
mkdir -p "$OUT"
COMMON=(--config configs/embedded.json --set "train.data_dir=$DATA" --set train.lambda_cls=0
        --set train.classifier_learning_rate=0 --set train.lambda_saliency=0
        --set train.classifier_retint=0 --set train.classifier_augment=light
        --set train.tone_balance_power=0.5 --set train.batch_size=64
        --set train.learning_rate=0.0003 --set train.warmup_steps=100
        --set train.eval_every=100000 --set train.checkpoint_every=200 --set train.log_every=8)
AE="$RUNS/autoencoder"
[ -f "$AE/autoencoder.json" ] || python -m classndiff train-autoencoder --output-dir "$AE" \
    --data-dir "$DATA" --time-budget $((AE_MINUTES * 60)) $([ -d "$AE/checkpoints" ] && echo --resume)
declare -A ARMS=(
    [dit8-conv]=""
    [dit4-conv]="--set model.patch_size=4"
    [unet]="--set model.denoiser=unet --set model.unet_channels=[32,64,128,256] --set model.unet_layers_per_block=1"
    [dit2-latent]="--set model.patch_size=2 --set train.autoencoder_dir=$AE"
)
ORDER=(dit8-conv dit4-conv unet dit2-latent)
# An arm whose yardstick is already in $OUT is done (the committed table's arms): kept as is.
for arm in "${ORDER[@]}"; do  # seconds per step, from steps 8 → 24 of a short run
    [ -f "$OUT/$arm.json" ] || [ -f "$RUNS/timing/$arm/log.csv" ] && continue
    # shellcheck disable=SC2086
    python -m classndiff train "${COMMON[@]}" ${ARMS[$arm]} --max-steps 24 \
        --output-dir "$RUNS/timing/$arm"
done
for arm in "${ORDER[@]}"; do
    [ -f "$OUT/$arm.json" ] && continue
    steps=$(python benchmarks/seconds_per_step.py "$RUNS/timing/$arm/log.csv" --minutes "$MINUTES")
    echo "$arm: $steps steps for $MINUTES minutes"
    # shellcheck disable=SC2086
    [ -f "$RUNS/$arm/model.safetensors" ] || python -m classndiff train "${COMMON[@]}" \
        ${ARMS[$arm]} --max-steps "$steps" --set train.time_budget_s=0 \
        --output-dir "$RUNS/$arm" $([ -d "$RUNS/$arm/checkpoints" ] && echo --resume)
done
for arm in "${ORDER[@]}"; do
    [ -f "$OUT/$arm.json" ] || python benchmarks/generator_yardstick.py --weights "$RUNS/$arm" \
        --output "$OUT/$arm.json" --grid "$OUT/$arm.png"
done
python benchmarks/compare_yardsticks.py --markdown "$OUT/table.md" \
    --run "DiT/8 conv head=$OUT/dit8-conv.json" --run "DiT/4 conv head=$OUT/dit4-conv.json" \
    --run "UNet2DModel=$OUT/unet.json" --run "latent DiT/2=$OUT/dit2-latent.json"
