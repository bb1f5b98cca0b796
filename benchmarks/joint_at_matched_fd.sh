#!/usr/bin/env bash
# The paper's claim at matched FD: two generator arms of one training budget (joint and λ = 0,
# e.g. joint_vs_plain.sh's "joint-grafted" and "plain-grafted"), each sampled at every guidance
# scale of one menu on σ ∈ (0, 5] (dpm++ 20 steps, the shipped sampler), on the validation
# split's yardstick; then benchmarks/matched_fd.py reads the rule (its docstring).
#
#   bash benchmarks/joint_at_matched_fd.sh JOINT_WEIGHTS PLAIN_WEIGHTS OUT
#
# 8 yardsticks, about 3 minutes each on 2 cores (GUIDANCE="2 3 4.5 6" by default).
set -euo pipefail
JOINT=$1
PLAIN=$2
OUT=$3
mkdir -p "$OUT"
for g in ${GUIDANCE:-2 3 4.5 6}; do
    for arm in joint plain; do
        weights=$JOINT; [ "$arm" = plain ] && weights=$PLAIN
        [ -f "$OUT/$arm-g$g.json" ] || python benchmarks/generator_yardstick.py \
            --weights "$weights" --reference-split val --guidance-scale "$g" \
            --guidance-interval 0 5 --output "$OUT/$arm-g$g.json" --grid "$OUT/$arm-g$g.png" \
            > "$OUT/$arm-g$g.log" 2>&1
    done
done
python benchmarks/matched_fd.py "$OUT" | tee "$OUT/choice.txt"
