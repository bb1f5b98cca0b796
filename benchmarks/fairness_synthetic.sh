#!/usr/bin/env bash
# Tone-targeted synthetic augmentation, again, with the latent generator (the fairness table's
# synthetic arm used the old mosaic generator): generated brown and darker lesions of every
# class added to the classifier's training in increasing amounts (0, 40 and 120 a class per
# tone: 0, 560 and 1,680 images beside ~7,000 real ones). Every arm continues the shipped
# classifier for the same steps, seed and data order, with the shipped re-tint augmentation,
# and is measured by the fairness table's code.
#
# Rule, written before any of these ran (session 17): the fairness table's rule — validation
# accuracy and malignant AUC each ≥ the 0-image arm's − 0.01, then the lowest validation flip
# rate to darker skin; a synthetic arm is worth shipping only if it is chosen and its
# validation flip rate to darker skin is at least 1 point under the 0-image arm's.
#
#   bash benchmarks/fairness_synthetic.sh [START_WEIGHTS] [RUNS_DIR]
#
# About 10 minutes an arm on a 2-core CPU (STEPS=500), plus ~8 for the images.
set -euo pipefail
START=${1:-weights/embedded}
RUNS=${2:-runs/fairness_synthetic}
source "$(dirname "$0")/fairness_common.sh"  # COMMON and run()
[ -f "$RUNS/synthetic-120/metadata.csv" ] || python benchmarks/synthetic_set.py \
    --weights "$START" --per-class 120 --tones brown darker --output "$RUNS/synthetic-120"
# The 40-a-class set: the first 40 of each (class, tone) cell of the 120 set, same files.
python - "$RUNS" <<'PY'
import csv, os, sys
from collections import Counter
from pathlib import Path
runs = Path(sys.argv[1])
src, dst = runs / "synthetic-120", runs / "synthetic-40"
dst.mkdir(exist_ok=True)
if not (dst / "images").exists():
    os.symlink((src / "images").resolve(), dst / "images")
rows = list(csv.DictReader((src / "metadata.csv").open()))
seen, kept = Counter(), []
for row in rows:
    cell = (row["dx"], row["skin_tone_group"])
    if seen[cell] < 40:
        kept.append(row)
    seen[cell] += 1
with (dst / "metadata.csv").open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(kept)
print(f"synthetic-40: {len(kept)} of {len(rows)} images")
PY
run arm-0
run arm-40 --set "train.synthetic_dir=$RUNS/synthetic-40"
run arm-120 --set "train.synthetic_dir=$RUNS/synthetic-120"
python benchmarks/fairness_table.py --arm "0 generated=$RUNS/arm-0/last" \
    --arm "+ 560 generated=$RUNS/arm-40/last" \
    --arm "+ 1,680 generated=$RUNS/arm-120/last" \
    --output reports/embedded/fairness_synthetic.json \
    --markdown reports/embedded/fairness_synthetic.md --mark "chosen by the rule"
