#!/bin/bash
# The latent DiT/2 continued from its 15-minute study arm: the shipped generator's recipe
# (tone-balanced sampling, λ = 0.05 through the frozen classifier on a quarter of the batch).
C=$HOME/.cache/classndiff/code-s11b
R=$HOME/.cache/classndiff/runs
cd /work/main
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=$C
exec python -m classndiff.cli.main train --config configs/embedded.json \
  --output-dir $R/s11-latent-long --init-from $R/study-s11/dit2-latent --time-budget ${BUDGET:-3300} \
  --set train.data_dir=/work/shared/data/ham10000 --set train.classifier_learning_rate=0 \
  --set train.joint_updates_classifier=false --set train.lambda_cls=${LAMBDA:-0.05} \
  --set train.joint_batch_fraction=0.25 --set train.lambda_saliency=0 --set train.classifier_retint=0 \
  --set train.classifier_augment=light --set train.tone_balance_power=0.5 --set train.batch_size=64 \
  --set train.learning_rate=0.0003 --set train.warmup_steps=100 --set train.eval_every=100000 \
  --set train.checkpoint_every=200 --set train.log_every=25 --set model.patch_size=2 "$@"
