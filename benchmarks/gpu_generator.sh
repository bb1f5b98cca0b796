#!/usr/bin/env bash
# The generator's training on a lent GPU, prepared here so that the GPU's minutes go to training.
# Ten minutes of one H200 are worth days of this CPU (issue: generator), but the device machine
# takes only the working tree and carried files, 64 MiB in all (the tree is ~52 MiB with
# weights/), and has no internet, no diffusers and no dataset. So, three steps:
#
#   bash benchmarks/gpu_generator.sh prepare [DATA_DIR]  # here: .device/ (~8 MiB, git-ignored):
#        # the 7,011 train images at the denoiser's 64 px as WebP q90 (6.4 MiB), a trimmed
#        # metadata.csv, diffusers (pure Python, zipped, without its pipelines: unused here);
#        # prints what would travel
#   device run, carry [".device"], timeout_s 560:
#        bash benchmarks/gpu_generator.sh train            # there: 6 min of training, then
#        # under $OUT: the denoiser in < 16 MiB parts and its sha256, config, logs, a sample
#        # grid (7 files; the device returns 8 at most)
#   bash benchmarks/gpu_generator.sh receive FILES_AT [CANDIDATE]  # here: joins the parts,
#        # grafts the new denoiser under the shipped classifier (`classndiff graft
#        # --new-denoiser`) into CANDIDATE (default runs/gpu-candidate) and prints the
#        # yardstick's command (benchmarks/generator_yardstick.py, ~4 min here)
#
# What it trains: the shipped generator, continued — the latent DiT/2 (the winner of the CPU
# study, reports/embedded/generator_study) in the 8×16×16 latents of the model's own frozen
# colour-skip autoencoder, started from weights/embedded (it travels with the tree; 7,123 CPU
# steps of 64), with the plain denoising loss (λ = 0: through the decoder, the joint term
# taught a CPU run a checkered texture; README "Generation"), tone-balanced sampling,
# v-prediction, bf16, batch 256. The data are read at 64 px (`model.pixel_size`: only the
# frozen classifier reads pixels, and it resizes them itself). The denoiser and the (unchanged)
# autoencoder come back in float16; the classifier stays the shipped one. Ship it only if the
# yardstick beats the shipped generator on the validation split first (README: "Generation").
#
# tests/test_gpu_generator.py runs the three steps here on the tiny dataset (CPU, seconds of
# training); before a lease, the same on the real data: `bash benchmarks/gpu_generator.sh
# prepare`, `OUT=/tmp/gpu-out BUDGET=60 BATCH=8 bash benchmarks/gpu_generator.sh train`,
# `bash benchmarks/gpu_generator.sh receive /tmp/gpu-out /tmp/gpu-candidate`.
set -euo pipefail
STEP=${1:?prepare, train or receive}
absolute() { [ -z "$1" ] || realpath -m "$1"; }  # arguments, before moving to the repo's root
ARG2=$(absolute "${2:-}") ARG3=$(absolute "${3:-}")
DEV=$(absolute "${DEVICE_DIR:-}")
cd "$(dirname "$0")/.."
DEV=${DEV:-$PWD/.device}  # must be git-ignored to be carried (.gitignore has .device/)
# This project's environment here; on the device (no .venv travels) python3, which has torch.
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo "$PWD/.venv/bin/python" || echo python3)}
CONTINUE=(--init-from weights/embedded --set model.patch_size=2 --set model.pixel_size=64
          --set train.lambda_cls=0)

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
    local tree dev
    tree=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } \
           | xargs -0 du -cb 2>/dev/null | awk '$2 == "total" {n += $1} END {print n + 0}')
    dev=$(du -sb "$DEV" | cut -f1)
    echo "would travel: tree $((tree / 1048576)) MiB + $DEV $((dev / 1048576)) MiB (limit 64 MiB)"
    [ $((tree + dev)) -lt $((63 * 1048576)) ] || { echo "too large for the device" >&2; exit 1; }
}

train() {
    local out=${OUT:?the device sets OUT} run=/tmp/gpu-generator site=/tmp/gpu-generator-site
    rm -f "$out"/denoiser.safetensors.part*  # a rehearsal's OUT may hold an older run's
    rm -rf "$site" && "$PY" -m zipfile -e "$DEV/site.zip" "$site"
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    "$PY" -c "import diffusers, torch; print('diffusers from', diffusers.__file__, 'torch', \
torch.__version__, 'cuda', torch.cuda.is_available())"
    rm -rf "$run"
    "$PY" -m classndiff train --config configs/embedded.json --output-dir "$run" \
        --time-budget "${BUDGET:-360}" "${CONTINUE[@]}" \
        --set "train.data_dir=$DEV/data" --set model.classifier_init=null \
        --set train.classifier_learning_rate=0 \
        --set train.lambda_saliency=0 --set train.classifier_retint=0 \
        --set train.classifier_augment=light --set train.tone_balance_power=0.5 \
        --set "train.batch_size=${BATCH:-256}" --set train.learning_rate=0.0003 \
        --set train.warmup_steps=200 --set train.eval_every=1000000 \
        --set train.checkpoint_every=1000000 --set train.log_every=50 2>&1 | tee "$out/train.log"
    # Back to the session: config, log, the generator's weights in < 16 MiB parts, a grid.
    cp "$run/config.json" "$run/log.csv" "$out/"
    "$PY" - "$run" "$out" <<'PY'
import hashlib
import sys
from pathlib import Path

from safetensors.torch import load_file, save

run, out = Path(sys.argv[1]), Path(sys.argv[2])
state = {k: v.half() if v.is_floating_point() else v
         for k, v in load_file(str(run / "model.safetensors")).items()
         if k.startswith(("denoiser.", "vae."))}
blob = save(state)
part = 15 * 2**20
for i in range(0, len(blob), part):
    (out / f"denoiser.safetensors.part{i // part:02d}").write_bytes(blob[i:i + part])
(out / "denoiser.sha256").write_text(hashlib.sha256(blob).hexdigest() + "\n")
print(f"{len(state)} tensors, {len(blob) / 1e6:.1f} MB in {-(-len(blob) // part)} parts")
PY
    # One grid (the device returns at most 8 files): rows nv, mel lighter, mel brown, bkl.
    "$PY" - "$run" "$out/samples.png" <<'PY' || echo "no sample grid (the weights came back)"
import sys

import numpy as np
from PIL import Image

from classndiff import ClassNDiffPipeline

pipe = ClassNDiffPipeline.from_pretrained(sys.argv[1])
rows = [np.concatenate([np.asarray(im) for im in pipe.generate(dx, tone, num_images=4).images], 1)
        for dx, tone in (("nv", "lighter"), ("mel", "lighter"), ("mel", "brown"), ("bkl", None))]
Image.fromarray(np.concatenate(rows, 0)).save(sys.argv[2])
PY
}

receive() {
    local got=${ARG2:?the folder the device files came back to}
    local candidate=${ARG3:-$PWD/runs/gpu-candidate}
    local run=$candidate.run
    case "$candidate" in "$PWD"/weights|"$PWD"/weights/*)
        echo "the candidate goes beside weights/, not into it: $candidate" >&2; exit 2;; esac
    rm -rf "$run" "$candidate" && mkdir -p "$run"
    # A run folder as `classndiff graft` reads it (the run's config, its denoiser's tensors).
    cat "$got"/denoiser.safetensors.part* > "$run/model.safetensors"
    echo "$(cat "$got/denoiser.sha256")  $run/model.safetensors" | sha256sum --check --quiet
    cp "$got/config.json" "$got/log.csv" "$run/"
    "$PY" -m classndiff graft weights/embedded --denoiser-from "$run" --new-denoiser \
        --output-dir "$candidate"
    echo "next: python benchmarks/generator_yardstick.py --weights $candidate" \
        "--output $candidate/generator_yardstick.json --grid $candidate/generator_grid.png"
}

case "$STEP" in
    prepare|train|receive) "$STEP" ;;
    *) echo "unknown step $STEP: prepare, train or receive" >&2; exit 2 ;;
esac
