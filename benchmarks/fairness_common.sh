# Sourced by the fairness arms' scripts: every arm continues START's classifier for the same
# steps, seed, data order and re-tint, the denoiser frozen, and no generated images unless an
# arm adds its own (a shipped config could name a local folder of them).
# shellcheck shell=bash
DATA=${CLASSNDIFF_DATA:-../shared/data/ham10000}
COMMON=(--config "$START/config.json" --init-from "$START" --max-steps "${STEPS:-500}"
        --set "train.data_dir=$DATA" --set train.learning_rate=0 --set train.lambda_cls=0
        --set train.classifier_learning_rate=0.0002 --set train.warmup_steps=50
        --set train.time_budget_s=0 --set train.classifier_retint=0.5
        --set train.synthetic_dir=null)
run() {  # name [settings...]: trains RUNS/name unless it is there
    local name=$1; shift
    [ -f "$RUNS/$name/last/model.safetensors" ] || \
        classndiff train "${COMMON[@]}" "$@" --output-dir "$RUNS/$name"
}
