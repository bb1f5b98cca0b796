"""benchmarks/gpu_generator.sh, the prepared GPU run of the generator, end to end on the CPU
with the tiny dataset: what travels fits and imports, the training exports parts that join
back into the shipped weights' layout (the latent denoiser and its autoencoder). (Only CUDA
itself is left for the lease.)"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_generator.sh"


def run_step(*args: str, env: dict[str, str], timeout: int = 300) -> str:
    done = subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


@pytest.fixture(scope="module")
def prepared(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("gpu")
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "DEVICE_DIR": str(work / "device"), "HF_HUB_OFFLINE": "1"}
    printed = run_step("prepare", str(tiny_data), env=env)
    return work, env, printed


def test_prepare_packs_the_data_and_the_missing_packages(prepared, tiny_data: Path) -> None:
    from classndiff.data import LesionDataset

    work, _, printed = prepared
    assert "would travel" in printed and "without reports docs examples" in printed
    rows = list(csv.DictReader(open(work / "device/data/metadata.csv")))
    source = list(csv.DictReader(open(tiny_data / "metadata.csv")))
    source = ([r for r in source if r["split"] == "train"]
              + [r for r in source if r["split"] == "val"][:64])
    assert [r["image_id"] for r in rows] == [r["image_id"] for r in source]
    assert all(r["image"].endswith(".webp") for r in rows)
    train = LesionDataset(work / "device/data", "train", image_size=128)
    assert train.images.shape[1:] == (3, 128, 128) and len(train) == sum(
        r["split"] == "train" for r in source)
    names = zipfile.ZipFile(work / "device/site.zip").namelist()
    assert "diffusers/schedulers/scheduling_ddim.py" in names
    assert not [n for n in names if n.startswith("diffusers/pipelines/stable_diffusion")]


def test_train_and_receive_round_trip(prepared) -> None:
    from safetensors.torch import load_file

    work, env, _ = prepared
    out = work / "out"
    out.mkdir()
    run_step("train", env={**env, "OUT": str(out), "BUDGET": "4", "BATCH": "2",
                           "ARMS": "plain align embedding",
                           "THREADS": "1"})
    log = (out / "train.log").read_text()
    assert "diffusers from /tmp/gpu-generator-site/" in log  # the packed copy, not the venv's
    assert "[plain]" in log and "[align]" in log and "[embedding]" in log
    for arm in ("plain", "align", "embedding"):
        parts = sorted(out.glob(f"{arm}.part*"))
        assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    assert (out / "runs.tar.gz").exists()
    assert len(list(out.iterdir())) <= 8  # what the device returns at most
    one_arm = sum(p.stat().st_size for p in out.glob("plain.part*"))
    assert 3 * one_arm + (out / "runs.tar.gz").stat().st_size < 63 * 2**20  # three arms fit
    refused = subprocess.run(["bash", str(SCRIPT), "receive", str(out), "weights/x"], cwd=ROOT,
                             env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "beside weights/" in refused.stderr
    candidates = work / "candidates"
    run_step("receive", str(out), str(candidates), env=env)
    shipped = load_file(str(ROOT / "weights/embedded/model.safetensors"))
    for arm in ("plain", "align", "embedding"):
        grafted = load_file(str(candidates / arm / "model.safetensors"))
        trained = load_file(str(candidates / "runs" / arm / "model.safetensors"))
        assert all(grafted[k].equal(v) for k, v in shipped.items() if k.startswith("classifier."))
        assert all(grafted[k].equal(v) for k, v in trained.items())
        # Only the denoiser travels back; the frozen autoencoder is the start's.
        assert all(grafted[k].equal(v) for k, v in shipped.items() if k.startswith("vae."))
        assert any(k.startswith("vae.") for k in grafted)
        config = (candidates / arm / "config.json").read_text()
        assert '"vae_config"' in config and '"patch_size": 2' in config
    # Each arm really trained with its own objective (the arms differ), the classifier frozen;
    # the alignment arm's head stayed behind (training only: neither exported nor carried).
    align = json.loads((candidates / "runs/align/config.json").read_text())["train"]
    assert align["lambda_align"] == 0.5 and align["align_depth"] == 3
    assert align["lambda_cls"] == 0 and align["classifier_learning_rate"] == 0
    assert not [k for k in load_file(str(candidates / "align/model.safetensors"))
                if k.startswith("alignment_head.")]
    embedding = json.loads((candidates / "runs/embedding/config.json").read_text())["train"]
    assert embedding["cls_x0_reaches"] == "dx_embedding" and embedding["lambda_cls"] == 0.14
