#!/usr/bin/env bash
# Everything measured on the shipped weights, re-made after they change: calibration and
# abstention, test metrics, saliency, the benchmarks quoted in the README, examples, the model
# card. Outputs land in weights/embedded/, reports/embedded/ and examples/.
#
#   bash benchmarks/refresh_shipped.sh [WEIGHTS] [TRAINING_LOGS...]
#   ONLY=generator bash benchmarks/refresh_shipped.sh ...   # after `classndiff graft`: the
#                                      # classifier is unchanged, so only what the generator makes
#   ONLY=classifier bash benchmarks/refresh_shipped.sh ...  # a new classifier, the generator
#                                      # unchanged: all but the generator's yardstick (its
#                                      # sampling reads no classifier)
#   VIEWS=keep ...                     # keep the config's test-time views (a rule chose them)
#
# About 25 minutes on a 2-core CPU (the generator's part: about 10).
set -euo pipefail
W=${1:-weights/embedded}
shift || true
OUT=reports/embedded
mkdir -p "$OUT/benchmarks"
if [ "${ONLY:-}" != generator ]; then
    # How many test-time views a prediction averages (written into config.json), then the
    # temperature and abstention thresholds for that reading.
    if [ "${VIEWS:-}" != keep ]; then
        python benchmarks/test_time_views.py --weights "$W" --apply \
            --output "$OUT/test_time_views.json" | tee "$OUT/benchmarks/test_time_views.txt"
    fi
    classndiff calibrate "$W" | tee "$OUT/benchmarks/calibrate.txt"
    classndiff evaluate "$W" | tee "$OUT/benchmarks/evaluate.txt"
    classndiff saliency "$W" --output "$W/saliency.json" | tee "$OUT/benchmarks/saliency.txt"
    classndiff trust "$W" --all | tee "$OUT/benchmarks/trust_all.txt"
    python benchmarks/camera_shift.py --weights "$W" --output "$OUT/camera_shift.json" \
        | tee "$OUT/benchmarks/camera_shift.txt"
    # --apply: the app's caution on brown or darker skin quotes these figures.
    python benchmarks/skin_tone_counterfactual.py --weights "$W" --apply \
        --output "$OUT/skin_tone_counterfactual.json" \
        --figure "$OUT/skin_tone_counterfactual.png" \
        | tee "$OUT/benchmarks/skin_tone_counterfactual.txt"
fi
if [ "${ONLY:-}" != classifier ]; then
    python benchmarks/generator_yardstick.py --weights "$W" \
        --output "$OUT/generator_yardstick.json" --grid "$OUT/generator_grid.png" \
        | tee "$OUT/benchmarks/generator_yardstick.txt"
fi
python benchmarks/counterfactuals.py --weights "$W" --output "$OUT/counterfactuals.json" \
    --figure "$OUT/counterfactuals.png" | tee "$OUT/benchmarks/counterfactuals.txt"
# The evaluation report the model card points to: per-group (skin tone, sex) results with
# lesion-bootstrap intervals, and the generated images graded by the independent evaluator.
# (Its metrics.json goes beside the report, not over the weights' own.)
classndiff evaluate "$W" --report "$OUT" --generate-per-cell 6 \
    --cas-steps 100 --saliency-limit 600 | tee "$OUT/benchmarks/evaluate_report.txt"
classndiff examples "$W" --output-dir examples | tee "$OUT/benchmarks/examples.txt"
classndiff figures "$W" ${1:+--log "$@"} | tee "$OUT/benchmarks/figures.txt"
