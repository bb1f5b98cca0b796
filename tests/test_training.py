"""Training you can trust: exact resume, gradients averaged across processes, and the joint
loss pinned term by term (issue: training correctness)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from classndiff.labels import DX_NULL, SEX_NULL, TONE_NULL
from classndiff.models.diffusion import NoiseSchedule, sample
from classndiff.models.joint import ClassNDiff
from classndiff.training.losses import Batch, joint_loss, low_pass
from classndiff.training.objective import STEP_KINDS
from classndiff.training.trainer import Trainer, push_at_adam_scale

ROOT = Path(__file__).resolve().parent.parent


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {**{f"model.{k}": v for k, v in trainer.net.state_dict().items()},
            **{f"ema.{k}": v for k, v in trainer.ema.module.state_dict().items()}}


def test_resume_is_the_same_run(tiny_config, tmp_path: Path) -> None:
    """2k steps in one go == k steps, a new process resuming, k more: weights, EMA, LR and
    the optimizer's moments. Dropout, augmentation, timesteps, noise and condition drops
    all draw random numbers, so this fails if any of their states is not restored."""
    k = 3
    config = tiny_config.override({
        "train.checkpoint_every": k, "train.eval_every": k, "train.max_steps": 2 * k,
        "train.warmup_steps": 2, "train.lambda_cls": 0.5})
    config.model.classifier_drop_rate = 0.3  # dropout draws from the global RNG
    whole = Trainer(config, tmp_path / "whole")
    whole.train()
    cut = Trainer(config, tmp_path / "cut")
    cut.train(stop_at=k)
    torch.manual_seed(12345)  # a new process starts with other global random state
    resumed = Trainer(config, tmp_path / "cut", resume=True)
    assert resumed.step == k
    resumed.train()
    a, b = _state(whole), _state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    for ga, gb in zip(whole.optimizer.param_groups, resumed.optimizer.param_groups):
        assert ga["lr"] == pytest.approx(gb["lr"], abs=1e-12)
    sa, sb = whole.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for i in sa:
        torch.testing.assert_close(sa[i]["exp_avg"], sb[i]["exp_avg"], rtol=0, atol=1e-7)
    exported = load_file(str(tmp_path / "whole" / "model.safetensors"))
    again = load_file(str(tmp_path / "cut" / "model.safetensors"))
    for key in exported:
        torch.testing.assert_close(exported[key], again[key], rtol=0, atol=1e-6, msg=key)


def test_time_budget_continues_across_resume(tiny_config, tmp_path: Path) -> None:
    """A resumed time-budgeted run continues its LR decay instead of starting it again."""
    config = tiny_config.override({"train.time_budget_s": 1000.0, "train.warmup_steps": 0,
                                   "train.checkpoint_every": 2})
    first = Trainer(config, tmp_path)
    first.train(max_steps=1000, stop_at=2)
    state = json.loads(sorted((tmp_path / "checkpoints").glob("step-*"))[-1]
                       .joinpath("state.json").read_text())
    state["seconds_trained"] = 900.0  # as if the first run had used 90 % of the budget
    sorted((tmp_path / "checkpoints").glob("step-*"))[-1].joinpath("state.json").write_text(
        json.dumps(state))
    resumed = Trainer(config, tmp_path, resume=True)
    resumed.train(max_steps=1000, stop_at=3)
    lr = resumed.optimizer.param_groups[0]["lr"]
    assert lr < 0.15 * config.train.learning_rate  # 90 % of the cosine: near its floor


def _ddp_config(tiny_config, batch_size: int):  # noqa: ANN001, ANN202
    config = tiny_config.override({
        "train.batch_size": batch_size, "train.joint_batch_fraction": 1.0,
        "train.lambda_cls": 0.5, "train.eval_every": 1000, "train.checkpoint_every": 1000,
        "train.log_every": 1000, "train.ema_decay": 0.5})
    # Group norm: batch-norm statistics would differ between one batch of 2B and two of B.
    config.model.classifier_backbone = "test_efficientnet_gn"
    config.model.classifier_drop_rate = 0.0
    return config


@pytest.mark.skipif(not shutil.which("accelerate", path=str(Path(sys.executable).parent))
                    and not shutil.which("accelerate"), reason="accelerate CLI not installed")
def test_two_processes_average_gradients(tiny_config, tmp_path: Path) -> None:
    """`accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs (the CPU,
    gloo): the ranks agree after every
    step, and equal one process with twice the per-process batch."""
    steps, per_process = 3, 4
    config_path = tmp_path / "config.json"
    _ddp_config(tiny_config, per_process).to_json(config_path)
    launcher = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [str(launcher if launcher.exists() else "accelerate"), "launch", "--multi_gpu",
         "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", str(ROOT / "tests" / "ddp_worker.py"), str(config_path),
         str(tmp_path / "ddp"), str(steps)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / "ddp" / f"digests-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    for step, (d0, d1) in enumerate(zip(ranks[0]["digests"], ranks[1]["digests"])):
        assert d0 == pytest.approx(d1, rel=1e-6, abs=1e-6), f"ranks differ after step {step}"

    single = Trainer(_ddp_config(tiny_config, 2 * per_process), tmp_path / "single")
    single.train(max_steps=steps)
    ddp = load_file(str(tmp_path / "ddp" / "weights.safetensors"))
    moved = 0
    for key, value in single.net.state_dict().items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-4, atol=2e-5, msg=key)
    start = ClassNDiff(single.config.model)  # and training did move the weights
    moved = sum(not torch.allclose(start.state_dict()[k], v) for k, v in ddp.items()
                if v.dtype.is_floating_point)
    assert moved > 10


# ---------------------------------------------------------------- the joint loss, term by term

def _batch(config, n: int = 4, t: list[int] | None = None, seed: int = 0) -> Batch:  # noqa: ANN001
    g = torch.Generator().manual_seed(seed)
    m = config.model
    x0 = torch.rand(n, 3, m.image_size, m.image_size, generator=g) * 2 - 1
    timesteps = torch.tensor(t) if t is not None else torch.randint(
        0, m.num_train_timesteps, (n,), generator=g)
    return Batch(x0, torch.rand(n, 3, m.pixel_size, m.pixel_size, generator=g) * 2 - 1,
                 torch.randint(0, 7, (n,), generator=g), torch.randint(0, 3, (n,), generator=g),
                 torch.randint(0, 2, (n,), generator=g), t=timesteps,
                 noise=torch.randn(x0.shape, generator=g), drop=torch.zeros(n, 3, dtype=bool))


def _grads(model: ClassNDiff, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for k, p in model.named_parameters()}


def _model(config) -> ClassNDiff:  # noqa: ANN001
    torch.manual_seed(0)
    model = ClassNDiff(config.model, cond_drop_prob=0.0).train()
    # adaLN-Zero starts the denoiser's output at exactly zero, which hides every gradient
    # path through it: give it a little life first.
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.mark.parametrize("updates_classifier", [True, False])
def test_x0_branch_gradient_reaches_denoiser_and_classifier(tiny_config,
                                                            updates_classifier: bool) -> None:
    """λ > 0: the x̂0 cross-entropy changes both the denoiser's and the classifier's gradient
    (the classifier's only when the branch updates it). λ = 0: both gradients are exactly
    those of the ε/v loss and of the real-image cross-entropy alone."""
    config = tiny_config.override({"train.joint_updates_classifier": updates_classifier,
                                   "train.lambda_cls": 0.5, "train.joint_batch_fraction": 1.0})
    model = _model(config)
    schedule = NoiseSchedule(config.model)
    batch = _batch(config, t=[0, 5, 10, 20])
    with_branch = _grads(model, joint_loss(model, batch, schedule, config.train)["loss"])
    off = config.override({"train.lambda_cls": 0.0})
    without = _grads(model, joint_loss(model, batch, schedule, off.train)["loss"])
    parts = _grads(model, _mse_and_real(model, batch, schedule, off))
    for key in without:  # λ = 0 is the two plain terms, nothing else
        torch.testing.assert_close(without[key], parts[key], rtol=1e-5, atol=1e-7, msg=key)

    def changed(prefix: str) -> bool:
        return any(not torch.allclose(with_branch[k], without[k], rtol=1e-4, atol=1e-8)
                   for k in with_branch if k.startswith(prefix))

    assert changed("denoiser.")
    assert changed("classifier.") == updates_classifier


def _mse_and_real(model: ClassNDiff, batch: Batch, schedule: NoiseSchedule, config):  # noqa: ANN001, ANN202
    """The two plain terms written out: the ε/v regression and the real-image CE."""
    x_t = schedule.add_noise(batch.x0, batch.noise, batch.t)
    out = model.denoiser(x_t, batch.t, batch.dx, batch.tone, batch.sex, drop=batch.drop)
    mse = torch.nn.functional.mse_loss(out, schedule.target(batch.x0, batch.noise, batch.t))
    ce = torch.nn.functional.cross_entropy(model.classifier(batch.cls_input), batch.dx,
                                           label_smoothing=config.train.label_smoothing)
    return mse + ce


def _unweighted_terms(model: ClassNDiff, batch: Batch, schedule: NoiseSchedule,
                      config) -> torch.Tensor:  # noqa: ANN001
    """Each sample's x̂0 cross-entropy on its own, weight 1 (w(t) = "constant")."""
    constant = config.override({"train.cls_weight_schedule": "constant"}).train
    terms = []
    for i in range(len(batch.dx)):
        one = Batch(*(getattr(batch, f)[i:i + 1] for f in ("x0", "cls_input", "dx", "tone", "sex")),
                    t=batch.t[i:i + 1], noise=batch.noise[i:i + 1], drop=batch.drop[i:i + 1])
        terms.append(joint_loss(model, one, schedule, constant)["cls_x0"])
    return torch.stack(terms)


def test_classifier_weight_is_applied_per_sample(tiny_config) -> None:
    """cls_x0 = mean_i w(t_i)·CE_i with w = ᾱ_t: a batch's term equals the mean of its
    samples' unweighted terms times their own ᾱ_t."""
    config = tiny_config.override({"train.lambda_cls": 1.0, "train.joint_batch_fraction": 1.0,
                                   "train.cls_min_weight": 0.0})
    model = _model(config).eval()  # no dropout: the same logits every call
    schedule = NoiseSchedule(config.model)
    ts = [0, 30, 60, 99]
    batch = _batch(config, t=ts)
    weighted = joint_loss(model, batch, schedule, config.train)["cls_x0"]
    singles = _unweighted_terms(model, batch, schedule, config)
    alpha_bar = schedule.alphas_cumprod[torch.tensor(ts)]
    expected = (alpha_bar * singles).mean()
    torch.testing.assert_close(weighted, expected, rtol=1e-5, atol=1e-7)
    assert float(alpha_bar[-1]) < 0.7 * float(alpha_bar[0])  # the weights really differ


@pytest.mark.parametrize("bound", ["cls_min_weight", "cls_max_weight"])
def test_terms_outside_the_weight_band_never_reach_the_classifier(tiny_config,
                                                                   bound: str) -> None:
    """Samples whose w(t) is under train.cls_min_weight (the floor) or over
    train.cls_max_weight (the ceiling: the term kept off the clean end of the schedule) count
    as zero in cls_x0, and their x̂0 is never classified (that is the time saved)."""
    config = tiny_config.override({"train.lambda_cls": 1.0, "train.joint_batch_fraction": 1.0,
                                   "train.cls_min_weight": 0.0})
    model = _model(config).eval()
    schedule = NoiseSchedule(config.model)
    ts = [0, 30, 60, 99]
    alpha_bar = schedule.alphas_cumprod[torch.tensor(ts)]
    between = float(alpha_bar[1:3].mean())  # between the 2nd and 3rd sample's weight
    banded = config.override({f"train.{bound}": between}).train
    batch = _batch(config, t=ts)
    seen = []
    hook = model.classifier.register_forward_pre_hook(lambda _, args: seen.append(len(args[0])))
    everything = joint_loss(model, batch, schedule, config.train)["cls_x0"]
    seen_all = list(seen)
    seen.clear()
    cut = joint_loss(model, batch, schedule, banded)["cls_x0"]
    hook.remove()
    terms = alpha_bar * _unweighted_terms(model, batch, schedule, config)
    kept = terms[:2] if bound == "cls_min_weight" else terms[2:]  # ᾱ_t falls as t grows
    torch.testing.assert_close(everything, terms.mean(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(cut, kept.sum() / 4, rtol=1e-5, atol=1e-7)
    assert seen_all == [4, 4] and seen == [4, 2]  # real images first, then x̂0


def test_an_empty_weight_band_is_refused(tiny_config) -> None:
    """A floor at or over the ceiling would make the joint term vanish without a word."""
    config = tiny_config.override({"train.lambda_cls": 1.0, "train.cls_min_weight": 0.5,
                                   "train.cls_max_weight": 0.5})
    model = _model(config).eval()
    with pytest.raises(ValueError, match="cls_max_weight"):
        joint_loss(model, _batch(config, t=[0, 30, 60, 99]), NoiseSchedule(config.model),
                   config.train)


def test_low_passed_x0_hides_fine_texture_from_the_classifier(tiny_config) -> None:
    """train.cls_x0_size: the classifier reads x̂0 through `low_pass`, which removes a
    one-pixel checkerboard (the kind of texture a frozen classifier's gradient teaches) and
    keeps a smooth image; the joint loss really feeds that view to the classifier."""
    side = tiny_config.model.image_size
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    checker = ((yy + xx) % 2 * 2 - 1).float().expand(1, 3, side, side)
    smooth = torch.linspace(-1, 1, side).expand(1, 3, side, side)
    assert low_pass(checker, side // 4).abs().max() < 0.05
    assert low_pass(checker.bfloat16(), side // 4).dtype == torch.bfloat16  # autocast training
    torch.testing.assert_close(low_pass(smooth, side // 2), smooth, atol=0.1, rtol=0)
    config = tiny_config.override({"train.lambda_cls": 1.0, "train.joint_batch_fraction": 1.0,
                                   "train.cls_min_weight": 0.0})
    model = _model(config).eval()
    batch, schedule = _batch(config, t=[0, 30, 60, 99]), NoiseSchedule(config.model)
    seen = []
    hook = model.classifier.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    joint_loss(model, batch, schedule, config.train)
    joint_loss(model, batch, schedule, config.override({"train.cls_x0_size": side // 4}).train)
    hook.remove()
    raw, filtered = seen[1], seen[3]  # each call: real images first, then x̂0
    torch.testing.assert_close(filtered, low_pass(raw, side // 4), atol=1e-6, rtol=0)
    assert (filtered - raw).abs().max() > 0.01


def test_grey_x0_lets_the_term_move_structure_not_hue(tiny_config) -> None:
    """train.cls_x0_grey: the classifier reads x̂0 and the teacher's x0 as luminance in all
    three channels (so no gradient through the term can change hue); the rest of the batch,
    the real images, stays in colour."""
    config = tiny_config.override({"train.lambda_cls": 1.0, "train.joint_batch_fraction": 1.0,
                                   "train.cls_min_weight": 0.0, "train.cls_x0_target": "teacher"})
    model = _model(config).eval()
    batch, schedule = _batch(config, t=[0, 30, 60, 99]), NoiseSchedule(config.model)
    seen = []
    hook = model.classifier.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    joint_loss(model, batch, schedule, config.train)
    joint_loss(model, batch, schedule, config.override({"train.cls_x0_grey": True}).train)
    hook.remove()
    (real, x0_hat, clean), (_, grey_hat, grey_clean) = seen[:3], seen[3:]
    for colour, grey in ((x0_hat, grey_hat), (clean, grey_clean)):
        assert (colour[:, 0] - colour[:, 2]).abs().max() > 0.01  # the colour view has hue
        torch.testing.assert_close(grey[:, 0], grey[:, 1])
        torch.testing.assert_close(grey[:, 0], grey[:, 2])
        luminance = 0.2989 * colour[:, 0] + 0.587 * colour[:, 1] + 0.114 * colour[:, 2]
        torch.testing.assert_close(grey[:, 0], luminance, atol=1e-5, rtol=0)
    assert (real[:, 0] - real[:, 2]).abs().max() > 0.01


def test_teacher_target_asks_x0_hat_to_keep_the_clean_images_reading(tiny_config,
                                                                       monkeypatch) -> None:
    """train.cls_x0_target "teacher": the x̂0 term is KL(p(x0) ‖ p(x̂0)). A denoiser whose x̂0
    IS x0 owes nothing (where CE to the label still asks for more), an x̂0 unlike x0 owes a
    positive amount."""
    config = tiny_config.override({"train.lambda_cls": 1.0, "train.joint_batch_fraction": 1.0,
                                   "train.cls_min_weight": 0.0})
    teacher = config.override({"train.cls_x0_target": "teacher"}).train
    model = _model(config).eval()
    batch, schedule = _batch(config, t=[0, 30, 60, 99]), NoiseSchedule(config.model)
    imperfect = joint_loss(model, batch, schedule, teacher)
    assert imperfect["cls_x0"] > 1e-6
    monkeypatch.setattr(schedule, "predict_x0", lambda x_t, eps, t: batch.x0[: len(t)])
    assert float(joint_loss(model, batch, schedule, teacher)["cls_x0"]) == pytest.approx(0,
                                                                                     abs=1e-6)
    assert joint_loss(model, batch, schedule, config.train)["cls_x0"] > 0.1
    with pytest.raises(ValueError, match="cls_x0_target"):
        joint_loss(model, batch, schedule, config.override({"train.cls_x0_target": "x"}).train)


def test_features_target_is_the_distance_between_pooled_features(tiny_config,
                                                                  monkeypatch) -> None:
    """train.cls_x0_target "features": the x̂0 term is ‖f̂ − f‖² between the unit-length pooled
    classifier features of x̂0 and of x0: 0 when x̂0 is x0, 2 − 2·cosine otherwise; with the
    classifier frozen its gradient reaches the denoiser, not the classifier."""
    config = tiny_config.override({"train.lambda_cls": 1.0, "train.joint_batch_fraction": 1.0,
                                   "train.cls_min_weight": 0.0, "train.cls_weight_schedule":
                                   "constant", "train.joint_updates_classifier": False,
                                   "train.cls_x0_target": "features"})
    model = _model(config).eval()
    batch, schedule = _batch(config, t=[0, 30, 60, 99]), NoiseSchedule(config.model)
    terms = joint_loss(model, batch, schedule, config.train)
    with torch.no_grad():
        x_t = schedule.add_noise(batch.x0, batch.noise, batch.t)
        out = model.denoiser(x_t, batch.t, batch.dx, batch.tone, batch.sex, drop=batch.drop)
        x0_hat = model.x0_for_classifier(schedule.predict_x0(x_t, out, batch.t))
        cosine = F.cosine_similarity(model.classifier.features(x0_hat),
                                     model.classifier.features(model.x0_for_classifier(batch.x0)))
    assert float(terms["cls_x0"]) == pytest.approx(float((2 - 2 * cosine).mean()), rel=1e-4)
    with_term = _grads(model, terms["loss"])
    without = _grads(model, joint_loss(model, batch, schedule,
                                       config.override({"train.lambda_cls": 0.0}).train)["loss"])
    moved = {k for k in with_term if not torch.allclose(with_term[k], without[k], atol=1e-7)}
    assert moved and all(k.startswith("denoiser.") for k in moved)
    monkeypatch.setattr(schedule, "predict_x0", lambda x_t, eps, t: batch.x0[: len(t)])
    assert float(joint_loss(model, batch, schedule, config.train)["cls_x0"]) == pytest.approx(
        0, abs=1e-6)


def test_the_term_can_be_stopped_at_the_diagnosis_embedding(tiny_config) -> None:
    """train.cls_x0_reaches "dx_embedding": the term is the same number (the second pass sees
    the first's inputs and condition drops), and of the denoiser's weights its gradient
    reaches the diagnosis embedding table alone; "denoiser" reaches the others too."""
    config = tiny_config.override({"train.lambda_cls": 1.0, "train.joint_batch_fraction": 1.0,
                                   "train.cls_min_weight": 0.0,
                                   "train.joint_updates_classifier": False,
                                   "train.cls_x0_target": "teacher"})
    model = _model(config).eval()
    model.denoiser.train()  # condition drops are applied in training mode only
    batch, schedule = _batch(config, t=[0, 30, 60, 99]), NoiseSchedule(config.model)
    batch.drop[1] = torch.tensor([True, False, True])
    stopped = config.override({"train.cls_x0_reaches": "dx_embedding"}).train
    plain = _grads(model, joint_loss(model, batch, schedule,
                                     config.override({"train.lambda_cls": 0.0}).train)["loss"])
    moved = {}
    for train in (config.train, stopped):
        terms = joint_loss(model, batch, schedule, train)
        grads = _grads(model, terms["loss"])
        moved[train.cls_x0_reaches] = (float(terms["cls_x0"]), {
            k for k in grads if not torch.allclose(grads[k], plain[k], atol=1e-8)})
    (everywhere, reached_all), (term, reached) = moved["denoiser"], moved["dx_embedding"]
    assert term == pytest.approx(everywhere, rel=1e-5) and term > 1e-6
    assert reached == {"denoiser.dx_embedder.embedding_table.weight"}
    assert len(reached_all) > 10 and reached < reached_all
    with pytest.raises(ValueError, match="cls_x0_reaches"):
        joint_loss(model, batch, schedule, config.override({"train.cls_x0_reaches": "x"}).train)


def test_the_term_can_run_on_every_kth_step_weighed_k_times(tiny_config, tmp_path,
                                                            monkeypatch) -> None:
    """train.joint_every k: the trainer's batches carry the x̂0 term's weight k on steps
    0, k, 2k, … and 0 between; a batch's weight scales the term, and at 0 the step is the
    λ = 0 step (the term is not computed)."""
    config = tiny_config.override({"train.lambda_cls": 1.0, "train.joint_batch_fraction": 1.0,
                                   "train.cls_min_weight": 0.0, "train.joint_every": 3})
    trainer = Trainer(config, tmp_path / "run")
    scales = []
    for step in range(7):
        trainer.step = step
        scales.append(trainer.next_batch().term_scale)
    assert scales == [3.0, 0.0, 0.0, 3.0, 0.0, 0.0, 3.0]
    model, schedule = _model(config).eval(), NoiseSchedule(config.model)
    losses = {}
    for scale in (1.0, 3.0, 0.0):
        batch = _batch(config, t=[0, 30, 60, 99])
        batch.term_scale = scale
        losses[scale] = joint_loss(model, batch, schedule, config.train)
    assert float(losses[1.0]["cls_x0"]) > 1e-6
    assert float(losses[3.0]["cls_x0"]) == pytest.approx(3 * float(losses[1.0]["cls_x0"]))
    assert float(losses[0.0]["cls_x0"]) == 0
    plain = joint_loss(model, _batch(config, t=[0, 30, 60, 99]), schedule,
                       config.override({"train.lambda_cls": 0.0}).train)
    assert losses[0.0]["loss"].item() == pytest.approx(plain["loss"].item())

    def not_on_this_step(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the x̂0 term ran on a step that does not carry it")

    monkeypatch.setattr("classndiff.training.losses._x0_term", not_on_this_step)
    off_step = _batch(config, t=[0, 30, 60, 99])
    off_step.term_scale = 0.0
    joint_loss(model, off_step, schedule, config.train)
    with pytest.raises(ValueError, match="joint_every"):
        Trainer(config.override({"train.joint_every": 0}), tmp_path / "refused")


def test_condition_dropout_only_in_training(tiny_config) -> None:
    model = _model(tiny_config)
    denoiser = model.denoiser
    batch = _batch(tiny_config)
    x, t = batch.x0, batch.t
    labels = (batch.dx, batch.tone, batch.sex)
    nulls = (torch.full_like(batch.dx, DX_NULL), torch.full_like(batch.tone, TONE_NULL),
             torch.full_like(batch.sex, SEX_NULL))
    everything = torch.ones(x.shape[0], 3, dtype=bool)
    denoiser.train()
    dropped = denoiser(x, t, *labels, drop=everything)
    torch.testing.assert_close(dropped, denoiser(x, t, *nulls, drop=~everything))
    assert not torch.allclose(dropped, denoiser(x, t, *labels, drop=~everything))
    denoiser.eval()  # sampling: the same request is never dropped
    torch.testing.assert_close(denoiser(x, t, *labels, drop=everything),
                               denoiser(x, t, *labels))
    denoiser.dx_embedder.dropout_prob = 1.0
    torch.testing.assert_close(denoiser(x, t, *labels), denoiser(x, t, *labels, drop=~everything))


@pytest.mark.parametrize("guided", ["dx", "dx+tone"])
def test_guidance_nulls_exactly_the_guided_conditions(tiny_config, guided: str) -> None:
    """The unconditional half of classifier-free guidance nulls the guided conditions and
    keeps every other one; guidance 1 runs the conditional pass only."""
    from classndiff.models.diffusion import make_scheduler

    model = _model(tiny_config).eval()
    calls = []
    forward = model.denoiser.forward

    def spy(x, t, dx, tone, sex, drop=None):  # noqa: ANN001, ANN202
        calls.append((dx.clone(), tone.clone(), sex.clone()))
        return forward(x, t, dx, tone, sex, drop)

    model.denoiser.forward = spy
    n = 3
    dx, tone, sex = torch.tensor([0, 3, 6]), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 0])
    scheduler = make_scheduler("ddim", tiny_config.model)
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    sample(model, scheduler, dx, tone, sex, 2, 2.0, gens, guided=guided)
    for call_dx, call_tone, call_sex in calls:
        assert call_dx.shape[0] == 2 * n
        torch.testing.assert_close(call_dx[:n], dx)
        torch.testing.assert_close(call_tone[:n], tone)
        assert (call_dx[n:] == DX_NULL).all()
        expected_tone = torch.full_like(tone, TONE_NULL) if "tone" in guided else tone
        torch.testing.assert_close(call_tone[n:], expected_tone)
        torch.testing.assert_close(call_sex, torch.cat([sex, sex]))  # sex is never guided
    calls.clear()
    sample(model, scheduler, dx, tone, sex, 2, 1.0, gens, guided=guided)
    assert all(c[0].shape[0] == n for c in calls)


def test_best_by_validation_keeps_the_better_classifier(tiny_config, tmp_path: Path) -> None:
    """Given two classifiers in either order, the one kept (and exported) is the one with
    the better validation score."""
    candidates = {}
    for seed in (1, 2, 3, 4):
        torch.manual_seed(seed)
        candidates[seed] = ClassNDiff(tiny_config.model).classifier.state_dict()
    trainer = Trainer(tiny_config, tmp_path / "scores")
    scores = {}
    for seed, weights in candidates.items():
        trainer.ema.module.classifier.load_state_dict(weights)
        scores[seed] = trainer.validate()["score"]
    best, worst = max(scores, key=scores.get), min(scores, key=scores.get)
    assert scores[best] > scores[worst]
    for order in ((best, worst), (worst, best)):
        trainer = Trainer(tiny_config, tmp_path / f"{order[0]}-{order[1]}")
        for seed in order:
            trainer.ema.module.classifier.load_state_dict(candidates[seed])
            trainer.keep_if_best(trainer.validate())
        for key, value in trainer.best_classifier.items():
            torch.testing.assert_close(value, candidates[best][key], msg=key)
        exported = load_file(str(trainer.export(tmp_path / f"export-{order[0]}") /
                                 "model.safetensors"))
        key = next(k for k, v in candidates[best].items() if v.dtype.is_floating_point)
        torch.testing.assert_close(exported[f"classifier.{key}"].float(), candidates[best][key])


def test_the_evaluator_trains_on_the_same_loop_and_resumes_exactly(tmp_path: Path) -> None:
    """One loop for every model: the independent evaluator is a TrainingLoop too, with the
    same checkpoint format and the same exact resume (weights, EMA, best, optimizer)."""
    from classndiff.training.evaluator import EvaluatorConfig, EvaluatorTrainer
    from classndiff.training.loop import TrainingLoop

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(24) % 7
    val = (images[:8], labels[:8])
    config = EvaluatorConfig(backbone="test_resnet", image_size=32, batch_size=8, steps=6,
                             warmup_steps=2, mixed_precision="no")

    def trainer(folder: str) -> EvaluatorTrainer:
        return EvaluatorTrainer(images, labels, config, val, tmp_path / folder, eval_every=3)

    whole = trainer("whole")
    assert isinstance(whole, TrainingLoop)
    whole.train()
    cut = trainer("cut")
    cut.train(stop_at=3)
    assert (tmp_path / "cut" / "checkpoints" / "step-0000003" / "state.json").exists()
    torch.manual_seed(12345)
    resumed = trainer("cut")
    assert resumed.load_checkpoint() and resumed.step == 3
    resumed.train()
    for name, a, b in (("model", whole.net, resumed.net),
                       ("ema", whole.ema.module, resumed.ema.module)):
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=f"{name} {key}")
    assert whole.best_step == resumed.best_step and whole.best_state.keys()
    for key, value in whole.best_state.items():
        torch.testing.assert_close(value, resumed.best_state[key], rtol=0, atol=1e-6)
    result = resumed.result()
    assert [r["step"] for r in result.log] == [3, 6] and result.best["step"] == resumed.best_step


def test_the_preconditioned_term_is_pushed_at_adams_scale(tiny_config, tmp_path,
                                                          monkeypatch) -> None:
    """train.joint_term_update "preconditioned": the term's gradient on the diagnosis table
    leaves the loss and comes back as a push equal to it; the push moves the table by
    lr · push / (√v̂ + ε) and leaves Adam's moments alone; the trainer applies it on the
    steps that carry the term only; it is refused where the term reaches other weights."""
    base = tiny_config.override({"train.lambda_cls": 1.0, "train.joint_batch_fraction": 1.0,
                                 "train.cls_min_weight": 0.0,
                                 "train.joint_updates_classifier": False,
                                 "train.cls_x0_target": "features",
                                 "train.cls_x0_reaches": "dx_embedding"})
    config = base.override({"train.joint_term_update": "preconditioned"})
    model, schedule = _model(config).eval(), NoiseSchedule(config.model)
    table = "denoiser.dx_embedder.embedding_table.weight"
    summed = _grads(model, joint_loss(model, _batch(config, t=[0, 30, 60, 99]), schedule,
                                      base.train)["loss"])
    plain = _grads(model, joint_loss(model, _batch(config, t=[0, 30, 60, 99]), schedule,
                                     base.override({"train.lambda_cls": 0.0}).train)["loss"])
    kept_out = joint_loss(model, _batch(config, t=[0, 30, 60, 99]), schedule, config.train)
    assert float(kept_out["cls_x0"]) > 1e-6
    push = kept_out["dx_table_push"]
    assert push.abs().max() > 1e-7
    torch.testing.assert_close(push, summed[table] - plain[table], atol=1e-7, rtol=1e-4)
    for k, g in _grads(model, kept_out["loss"]).items():
        torch.testing.assert_close(g, plain[k], atol=1e-8, rtol=1e-5)

    param = torch.nn.Parameter(torch.randn(3, 4))
    optimizer = torch.optim.AdamW([param], lr=0.01, eps=1e-8, betas=(0.9, 0.999))
    for _ in range(3):
        param.grad = torch.randn(3, 4)
        optimizer.step()
    state = {k: v.clone() for k, v in optimizer.state[param].items()}
    before, push = param.detach().clone(), torch.randn(3, 4)
    push_at_adam_scale(optimizer, param, push)
    v_hat = state["exp_avg_sq"] / (1 - 0.999 ** 3)
    torch.testing.assert_close(param.detach(), before - 0.01 * push / (v_hat.sqrt() + 1e-8))
    for k, v in optimizer.state[param].items():
        torch.testing.assert_close(v, state[k])

    # The trainer pushes on the steps that carry the term, clipped as the gradients were.
    pushed, norms, returned = [], [], []
    trainer = Trainer(config.override({"train.joint_every": 2, "train.grad_clip": 1e-3}),
                      tmp_path / "run")
    with torch.no_grad():  # adaLN-Zero hides the table from x̂0 at the start (see _model)
        for q in trainer.net.denoiser.parameters():
            q.add_(torch.randn_like(q) * 0.02)
    clip = trainer.accelerator.clip_grad_norm_

    def clip_and_keep(params, max_norm):  # noqa: ANN001, ANN202
        norms.append(clip(params, max_norm))
        return norms[-1]

    def loss_and_keep(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = joint_loss(*args, **kwargs)
        returned.append(out.get("dx_table_push"))
        return out

    monkeypatch.setattr(trainer.accelerator, "clip_grad_norm_", clip_and_keep)
    monkeypatch.setitem(STEP_KINDS, "joint", loss_and_keep)
    monkeypatch.setattr("classndiff.training.trainer.push_at_adam_scale",
                        lambda opt, p, push: pushed.append((trainer.step, push)))
    trainer.train(max_steps=4)
    assert [step for step, _ in pushed] == [0, 2]  # joint_every 2
    assert returned[1] is None and float(returned[0].abs().max()) > 1e-6
    assert float(norms[0]) > 1e-2  # so the clip shrank step 0's gradients
    torch.testing.assert_close(pushed[0][1], returned[0] * 1e-3 / (float(norms[0]) + 1e-6))
    with pytest.raises(ValueError, match="dx_embedding"):
        Trainer(config.override({"train.cls_x0_reaches": "denoiser"}), tmp_path / "refused")
    with pytest.raises(ValueError, match="joint_term_update"):
        joint_loss(model, _batch(config), schedule,
                   config.override({"train.joint_term_update": "sgd"}).train)
