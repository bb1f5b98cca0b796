#!/usr/bin/env bash
# The fairness table of the classifier shipped in session 32, one row per step from the arm
# the main table chose (re-tint 0.5) to it: the 0-image control, the same read at 224 px, the
# skin-tone consistency term at 224 px (four test-time views), and that arm read with one view
# (what the latency bar allows; shipped by rule 3, reports/embedded/fairness_threshold_s32).
#
#   bash benchmarks/fairness_shipped.sh START RUNS_DIR
#
# START: the weights shipped before session 32 (`git show 9648b25:weights/embedded/...`, or a
# checkout of that commit), from which every arm continues (benchmarks/fairness_common.sh).
# Arms already in RUNS_DIR are not trained again (~9, ~21 and ~39 min on 2 cores); rows the
# studies' tables measured with the very same weights are copied from them (`--reuse`), so on
# the machine that ran them this writes the table in seconds.
set -euo pipefail
START=${1:?START: the weights folder shipped before session 32}
RUNS=${2:?RUNS_DIR: where the arms are (or will be) trained}
OUT=reports/embedded
STUDIES=reports/embedded
source "$(dirname "$0")/fairness_common.sh"  # COMMON and run()
run arm-0
run size-224 --set model.classifier_image_size=224
run size-224-consistency-3 --set model.classifier_image_size=224 --set train.tone_consistency=3
ONE_VIEW="$RUNS/size-224-consistency-3-1view"  # the same weights, classifier_test_views 1
if [ ! -f "$ONE_VIEW/model.safetensors" ]; then
    mkdir -p "$ONE_VIEW"
    cp "$RUNS/size-224-consistency-3/last/model.safetensors" "$ONE_VIEW/"
    python - "$RUNS/size-224-consistency-3/last/config.json" "$ONE_VIEW/config.json" <<'EOF'
import json, sys
config = json.load(open(sys.argv[1]))
config["model"]["classifier_test_views"] = 1
with open(sys.argv[2], "w") as f:
    json.dump(config, f, indent=2, ensure_ascii=False)
EOF
fi
python benchmarks/fairness_table.py \
    --arm "0 generated (re-tint 0.5, 128 px)=$RUNS/arm-0/last" \
    --arm "re-tint 0.5, read at 224 px=$RUNS/size-224/last" \
    --arm "+ consistency λ_c = 3, at 224 px=$RUNS/size-224-consistency-3/last" \
    --arm "+ consistency λ_c = 3, at 224 px, one view=$ONE_VIEW" \
    --reuse "$STUDIES/fairness_resolution_consistency_s31/one_view/table.json" \
    --reuse "$STUDIES/fairness_resolution_consistency_s31/table.json" \
    --reuse "$STUDIES/fairness_resolution_s30/table.json" \
    --mark shipped \
    --output "$OUT/fairness_table_shipped.json" --markdown "$OUT/fairness_table_shipped.md"
