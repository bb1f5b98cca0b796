#!/usr/bin/env bash
# The generator's training on a lent GPU, prepared here so that the GPU's minutes go to training.
# Ten minutes of one H200 are worth days of this CPU (issue: generator), but the device machine
# takes only the working tree and carried files, 64 MiB in all (the whole tree is 61 MiB:
# `prepare` prints the lean branch to call it from), and has no internet, no diffusers and no
# dataset. So, three steps:
#
#   bash benchmarks/gpu_generator.sh prepare [DATA_DIR]  # here: .device/ (~8 MiB, git-ignored):
#        # the 7,011 train images at the denoiser's 64 px as WebP q90 (6.4 MiB), a trimmed
#        # metadata.csv, diffusers (pure Python, zipped, without its pipelines: unused here);
#        # prints what would travel
#   device run, carry [".device"], timeout_s 560:
#        bash benchmarks/gpu_generator.sh train            # there: BUDGET s (360) of training
#        # (BUDGET: the lease's budget_left_s less ~150 s for the start, the ~45 s of loading and
#        # export, and the return; the command must also end within the call's timeout_s)
#        # for each of three arms side by side (below), then under $OUT: each arm's denoiser
#        # in < 16 MiB parts (ARM.part00, ...), runs.tar.gz (each arm's config,
#        # log.csv, sha256) and train.log (every arm's output, prefixed): 8 files, the most the
#        # device returns
#   bash benchmarks/gpu_generator.sh receive FILES_AT [CANDIDATES]  # here: joins each arm's
#        # parts, checks them, adds the (frozen) autoencoder of the start, grafts the denoiser
#        # under the shipped classifier (`classndiff graft --new-denoiser`) into CANDIDATES/ARM
#        # (default runs/gpu-candidates) and prints the yardstick's command
#        # (benchmarks/generator_yardstick.py, ~4 min here)
#
# What it trains: the shipped generator, continued — the latent DiT/2 (the winner of the CPU
# study, reports/embedded/generator_study) in the 8×16×16 latents of the model's own frozen
# colour-skip autoencoder, started from weights/embedded (it travels with the tree; 14,237 CPU
# steps of 64), tone-balanced sampling, v-prediction, bf16, batch 256, from the shipped
# weights' own config. Three arms at once (ARMS, below), same seed, data and minutes: λ = 0
# (the shipping candidate) and joint arms (session 18: the paper's set-up with the classifier
# learning beside the denoiser, and the teacher target; by default now the teacher target
# twice, with the classifier learning and with it frozen: the learning one made a third of
# λ = 0's steps). Rule for the paper's claim, as in session 18
# (reports/embedded/latent/s18_gpu/README.md, rule 1): a joint arm meets it if its validation
# class fidelity is above λ = 0's and its validation FD is not above it. The data are read at
# 64 px (`model.pixel_size`: the classifier resizes them itself). Only the denoiser comes
# back, in float16 (3 × 20.7 MB within the device's 64 MiB); the frozen autoencoder and the
# classifier stay the shipped ones. An arm ships only if the yardstick prefers it on the
# validation split first (README: "Generation").
#
# tests/test_gpu_generator.py runs the three steps here on the tiny dataset (CPU, seconds of
# training); before a lease, the same on the real data: `bash benchmarks/gpu_generator.sh
# prepare`, `OUT=/tmp/gpu-out BUDGET=60 BATCH=8 bash benchmarks/gpu_generator.sh train`,
# `bash benchmarks/gpu_generator.sh receive /tmp/gpu-out /tmp/gpu-candidates`.
set -euo pipefail
STEP=${1:?prepare, train or receive}
absolute() { [ -z "$1" ] || realpath -m "$1"; }  # arguments, before moving to the repo's root
ARG2=$(absolute "${2:-}") ARG3=$(absolute "${3:-}")
DEV=$(absolute "${DEVICE_DIR:-}")
cd "$(dirname "$0")/.."
DEV=${DEV:-$PWD/.device}  # must be git-ignored to be carried (.gitignore has .device/)
# This project's environment here; on the device (no .venv travels) python3, which has torch.
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo "$PWD/.venv/bin/python" || echo python3)}

LEAN="reports docs examples weights/evaluator"  # what the device's training does not read

travelling_bytes() {  # [git pathspecs]: tracked files that exist + untracked, not ignored
    { git ls-files -z -- "$@"; git ls-files -z --others --exclude-standard -- "$@"; } \
        | xargs -0 du -cb 2>/dev/null | awk '$2 == "total" {n += $1} END {print n + 0}'
}

prepare() {
    local data=${ARG2:-../shared/data/ham10000}
    rm -rf "$DEV" && mkdir -p "$DEV/data/images" "$DEV/site"
    "$PY" - "$data" "$DEV/data" <<'PY'
"""The train images at 64 px (WebP q90: mean absolute error 1.9 / 255 against the 64 px
originals, 6.4 MiB; q80: 3.5 MiB at 2.8 / 255) and 64 of the val images (the
trainer loads a val split; this run never evaluates), with the columns training reads."""
import csv
import sys
from pathlib import Path

from PIL import Image

from classndiff.images import center_square

source, target = Path(sys.argv[1]), Path(sys.argv[2])
keep = ("image", "image_id", "lesion_id", "dx", "sex", "skin_tone_group", "split")
rows = list(csv.DictReader(open(source / "metadata.csv")))
rows = ([r for r in rows if r["split"] == "train"]
        + [r for r in rows if r["split"] == "val"][:64])
for row in rows:
    with Image.open(source / row["image"]) as im:
        small = center_square(im.convert("RGB"), 64, Image.Resampling.LANCZOS)
    row["image"] = f"images/{Path(row['image']).stem}.webp"
    small.save(target / row["image"], "WEBP", quality=90)
with open(target / "metadata.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, keep, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
print(f"{len(rows)} images → {target}")
PY
    # The one package the device lacks (it has torch, timm, accelerate, safetensors, and
    # huggingface_hub 1.33, which diffusers accepts): diffusers, pure Python, copied from this
    # environment without its pipelines (imported lazily, unused here).
    "$PY" - "$DEV/site" <<'PY'
import shutil
import sys
from pathlib import Path

import diffusers

site = Path(sys.argv[1])
root = Path(diffusers.__file__).parent
shutil.copytree(root, site / root.name, ignore=shutil.ignore_patterns("__pycache__"))
for folder in ("pipelines", "modular_pipelines"):
    for child in (site / "diffusers" / folder).iterdir():
        if child.name != "__init__.py":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
shutil.make_archive(str(site), "zip", site)  # what travels is counted unpacked: zip it
shutil.rmtree(site)
PY
    # What travels: tracked files that exist, untracked ones git does not ignore, and $DEV.
    # The device needs neither the reports, docs and examples nor the evaluator's weights;
    # when the whole tree is too large (it is: 61 MiB in session 18), a throwaway branch
    # without them travels instead (LEAN, printed below).
    local tree lean dev limit=$((63 * 1048576)) excluded=() folder
    for folder in $LEAN; do excluded+=(":(exclude)$folder"); done
    tree=$(travelling_bytes .)
    lean=$(travelling_bytes . "${excluded[@]}")
    dev=$(du -sb "$DEV" | cut -f1)
    echo "would travel: tree $((tree / 1048576)) MiB (without $LEAN: $((lean / 1048576)) MiB)" \
         "+ $DEV $((dev / 1048576)) MiB (limit 64 MiB)"
    if [ $((tree + dev)) -lt "$limit" ]; then
        return
    elif [ $((lean + dev)) -lt "$limit" ]; then
        echo "the whole tree is too large: call the device from a lean branch, then come back:"
        echo "  git switch -c gpu-lean && git rm -rq $LEAN && git commit -qm 'lean tree for the device'"
        echo "  (device run) ; git switch - && git branch -D gpu-lean"
    else
        echo "too large for the device, even without $LEAN" >&2; exit 1
    fi
}

# The arms, trained side by side on the one GPU (each process leaves it mostly idle: a 10 M
# DiT at batch 256 is launch-bound), from the same weights, seed, data and wall minutes:
#   plain    λ = 0, the classifier frozen: the shipping candidate and the ablation's baseline
#   joint    the paper's set-up: λ = 0.05 on CE(classifier(x̂0), dx), the classifier learning
#            beside the denoiser (1e-4) from real images and from x̂0
#   teacher  the same, with the bounded target KL(classifier(x0) ‖ classifier(x̂0)), λ = 0.2
#   teacher-frozen  the teacher target with the classifier frozen (the shipped one): no
#            classifier pass on the real batch, so it keeps most of plain's steps per minute
#            (session 18: the learning teacher made a third of plain's steps in the same
#            minutes, and came within 1.3 FD of it)
#   embedding  the perceptual target (λ 0.14 · ᾱ_t · ‖f̂ − f‖² of the frozen classifier's
#            pooled features of x̂0 at 32 px and of x0) with its gradient stopped everywhere but
#            the diagnosis embedding table (on this CPU: after a warm-up and at equal steps,
#            fidelity up with the ImageNet FD unchanged, reports/embedded/latent/s38_dx_embedding;
#            from the trained start, no effect in 725 steps, s39_trained_start)
#   align    representation alignment (REPA): λ_align 0.5 · (1 − cos) between a head on the
#            DiT's tokens after block 3 and the frozen classifier's feature map of the clean
#            image; no x̂0 term, no classifier pass per step (its targets are computed once, at
#            the start). On this CPU after a warm-up it kept 89 % of λ = 0's steps and raised
#            fidelity 0.64 → 0.76 at a higher FD (reports/embedded/latent/s43_alignment)
arm_settings() {
    case "$1" in
        plain) echo "--set train.lambda_cls=0 --set train.classifier_learning_rate=0" ;;
        joint) echo "--set train.lambda_cls=0.05 --set train.classifier_learning_rate=0.0001" \
                    "--set train.joint_updates_classifier=true" ;;
        teacher) echo "--set train.lambda_cls=0.2 --set train.cls_x0_target=teacher" \
                      "--set train.classifier_learning_rate=0.0001" \
                      "--set train.joint_updates_classifier=true" ;;
        teacher-frozen) echo "--set train.lambda_cls=0.2 --set train.cls_x0_target=teacher" \
                             "--set train.classifier_learning_rate=0" ;;
        embedding) echo "--set train.lambda_cls=0.14 --set train.cls_x0_target=features" \
                        "--set train.cls_x0_size=32 --set train.cls_x0_reaches=dx_embedding" \
                        "--set train.classifier_learning_rate=0" ;;
        align) echo "--set train.lambda_cls=0 --set train.lambda_align=0.5" \
                    "--set train.align_depth=3 --set train.classifier_learning_rate=0" ;;
        *) echo "unknown arm $1: plain, joint, teacher, teacher-frozen, embedding or align" >&2
           return 2 ;;
    esac
}

train() {
    local out=${OUT:?the device sets OUT} runs=/tmp/gpu-generator site=/tmp/gpu-generator-site
    local arms=${ARMS:-plain teacher-frozen teacher} arm pids=() failed=0
    rm -f "$out"/*.part* "$out/train.log" "$out/runs.tar.gz"  # a rehearsal's OUT may hold more
    rm -rf "$site" "$runs" && "$PY" -m zipfile -e "$DEV/site.zip" "$site" && mkdir -p "$runs"
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    export OMP_NUM_THREADS=${THREADS:-4}
    "$PY" -c "import diffusers, torch; print('diffusers from', diffusers.__file__, 'torch', \
torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/train.log"
    for arm in $arms; do
        local settings
        settings=$(arm_settings "$arm")
        # shellcheck disable=SC2086  # settings is a list of --set options
        "$PY" -m classndiff train --config weights/embedded/config.json --output-dir "$runs/$arm" \
            --init-from weights/embedded --time-budget "${BUDGET:-360}" --max-steps 1000000 \
            --set "train.data_dir=$DEV/data" --set model.classifier_init=null \
            --set model.pixel_size=64 --set train.lambda_saliency=0 \
            --set train.classifier_retint=0 --set train.lambda_adv=0 \
            --set train.tone_consistency=0 --set train.classifier_augment=light \
            --set train.synthetic_dir=null \
            --set train.tone_balance_power=0.5 --set train.balance_power=0.75 \
            --set train.joint_updates_classifier=false --set train.joint_batch_fraction=0.25 \
            --set "train.batch_size=${BATCH:-256}" --set train.learning_rate=0.0003 \
            --set train.warmup_steps=200 --set train.eval_every=1000000 \
            --set train.checkpoint_every=1000000 --set train.log_every=100 \
            --set train.export_dtype=float16 $settings 2>&1 \
            | sed -u "s/^/[$arm] /" >> "$out/train.log" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    # Back to the session (the device returns 8 files, 64 MiB at most): each arm's denoiser in
    # < 16 MiB parts (20.7 MB; with the autoencoder, three arms were 78 MB and one part stayed
    # behind), and one archive of every arm's config, log.csv and sha256.
    for arm in $arms; do
        [ -f "$runs/$arm/model.safetensors" ] || { echo "[$arm] exported nothing" >&2; continue; }
        "$PY" - "$runs/$arm" "$out" "$arm" <<'PY'
import hashlib
import sys
from pathlib import Path

from safetensors.torch import load_file, save

run, out, arm = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
state = {k: v.half() if v.is_floating_point() else v
         for k, v in load_file(str(run / "model.safetensors")).items()
         if k.startswith("denoiser.")}  # the autoencoder is frozen: the session has it
blob = save(state)
part = 15 * 2**20
for i in range(0, len(blob), part):
    (out / f"{arm}.part{i // part:02d}").write_bytes(blob[i:i + part])
(run / "denoiser.sha256").write_text(hashlib.sha256(blob).hexdigest() + "\n")
print(f"[{arm}] {len(state)} tensors, {len(blob) / 1e6:.1f} MB in {-(-len(blob) // part)} parts")
PY
    done
    tar -czf "$out/runs.tar.gz" -C "$runs" --exclude=model.safetensors --exclude=ema.safetensors \
        --exclude='checkpoint*' .
    ls -l "$out"
    return "$failed"
}

receive() {
    local got=${ARG2:?the folder the device files came back to}
    local candidates=${ARG3:-$PWD/runs/gpu-candidates} arm
    case "$candidates" in "$PWD"/weights|"$PWD"/weights/*)
        echo "the candidates go beside weights/, not into it: $candidates" >&2; exit 2;; esac
    rm -rf "$candidates" && mkdir -p "$candidates/runs"
    tar -xzf "$got/runs.tar.gz" -C "$candidates/runs"
    for arm in $(cd "$candidates/runs" && ls); do
        local run=$candidates/runs/$arm
        [ -f "$got/$arm.part00" ] || { echo "[$arm] no weights came back"; continue; }
        # A run folder as `classndiff graft` reads it (the run's config, its denoiser's tensors).
        cat "$got/$arm".part* > "$run/model.safetensors"
        echo "$(cat "$run/denoiser.sha256")  $run/model.safetensors" | sha256sum --check --quiet
        # The frozen autoencoder did not travel back: the start's, which it trained in.
        "$PY" - "$run/model.safetensors" weights/embedded/model.safetensors <<'PY'
import sys

from safetensors.torch import load_file, save_file

run, start = sys.argv[1], sys.argv[2]
state = load_file(run)
state.update({k: v for k, v in load_file(start).items()
              if k.startswith("vae.") and k not in state})
save_file(state, run, metadata={"format": "pt"})
PY
        "$PY" -m classndiff graft weights/embedded --denoiser-from "$run" --new-denoiser \
            --output-dir "$candidates/$arm"
        echo "next: python benchmarks/generator_yardstick.py --weights $candidates/$arm" \
            "--reference-split val --output OUT/$arm.json --grid OUT/$arm.png"
    done
}

case "$STEP" in
    prepare|train|receive) "$STEP" ;;
    *) echo "unknown step $STEP: prepare, train or receive" >&2; exit 2 ;;
esac
