#!/usr/bin/env bash
# Which autoencoder keeps the classes: arms at equal wall time (AE_SECONDS, default 1500 s:
# ~750 steps of 32 images on 2 cores), each then graded by benchmarks/autoencoder_ceiling.py
# (reconstruction FD / precision / recall / blockiness, validation PSNR, and the independent
# evaluator's accuracy on validation originals vs their reconstructions, per class).
#
#   bash benchmarks/autoencoder_arms.sh RUNS [ARM...]     # session 13: README "Generation"
#
# Arms (the session-12 autoencoder, `train-autoencoder` defaults, is the baseline):
#   decoder    the baseline's decoder fine-tuned alone (encoder frozen, so latents and any
#              denoiser in them stay valid) with the pooled-colour and class-consistency terms;
#              needs RUNS/baseline (BASELINE_SECONDS of the defaults, 1750 in session 12)
#   groups8    8 group-norm groups instead of 32 (32 groups on 32 channels is an instance
#              norm, which normalises each image's colour away) + the pooled-colour term
#   chroma     groups8 + the chroma term (×2) + class-balanced sampling (power 0.5)
#   channels8  chroma with 8 latent channels instead of 4
#   hue        channels8 with the chroma term ×10 and no pooled-colour term (its fixed 8-pixel
#              grid is the suspect for the arms' blockiness)
#   colourskip the colour skip (models.autoencoder.ColourSkipAutoencoder: 3 of the 8 latent
#              channels are the pooled RGB, the decoder adds to it) with 8 groups, the chroma
#              term (×2) and balanced sampling, no pooled-colour term (session 14)
# Rerunning resumes an unfinished arm and skips finished ones.
set -euo pipefail
RUNS=${1:?RUNS directory}
shift
DATA=${CLASSNDIFF_DATA:-../shared/data/ham10000}
SECONDS_EACH=${AE_SECONDS:-1500}
GROUPS8=(--set norm_num_groups=8 --set color_weight=1.0)
CHROMA=("${GROUPS8[@]}" --set chroma_weight=2.0 --set balance_power=0.5)

settings() {
    case $1 in
        baseline) ;;
        decoder) echo --set "init_from=$RUNS/baseline" --set train_encoder=false \
                      --set color_weight=1.0 --set class_weight=0.2 \
                      --set class_teacher=weights/embedded ;;
        groups8) echo "${GROUPS8[@]}" ;;
        chroma) echo "${CHROMA[@]}" ;;
        channels8) echo "${CHROMA[@]}" --set latent_channels=8 ;;
        hue) echo --set norm_num_groups=8 --set chroma_weight=10.0 --set balance_power=0.5 \
                  --set latent_channels=8 ;;
        colourskip) echo --set norm_num_groups=8 --set colour_skip=true --set latent_channels=8 \
                         --set chroma_weight=2.0 --set balance_power=0.5 ;;
        *) echo "unknown arm $1" >&2; exit 2 ;;
    esac
}

ARMS=("$@")
[ ${#ARMS[@]} -gt 0 ] || ARMS=(groups8 chroma channels8)
for name in "${ARMS[@]}"; do
    out="$RUNS/$name"
    budget=$SECONDS_EACH
    [ "$name" = baseline ] && budget=${BASELINE_SECONDS:-1750}
    [ "$name" = decoder ] && budget=${DECODER_SECONDS:-900}
    if [ ! -f "$out/autoencoder.json" ]; then
        # shellcheck disable=SC2046  # the settings are words on purpose
        python -m classndiff train-autoencoder --output-dir "$out" --data-dir "$DATA" \
            --time-budget "$budget" $(settings "$name") \
            $([ -d "$out/checkpoints" ] && echo --resume)
    fi
    [ -f "$RUNS/$name-ceiling.json" ] || python benchmarks/autoencoder_ceiling.py \
        --autoencoder "$out" --data-dir "$DATA" --output "$RUNS/$name-ceiling.json" \
        --figure "$RUNS/$name-reconstructions.png" --class-figure "$RUNS/$name-classes.png"
done
