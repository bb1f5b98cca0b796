#!/usr/bin/env bash
# The latent generator trained from scratch in one resumable command: the autoencoder
# (`classndiff train-autoencoder`, AE_SECONDS) then a DiT/2 in its 4×16×16 latents with the
# plain denoising loss (λ = 0, classifier frozen and unused), class-balanced (power 0.75) and
# tone-balanced (0.5) sampling, batch 64, learning rate 3e-4, until DIT_SECONDS or DIT_STEPS.
# Rerun the same command to resume either stage. AE_SET adds autoencoder settings
# (e.g. AE_SET="--set norm_num_groups=8 --set color_weight=1"). Then, to measure it under the shipped
# classifier (nothing in weights/ changes):
#   classndiff graft weights/embedded --denoiser-from RUNS/latent --new-denoiser --output-dir CAND
#   python benchmarks/generator_yardstick.py --weights CAND --reference-split val \
#       --guidance-scale S --output CAND/val_gS.json --grid CAND/val_gS.png
#
#   bash benchmarks/latent_generator.sh [RUNS_DIR]     # session 12: AE 1750 s, DiT 4800 s
set -euo pipefail
RUNS=${1:-runs/latent_generator}
DATA=${CLASSNDIFF_DATA:-../shared/data/ham10000}
AE="$RUNS/autoencoder"
[ -f "$AE/autoencoder.json" ] || python -m classndiff train-autoencoder --output-dir "$AE" \
    --data-dir "$DATA" --time-budget "${AE_SECONDS:-1750}" \
    $([ -d "$AE/checkpoints" ] && echo --resume) ${AE_SET:-}
python -m classndiff train --config configs/embedded.json --output-dir "$RUNS/latent" \
    --set "train.data_dir=$DATA" --set "train.autoencoder_dir=$AE" --set model.patch_size=2 \
    --set train.lambda_cls=0 --set train.classifier_learning_rate=0 \
    --set train.lambda_saliency=0 --set train.classifier_retint=0 \
    --set train.classifier_augment=light --set train.tone_balance_power=0.5 \
    --set train.balance_power=0.75 --set train.batch_size=64 \
    --set train.learning_rate=0.0003 --set train.warmup_steps=100 \
    --set train.eval_every=100000 --set train.checkpoint_every=150 --set train.log_every=25 \
    --set "train.time_budget_s=${DIT_SECONDS:-4800}" --max-steps "${DIT_STEPS:-6500}" \
    $([ -d "$RUNS/latent/checkpoints" ] && echo --resume)
