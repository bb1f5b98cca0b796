"""Each speed benchmark runs in --quick mode (a tiny random model) and ends its output with
one JSON line of its figures — what CI and the report rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    "denoiser_candidates": {"candidates", "size"},
    "counterfactuals": {"pairs", "strength"},
    "camera_shift": {"shifts", "worst_accuracy", "n"},
    "skin_tone_counterfactual": {"targets", "bar_flip_rate_10pct", "bar_malignant_auc_change"},
    "fairness_table": {"arms", "chosen", "rule", "bar_flip_rate_10pct", "majority_tone_rate"},
    "operating_point": {"arms", "split"},
    "synthetic_set": {"images", "cells", "output"},
    "generator_yardstick": {"model", "real_floor", "tone_median_ita", "seconds_4_images"},
    "sampling": {"speedup", "fd_ratio", "dpm++", "ddpm", "bar_speedup_10x"},
    "train_step": {"joint_steps_per_s", "upstream_steps_per_s", "ratio", "bar_1_3x"},
    "latency": {"diagnose", "generate", "saliency_overhead_ms"},
    "test_time_views": {"splits", "diagnose_latency", "chosen", "rule"},
    "backbones": {"runs", "chosen", "rule"},
    "scaling": {"sampling_seconds_by_images", "sampling_seconds_by_steps_4_images",
                "train_step_seconds_by_batch"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_quick_ends_with_json(name: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick",
                           "--threads", "1"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    figures = json.loads(last)
    assert figures["benchmark"] == name
    assert figures["quick"] is True
    assert EXPECTED[name] <= set(figures)
