"""Each speed benchmark runs in --quick mode (a tiny random model) and ends its output with
one JSON line of its figures — what CI and the report rely on."""

from __future__ import annotations

import functools
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
    "counterfactual_blockiness": {"pairs", "split"},
    "camera_shift": {"shifts", "worst_accuracy", "n"},
    "skin_tone_counterfactual": {"targets", "whole_field", "bar_flip_rate_10pct",
                                 "bar_malignant_auc_change"},
    "fairness_frontier": {"arms", "taus", "split"},
    "lesion_crop": {"inputs", "split", "segmented"},
    "fairness_table": {"arms", "chosen", "rule", "bar_flip_rate_10pct", "majority_tone_rate"},
    "operating_point": {"arms", "split"},
    "synthetic_set": {"images", "cells", "output"},
    "generator_yardstick": {"model", "real_floor", "tone_median_ita", "seconds_4_images"},
    "joint_term_price": {"plain_pass_ms", "term_ms_by_samples", "table_gradient_ratio",
                         "denoiser_gradient_norm"},
    "sampling": {"speedup", "fd_ratio", "dpm++", "ddpm", "bar_speedup_10x"},
    "train_step": {"joint_steps_per_s", "upstream_steps_per_s", "ratio", "bar_1_3x"},
    "latency": {"diagnose", "generate", "saliency_overhead_ms"},
    "test_time_views": {"splits", "diagnose_latency", "chosen", "rule"},
    "backbones": {"runs", "chosen", "rule"},
    "scaling": {"sampling_seconds_by_images", "sampling_seconds_by_steps_4_images",
                "train_step_seconds_by_batch"},
}


@functools.cache  # a benchmark read by two tests runs once; the tests only read its figures
def _quick(name: str, *extra: str) -> dict:
    """Runs benchmarks/NAME.py --quick [EXTRA] and returns the JSON line it ends with."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick",
                           "--threads", "1", *extra], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_quick_ends_with_json(name: str) -> None:
    figures = _quick(name)
    assert figures["benchmark"] == name
    assert figures["quick"] is True
    assert EXPECTED[name] <= set(figures)


def test_generator_yardstick_draws_other_seeds_against_the_same_floor() -> None:
    """--draw K samples other images from the same weights (every figure of the generated set
    moves) and leaves the real floor as it was: the count's own noise, read by redrawing."""
    first, second = _quick("generator_yardstick"), _quick("generator_yardstick", "--draw", "1")
    assert (first["draw"], second["draw"]) == (0, 1)
    assert first["real_floor"] == second["real_floor"]
    assert first["model"]["fd"] != second["model"]["fd"]
    assert first["tone_median_ita"] != second["tone_median_ita"]


def test_camera_shift_counts_changed_answers_against_a_quarter_turn() -> None:
    """Each shift's share of changed answers is against the unshifted reading (0 for
    "none"), and the quarter-turn control is read beside the shifts but not counted as one."""
    figures = _quick("camera_shift")
    shifts = figures["shifts"]
    assert shifts["none"]["answers_changed"] == 0.0
    assert any(v["answers_changed"] > 0 for v in shifts.values())  # the tiny model is moved
    control = [k for k in shifts if k.startswith("quarter turn")]
    assert len(control) == 1 and 0.0 <= shifts[control[0]]["answers_changed"] <= 1.0
    assert figures["worst_accuracy"] == min(v["accuracy"] for k, v in shifts.items()
                                            if k != control[0])


def test_weight_average_is_the_weighted_mean_of_floats(tmp_path: Path) -> None:
    """benchmarks/weight_average.py: floats averaged by share, integers from the first, the
    first's config copied; ingredients of another shape refused with a message."""
    import torch
    from safetensors.torch import load_file, save_file

    for name, value in (("a", 1.0), ("b", 4.0)):
        (tmp_path / name).mkdir()
        save_file({"w": torch.full((2, 3), value, dtype=torch.float16),
                   "steps": torch.tensor(7 if name == "a" else 9)},
                  str(tmp_path / name / "model.safetensors"))
        (tmp_path / name / "config.json").write_text(json.dumps({"name": name}))
    script = str(ROOT / "benchmarks" / "weight_average.py")
    done = subprocess.run([sys.executable, script, "--output", str(tmp_path / "soup"),
                           "--ingredient", f"{tmp_path / 'a'}=2", "--ingredient",
                           f"{tmp_path / 'b'}=1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    soup = load_file(str(tmp_path / "soup" / "model.safetensors"))
    assert soup["w"].dtype == torch.float16
    assert torch.equal(soup["w"], torch.full((2, 3), 2.0, dtype=torch.float16))  # ⅔·1 + ⅓·4
    assert int(soup["steps"]) == 7
    assert json.loads((tmp_path / "soup" / "config.json").read_text()) == {"name": "a"}

    save_file({"w": torch.zeros(3, 2), "steps": torch.tensor(1)},
              str(tmp_path / "b" / "model.safetensors"))
    refused = subprocess.run([sys.executable, script, "--output", str(tmp_path / "bad"),
                              "--ingredient", str(tmp_path / "a"), "--ingredient",
                              str(tmp_path / "b")], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "same tensors" in refused.stderr


def test_fresh_denoiser_replaces_the_denoiser_alone(tiny_weights: Path, tmp_path: Path) -> None:
    """benchmarks/fresh_denoiser.py (a from-scratch start): every denoiser tensor is the
    model's own fresh initialisation, every other tensor and file is the exported one's."""
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "scratch"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fresh_denoiser.py"),
                           str(tiny_weights), str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    old = load_file(str(tiny_weights / "model.safetensors"))
    new = load_file(str(out / "model.safetensors"))
    assert new.keys() == old.keys()
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    denoiser = {k for k in old if k.startswith("denoiser.")}
    assert changed and changed <= denoiser  # zero-initialised tensors may stay equal
    assert all(new[k].dtype == old[k].dtype for k in new)
    assert (out / "config.json").read_text() == (tiny_weights / "config.json").read_text()


def test_seconds_per_step_reads_the_log_between_its_first_and_last_rows(tmp_path: Path) -> None:
    """benchmarks/seconds_per_step.py (joint_step_cost.sh, generator_study.sh): start-up before
    the first logged row is left out; a log of one row is refused in words."""
    log = tmp_path / "log.csv"
    log.write_text("step,loss,seconds\n20,0.6,30.0\n40,0.6,48.0\n60,0.5,70.0\n")
    script = str(ROOT / "benchmarks" / "seconds_per_step.py")

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, script, str(log), *extra],
                              capture_output=True, text=True, timeout=60)

    assert run().stdout.strip() == "1.00 s a step (steps 20–60)"  # (70 − 30) / 40
    assert run("--minutes", "15").stdout.strip() == "900"
    log.write_text("step,loss,seconds\n20,0.6,30.0\n")
    refused = run()
    assert refused.returncode != 0 and "needs two logged steps" in refused.stderr


def _yardstick_record(folder: Path, name: str, fd: float, fidelity: float,
                      fd_evaluator: float | None = None) -> None:
    model = {"fd": fd, "precision": 0.7, "recall": 0.5, "diversity_ratio": 0.8,
             "blockiness": 1.1, "class_fidelity_macro": fidelity}
    if fd_evaluator is not None:
        model["fd_evaluator"] = fd_evaluator
    (folder / f"{name}.json").write_text(json.dumps({"model": model}))


@pytest.mark.parametrize(("joint_points", "met"), [
    # The joint arm's best point under F* = 63.8 (the plain arm at 4.5) is 0.92 at g 3: met.
    ({"2": (60.0, 0.88), "3": (63.0, 0.92), "4.5": (72.0, 0.94)}, True),
    # Its 0.94 is above F*; under it only 0.90, within the noise of the plain arm's 0.893.
    ({"2": (60.0, 0.85), "3": (63.0, 0.90), "4.5": (72.0, 0.94)}, False),
    # No joint point under F* at all.
    ({"3": (66.0, 0.92), "4.5": (72.0, 0.94)}, False),
])
def test_matched_fd_rule_compares_fidelity_under_the_plain_arms_fd(
        tmp_path: Path, joint_points: dict, met: bool) -> None:
    for g, (fd, fidelity) in {"2": (58.0, 0.85), "3": (60.0, 0.87), "4.5": (63.8, 0.893),
                              "6": (68.0, 0.91)}.items():
        _yardstick_record(tmp_path, f"plain-g{g}", fd, fidelity)
    for g, (fd, fidelity) in joint_points.items():
        _yardstick_record(tmp_path, f"joint-g{g}", fd, fidelity)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "matched_fd.py"),
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    verdict = json.loads(done.stdout.strip().splitlines()[-1])
    assert verdict["fd_cap"] == 63.8
    assert verdict["plain"] == [4.5, 0.893]  # g 6 is above F*, so the plain arm keeps 4.5
    assert verdict["claim_met"] is met


@pytest.mark.parametrize(("joint_g3_evaluator_fd", "met"), [(90.0, True), (95.0, False)])
def test_matched_fd_rule_caps_the_evaluator_features_fd_too(
        tmp_path: Path, joint_g3_evaluator_fd: float, met: bool) -> None:
    """Records with FD in the evaluator's features: a point counts only under both caps (the
    λ = 0 arm's two FDs at 4.5)."""
    for g, fd, fidelity, second in (("3", 60.0, 0.87, 88.0), ("4.5", 63.8, 0.893, 92.0)):
        _yardstick_record(tmp_path, f"plain-g{g}", fd, fidelity, second)
    _yardstick_record(tmp_path, "joint-g3", 63.0, 0.92, joint_g3_evaluator_fd)
    _yardstick_record(tmp_path, "joint-g4.5", 66.0, 0.93, 93.0)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "matched_fd.py"),
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    verdict = json.loads(done.stdout.strip().splitlines()[-1])
    assert verdict["evaluator_fd_cap"] == 92.0
    assert verdict["claim_met"] is met


def _fairness_arm(accuracy: float, flips: float, field_flips: float,
                  field_auc_change: float) -> dict:
    def value(v: float) -> dict:
        return {"value": v}

    return {"val": {"ci": {"overall": {"accuracy": value(accuracy), "malignant_auc": value(0.9),
                                       "balanced_accuracy": value(0.68),
                                       "sensitivity": value(0.65)}},
                    "flip_rate_darker": flips, "malignant_auc_change_darker": -0.01,
                    "flip_rate_darker_whole_field": field_flips,
                    "malignant_auc_change_darker_whole_field": field_auc_change}}


@pytest.mark.parametrize(("arm", "flips_rule", "field_rule"), [
    (_fairness_arm(0.80, 0.145, 0.12, -0.02), None, "arm"),  # robust over the whole field
    (_fairness_arm(0.80, 0.16, 0.12, -0.02), None, None),  # but more skin-only flips
    (_fairness_arm(0.78, 0.14, 0.12, -0.02), None, None),  # less accurate
    (_fairness_arm(0.80, 0.13, 0.18, -0.05), "arm", None),  # fewer skin-only flips only
    (_fairness_arm(0.80, 0.15, 0.17, -0.02), None, None),  # whole-field flips 1 point fewer
])
def test_fairness_rules_read_the_table(tmp_path: Path, arm: dict, flips_rule: str | None,
                                       field_rule: str | None) -> None:
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"arms": {"base": _fairness_arm(0.80, 0.15, 0.18, -0.05),
                                          "arm": arm}}))

    def ship(*extra: str) -> str | None:
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks/fairness_rule.py"),
                              str(table), *extra], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])["ship"]

    assert ship() == flips_rule
    assert ship("--whole-field") == field_rule


def test_skin_tone_counterfactual_apply_writes_the_record_into_the_weights(
        tiny_weights: Path, tiny_data: Path, tmp_path: Path) -> None:
    import shutil

    from classndiff.config import ClassNDiffConfig

    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/skin_tone_counterfactual.py"),
                          "--weights", str(weights), "--data-dir", str(tiny_data),
                          "--split", "test", "--apply"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    check = ClassNDiffConfig.from_json(weights / "config.json").skin_tone_check
    assert check is not None and check.split == "test"
    assert set(check.groups) == {"brown", "darker"}
    assert check.groups["darker"]["flip_rate"] == result["whole_field"]["darker"]["flip_rate"]
    assert check.n == result["whole_field"]["darker"]["n"] > 0


def test_fairness_table_reuses_only_rows_measured_on_the_same_model(
        tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/fairness_table.py --reuse: an earlier row is copied only for the very same
    weights and config (by sha256; by name and folder for a table without fingerprints), and
    never across --quick or another number of bootstrap repetitions."""
    import importlib.util
    import shutil

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # for its `from _bench import`
    spec = importlib.util.spec_from_file_location("fairness_table",
                                                  ROOT / "benchmarks" / "fairness_table.py")
    table_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table_module)
    same, other = tmp_path / "same", tmp_path / "other"
    shutil.copytree(tiny_weights, same)
    shutil.copytree(tiny_weights, other)
    config = json.loads((other / "config.json").read_text())
    config["model"]["classifier_test_views"] = 2  # the same weights, read otherwise
    (other / "config.json").write_text(json.dumps(config))
    same_print, other_print = (table_module.fingerprint(str(same)),
                               table_module.fingerprint(str(other)))
    assert table_module.fingerprint(None) is None
    row = {"weights": "elsewhere", "fingerprint": same_print, "val": {"n": 1}, "test": {"n": 2}}
    earlier = [(Path("t.json"), {"quick": False, "reps": 1000, "arms": {"a": row}})]

    found = table_module.earlier_row("b", str(same), same_print, earlier, False, 1000)
    assert found is not None and found[0] is row and "sha256" in found[1]
    assert table_module.earlier_row("a", str(other), other_print, earlier, False, 1000) is None
    assert table_module.earlier_row("a", str(same), same_print, earlier, True, 1000) is None
    assert table_module.earlier_row("a", str(same), same_print, earlier, False, 20) is None
    assert table_module.earlier_row("a", None, None, earlier, False, 1000) is None

    old = {"weights": str(other), "val": {}, "test": {}}  # a table before fingerprints
    earlier = [(Path("t.json"), {"quick": False, "arms": {"a": old}})]
    found = table_module.earlier_row("a", str(other), other_print, earlier, False, 1000)
    assert found is not None and "no fingerprints" in found[1]
    assert table_module.earlier_row("renamed", str(other), other_print, earlier, False,
                                    1000) is None


def test_joint_step_cost_arms_pass_their_settings_after_the_common_ones(tmp_path: Path) -> None:
    """benchmarks/joint_step_cost.sh with a stand-in `classndiff` that records its arguments:
    each arm's own settings come after joint_common.sh's, so the sixteenth arm's share of the
    batch overrides the common quarter (the CLI's last --set wins), and each arm is timed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "classndiff"
    stand_in.write_text(
        '#!/usr/bin/env bash\nout=""; prev=""\n'
        'for a in "$@"; do [ "$prev" = --output-dir ] && out=$a; prev=$a; done\n'
        'mkdir -p "$out"; printf "%s\\n" "$@" > "$out/args.txt"\n'
        'printf "step,loss,seconds\\n20,0.5,10.0\\n80,0.5,70.0\\n" > "$out/log.csv"\n')
    stand_in.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "ARMS": "plain embedding embedding-sixteenth"}
    runs = tmp_path / "runs"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "joint_step_cost.sh"), "START",
                           "80", str(runs)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{arm}: 1.00 s a step (steps 20–80)" for arm in
                                        ("plain", "embedding", "embedding-sixteenth")]

    def settings(arm: str) -> dict[str, str]:
        args = (runs / arm / "args.txt").read_text().splitlines()
        pairs = [args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--set"]
        return dict(pairs)  # a later --set of the same key replaces an earlier one

    assert settings("plain")["train.lambda_cls"] == "0"
    quarter, sixteenth = settings("embedding"), settings("embedding-sixteenth")
    assert quarter["train.cls_x0_reaches"] == sixteenth["train.cls_x0_reaches"] == "dx_embedding"
    assert quarter["train.joint_batch_fraction"] == "0.25"
    assert sixteenth["train.joint_batch_fraction"] == "0.0625"
    assert {k: v for k, v in quarter.items() if k != "train.joint_batch_fraction"} == {
        k: v for k, v in sixteenth.items() if k != "train.joint_batch_fraction"}


def test_embedding_drift_is_the_distance_of_each_row() -> None:
    """benchmarks/embedding_drift.py: per-row L2 distance between two tables."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from embedding_drift import row_drift

    start = torch.zeros(3, 4)
    moved = start.clone()
    moved[1] = torch.tensor([3.0, 4.0, 0.0, 0.0])
    assert row_drift(start, moved) == [0.0, 5.0, 0.0]


def _draw_record(folder: Path, name: str, draw: int, fidelity: float, fd: float,
                 fd_mix: float, fd_eval_mix: float, fd_eval: float) -> Path:
    path = folder / f"{name}-{draw}.json"
    path.write_text(json.dumps({"draw": draw, "real_floor": {"fd": 25.0}, "model": {
        "class_fidelity_macro": fidelity, "fd": fd, "fd_mix_matched": fd_mix,
        "fd_evaluator_mix_matched": fd_eval_mix, "fd_evaluator": fd_eval}}))
    return path


@pytest.mark.parametrize(("joint_draw_1", "met", "higher"), [
    # Means: fidelity +0.10, every deciding FD lower; the natural-mix evaluator FD +8 reported.
    ((0.60, 101.0, 84.0, 26.0, 53.0), True, []),
    # The FD 0.5 higher on the mean (within a redraw's noise, still not met).
    ((0.60, 105.0, 84.0, 26.0, 53.0), False, ["fd"]),
    # The evaluator's mix-matched FD higher on the mean.
    ((0.60, 101.0, 84.0, 33.0, 53.0), False, ["fd_evaluator_mix_matched"]),
    # Fidelity +0.005 on the mean: not more than 0.01.
    ((0.41, 101.0, 84.0, 26.0, 53.0), False, []),
])
def test_claim_over_draws_decides_on_the_means_of_the_draws(
        tmp_path: Path, joint_draw_1: tuple, met: bool, higher: list) -> None:
    joint = [_draw_record(tmp_path, "joint", 0, 0.40, 103.0, 86.0, 27.0, 52.0),
             _draw_record(tmp_path, "joint", 1, *joint_draw_1)]
    plain = [_draw_record(tmp_path, "plain", d, 0.40, 103.5, 86.0, 28.0, 45.0) for d in (0, 1)]
    script = str(ROOT / "benchmarks" / "claim_over_draws.py")
    done = subprocess.run([sys.executable, script, "--joint", *map(str, joint),
                           "--plain", *map(str, plain)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["claim_met"] is met
    assert result["higher_fds"] == higher
    assert result["fd_margins"]["fd_evaluator"] > 0  # reported, never deciding
    # One draw read twice is not two draws.
    twice = subprocess.run([sys.executable, script, "--joint", str(joint[0]), str(joint[0]),
                            "--plain", *map(str, plain)], capture_output=True, text=True,
                           timeout=60)
    assert twice.returncode != 0 and "same draw twice" in twice.stderr


def test_compare_logs_splits_the_loss_gap_at_the_alignment_stop(tmp_path: Path) -> None:
    header = "step,mse,align,seconds\n"
    aligned = tmp_path / "aligned.csv"
    plain = tmp_path / "plain.csv"
    # Aligned for steps 25–50 (0.02 above λ = 0), stopped from 75 (0.01 below); one step more.
    aligned.write_text(header + "25,0.52,0.7,10\n50,0.42,0.6,20\n75,0.29,0,30\n100,0.19,0,40\n"
                       "125,0.1,0,50\n")
    plain.write_text(header + "25,0.5,0,9\n50,0.4,0,18\n75,0.3,0,27\n100,0.2,0,36\n")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_logs.py"),
                           str(aligned), str(plain), "--last", "3"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert (r["last_aligned_row"], r["first_row_after_stop"]) == (50, 75)
    assert r["align_zero_after_stop"] is True
    assert r["mse_gap_aligned"] == pytest.approx(0.02)
    assert r["mse_gap_after_stop"] == pytest.approx(-0.01)
    assert r["mse_gap_last"] == pytest.approx((0.02 - 0.01 - 0.01) / 3)
    assert r["steps"] == [125, 100]
    # A term that comes back after its stop is caught.
    aligned.write_text(header + "25,0.52,0.7,10\n50,0.42,0,20\n75,0.29,0.3,30\n")
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_logs.py"),
                            str(aligned), str(plain)], capture_output=True, text=True, timeout=60)
    assert json.loads(again.stdout.strip().splitlines()[-1])["align_zero_after_stop"] is False
