# Sourced by joint_vs_plain.sh and joint_step_cost.sh: the settings every arm of the joint
# term against λ = 0 shares — START's config and weights, a quarter of each batch for the
# term, the classifier frozen, no saliency / re-tint / adversary / consistency term,
# tone-balanced sampling, batch 64. An arm's own --set options come after and override these.
# shellcheck shell=bash
DATA=${CLASSNDIFF_DATA:-../shared/data/ham10000}
COMMON=(--config "$START/config.json" --init-from "$START" --max-steps "$STEPS"
        --set "train.data_dir=$DATA" --set train.classifier_learning_rate=0
        --set train.joint_updates_classifier=false --set train.joint_batch_fraction=0.25
        --set train.lambda_saliency=0 --set train.classifier_retint=0 --set train.lambda_adv=0
        --set train.tone_consistency=0 --set train.tone_balance_power=0.5
        --set train.batch_size=64 --set train.learning_rate=0.0001 --set train.warmup_steps=50
        --set train.eval_every=100000 --set train.checkpoint_every=300 --set train.log_every=25
        --set train.classifier_augment=light --set "train.time_budget_s=${BUDGET_S:-0}"
        --set train.export_dtype=float32)
