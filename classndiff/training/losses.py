"""The joint Class-N-Diff loss: one denoiser pass feeds both the denoising loss and the
classifier (on x̂0), plus the lesion-focus and adversarial skin-tone terms."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call
from torchvision.transforms.functional import rgb_to_grayscale

from classndiff.config import TrainConfig
from classndiff.labels import DX_CODES, TONE_GROUPS
from classndiff.models.classifier import scale_like_grad_cam
from classndiff.models.diffusion import NoiseSchedule
from classndiff.models.joint import ClassNDiff

# What the classifier's reading of x̂0 is pulled towards (config.TrainConfig.cls_x0_target).
X0_TARGETS = ("label", "teacher", "features")
# Which denoiser weights the term's gradient reaches (config.TrainConfig.cls_x0_reaches).
X0_REACHES = ("denoiser", "dx_embedding")
DX_TABLE = "dx_embedder.embedding_table.weight"
# How the term's gradient on that table is applied (config.TrainConfig.joint_term_update).
TERM_UPDATES = ("adam", "preconditioned")


@dataclass
class Batch:
    """One training batch. `x0` is what the denoiser sees (pixels in [-1, 1] at the
    denoiser size, or scaled latents); `cls_input` is what the classifier sees for real
    images (full-size pixels, or the same latents; unused, a placeholder, for a denoiser in a
    bundled autoencoder's latents, whose classifier is frozen)."""

    x0: torch.Tensor
    cls_input: torch.Tensor
    dx: torch.Tensor
    tone: torch.Tensor
    sex: torch.Tensor
    # Expert lesion masks (N, 1, H, W) in {0, 1}, aligned with `cls_input`; all ones where an
    # image has none (the focus term skips those). None = not loaded.
    mask: torch.Tensor | None = None
    # `cls_input` with the skin re-tinted to another tone (train.tone_consistency), or None.
    cls_retinted: torch.Tensor | None = None
    # The step's randomness, drawn by the trainer from its checkpointed generator (so a
    # resumed run is the same run, and every process slices the same global draw):
    # timesteps (N,), noise like x0, condition drops (N, 3) bool. None = drawn in the loss.
    t: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    drop: torch.Tensor | None = None
    # Weight of the x̂0 term this step: train.joint_every k gives k on every k-th step and
    # 0 (not computed) between them.
    term_scale: float = 1.0
    # train.lambda_align's targets: the frozen classifier's feature map of each clean image,
    # pooled to the denoiser's token grid, (N, C, h, w); None = not loaded.
    align_target: torch.Tensor | None = None
    # Whether the alignment term acts this step (off after train.align_until).
    align_on: bool = True


def draw_step_noise(n: int, shape: tuple[int, ...], num_timesteps: int, drop_prob: float,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """(t, noise, drop) for n images of `shape`, on the CPU, from `generator`. Each
    condition is dropped with `drop_prob`, and diagnosis and tone together with `drop_prob`
    more: the unconditional half of "dx+tone" guidance is then learned as well as the
    "dx" one (independent drops alone would show it on ~1 % of steps)."""
    t = torch.randint(0, num_timesteps, (n,), generator=generator)
    noise = torch.randn((n, *shape), generator=generator)
    drop = torch.rand(n, 3, generator=generator) < drop_prob
    drop[:, :2] |= (torch.rand(n, generator=generator) < drop_prob)[:, None]
    return t, noise, drop


def energy_in_mask(cams: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of each map's energy inside its mask, (N,), measured as the saliency bar is.
    `cams` (N, h, w) ≥ 0 (after the ReLU); `masks` (N, 1, H, W) in {0, 1}. An empty map has
    no energy to share: NaN (the bar's measure counts those apart, as empty maps)."""
    up = scale_like_grad_cam(cams, masks.shape[-2:])
    total = up.sum(dim=(1, 2, 3))
    inside = (up * masks.float()).sum(dim=(1, 2, 3))
    return torch.where(total > 0, inside / total.clamp(min=1e-12),
                       torch.full_like(total, float("nan")))


def _lesion_focus_loss(
    model: ClassNDiff, feature_map: torch.Tensor, logits: torch.Tensor, batch: Batch
) -> torch.Tensor:
    """Ask the class-activation map (the Grad-CAM the app shows) to mark the lesion: a soft
    Dice loss between the map, scaled as Grad-CAM scales it, and the expert mask, for the true
    class and for the predicted one. Dice rewards covering the lesion as much as staying out
    of the background; a loss on the share outside alone is met by a map squeezed into one
    spot, or by an empty map, which shows the user nothing. A hinge on the map's maximum
    keeps it from going all-negative (empty after the ReLU, where Dice has no gradient).
    Images whose mask is all ones (none, or a lesion filling the frame) are skipped."""
    classifier = model.classifier
    masks = batch.mask.float()
    constrained = masks.flatten(1).amin(1) < 1
    if not constrained.any():
        return torch.zeros((), device=masks.device)
    losses = []
    for classes in (batch.dx, logits.detach().argmax(1)):
        raw = classifier.class_activation_maps(feature_map, classes, relu=False).float()
        # Without the second min-max (a few % at the peak): how the shipped weights were trained.
        up = scale_like_grad_cam(F.relu(raw), masks.shape[-2:], rescale=False)
        overlap = (up * masks).sum(dim=(1, 2, 3))
        dice = 1 - (2 * overlap + 1) / (up.sum(dim=(1, 2, 3)) + masks.sum(dim=(1, 2, 3)) + 1)
        alive = F.relu(-raw.amax(dim=(-2, -1)))
        losses.append(((dice + alive) * constrained).sum() / constrained.sum())
    return torch.stack(losses).mean()


def check_weight_band(train: TrainConfig) -> None:
    """Refuse a band of w(t) that no sample can fall in (the joint term would silently vanish)."""
    if not train.cls_min_weight < train.cls_max_weight:
        raise ValueError(f"train.cls_min_weight ({train.cls_min_weight}) must be under "
                         f"train.cls_max_weight ({train.cls_max_weight})")


class _PooledFeatures(nn.Module):
    """The classifier's pooled penultimate features as a module's forward (functional_call
    calls forward)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


def _call_stopped(module: nn.Module, args: tuple, kwargs: dict | None = None,
                  keep: str | None = None) -> torch.Tensor:
    """`module`'s forward with every parameter but the one named `keep` detached: no gradient
    reaches them (it still reaches the inputs)."""
    params = {k: (v if k == keep else v.detach()) for k, v in module.named_parameters()}
    return functional_call(module, {**params, **dict(module.named_buffers())}, args, kwargs)


def _classify_frozen(model: ClassNDiff, x: torch.Tensor, features: bool = False) -> torch.Tensor:
    """Classifier forward (logits, or with `features` its pooled features) whose parameters get
    no gradient (the gradient still reaches x)."""
    return _call_stopped(_PooledFeatures(model.classifier) if features else model.classifier,
                         (x,))


def feature_distance(reference: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """‖f̂ − f‖² between unit-length feature vectors, per sample (2 − 2·cosine, in [0, 4]); the
    reference held fixed."""
    return (F.normalize(features.float(), dim=1)
            - F.normalize(reference.detach().float(), dim=1)).pow(2).sum(1)


def low_pass(images: torch.Tensor, size: int) -> torch.Tensor:
    """`images` down to `size` × `size` (antialiased) and back up to their own side."""
    side = images.shape[-1]
    if size >= side:
        return images
    # float32: antialiased resizing has no bfloat16 kernel (autocast training).
    small = F.interpolate(images.float(), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)
    return F.interpolate(small, size=(side, side), mode="bilinear",
                         align_corners=False).to(images.dtype)


def _term_output(model: ClassNDiff, batch: Batch, train: TrainConfig, x_t: torch.Tensor,
                 out: torch.Tensor, t: torch.Tensor, drop: torch.Tensor,
                 index: torch.Tensor) -> torch.Tensor:
    """The denoiser's output for the term's samples `index`: the shared pass's (the gradient
    reaches every weight), or with train.cls_x0_reaches "dx_embedding" a second pass on the
    same inputs and condition drops whose only weight with a gradient is the diagnosis
    embedding table."""
    if train.cls_x0_reaches not in X0_REACHES:
        raise ValueError(f"unknown train.cls_x0_reaches {train.cls_x0_reaches!r}: "
                         f"one of {', '.join(X0_REACHES)}")
    if train.cls_x0_reaches == "denoiser":
        return out[index]
    if DX_TABLE not in dict(model.denoiser.named_parameters()):
        raise ValueError("train.cls_x0_reaches 'dx_embedding' needs a denoiser with a "
                         f"diagnosis embedding table ({DX_TABLE})")
    return _call_stopped(model.denoiser, (x_t[index], t[index], batch.dx[index],
                                          batch.tone[index], batch.sex[index]),
                         {"drop": drop[index]}, keep=DX_TABLE)


def _x0_term(model: ClassNDiff, batch: Batch, schedule: NoiseSchedule, train: TrainConfig,
             x_t: torch.Tensor, out: torch.Tensor, t: torch.Tensor,
             index: torch.Tensor) -> torch.Tensor:
    """The classifier's loss on the denoiser's x̂0 for the samples `index` (`out`: the
    denoiser's output for those samples, _term_output), per sample: CE to
    the diagnosis, or (train.cls_x0_target "teacher") KL from its own reading of the clean x0,
    or ("features") the distance between its pooled features of x̂0 and of x0.
    The classifier runs in eval mode: batch-norm statistics come from real images only."""
    if train.cls_x0_target not in X0_TARGETS:
        raise ValueError(f"unknown train.cls_x0_target {train.cls_x0_target!r}: "
                         f"one of {', '.join(X0_TARGETS)}")
    if train.cls_x0_grey and model.config.latent_classifier:
        raise ValueError("train.cls_x0_grey needs a classifier that reads pixels, not latents")

    def as_read(x: torch.Tensor) -> torch.Tensor:
        x = model.x0_for_classifier(x)
        if train.cls_x0_grey:
            x = rgb_to_grayscale(x, num_output_channels=3)
        return x if train.cls_x0_size is None else low_pass(x, train.cls_x0_size)

    x0_hat = as_read(schedule.predict_x0(x_t[index], out, t[index]))
    features = train.cls_x0_target == "features"
    read = model.classifier.features if features else model.classifier
    was_training = model.classifier.training
    model.classifier.eval()
    if train.joint_updates_classifier:
        reading = read(x0_hat)
    else:
        reading = _classify_frozen(model, x0_hat, features=features)
    if train.cls_x0_target != "label":
        with torch.no_grad():
            clean_reading = read(as_read(batch.x0[index]))
    model.classifier.train(was_training)
    if train.cls_x0_target == "label":
        return F.cross_entropy(reading.float(), batch.dx[index], reduction="none")
    if features:
        return feature_distance(clean_reading, reading)
    return kl_from_fixed(clean_reading, reading)


def alignment_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """REPA's term: 1 − cosine similarity between each token's projection (N, T, C) and the
    target feature at that token (N, C, h, w) with h·w = T in row-major order, the mean over
    tokens and batch (in [0, 2]; 0 when every projection points where its target does)."""
    target = target.detach().float().flatten(2).transpose(1, 2)
    return 1 - F.cosine_similarity(projected.float(), target, dim=-1).mean()


def _denoising_pass(
    model: ClassNDiff, batch: Batch, schedule: NoiseSchedule, generator: torch.Generator | None,
    hidden_at: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """Noise the batch at random t, run the denoiser once: (t, x_t, output, MSE to target,
    the condition drops it used, and with `hidden_at` k the tokens after k blocks, else
    None)."""
    x0 = batch.x0
    t, noise, drop = batch.t, batch.noise, batch.drop
    if t is None or noise is None:
        t, noise, drop = draw_step_noise(x0.shape[0], tuple(x0.shape[1:]),
                                         schedule.num_timesteps,
                                         model.denoiser.dx_embedder.dropout_prob, generator)
    t, noise = t.to(x0.device), noise.to(x0.device, x0.dtype)
    x_t = schedule.add_noise(x0, noise, t)
    hidden = None
    if hidden_at is None:
        out = model.denoiser(x_t, t, batch.dx, batch.tone, batch.sex, drop=drop)
    else:
        out, hidden = model.denoiser(x_t, t, batch.dx, batch.tone, batch.sex, drop=drop,
                                     hidden_at=hidden_at)
    return (t, x_t, out, F.mse_loss(out.float(), schedule.target(x0, noise, t).float()),
            drop, hidden)


def _real_image_loss(
    model: ClassNDiff, batch: Batch, train: TrainConfig, tone_teacher: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """The classifier on the real images: logits, CE, the lesion-focus loss, the
    adversarial tone terms and the tone consistency (zeros where off); all skipped when the
    classifier is frozen (learning rate 0, fine-tuning the denoiser alone)."""
    n = batch.dx.shape[0]
    device = batch.dx.device
    zero = torch.zeros((), device=device)
    out = {"logits": torch.zeros(n, len(DX_CODES), device=device), "cls_real": zero,
           "focus": zero, "adv": zero, "adv_accuracy": zero, "consistency": zero}
    if train.classifier_learning_rate <= 0:
        return out
    maps = train.lambda_saliency > 0 and batch.mask is not None
    adversary = train.lambda_adv > 0
    if adversary and model.tone_adversary is None:
        raise ValueError("train.lambda_adv needs model.tone_adversary: true")
    if maps or adversary:
        logits, feature_map = model.classifier.forward_with_maps(batch.cls_input)
        if maps:
            out["focus"] = _lesion_focus_loss(model, feature_map, logits, batch)
        if adversary:
            out["adv"], out["adv_accuracy"] = _tone_adversary_loss(model, feature_map, batch,
                                                                   train)
    else:
        logits = model.classifier(batch.cls_input)
    out["logits"] = logits
    out["cls_real"] = F.cross_entropy(logits.float(), batch.dx,
                                      label_smoothing=train.label_smoothing)
    if train.tone_consistency > 0:
        if batch.cls_retinted is None:
            raise ValueError("train.tone_consistency needs the re-tinted images in the batch")
        retinted_logits = model.classifier(batch.cls_retinted)
        if tone_teacher is None:
            out["consistency"] = tone_consistency_loss(logits, retinted_logits)
        else:
            target = teacher_reading(tone_teacher, batch.cls_input)
            out["consistency"] = tone_distillation_loss(
                target / train.tone_consistency_temperature, logits, retinted_logits)
    return out


def teacher_reading(teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A frozen classifier's logits, without a graph (TrainingObjective keeps it in eval
    mode)."""
    with torch.no_grad():
        return teacher(images)


def tone_distillation_loss(teacher_logits: torch.Tensor, logits: torch.Tensor,
                           logits_retinted: torch.Tensor) -> torch.Tensor:
    """½ [KL(p_teacher(original) ‖ p(original)) + KL(p_teacher(original) ‖ p(re-tinted))],
    batch mean: both views give the frozen teacher's answer on the original skin, so the pair
    agrees AND keeps the teacher's confidence in the rare classes."""
    return 0.5 * (kl_from_fixed(teacher_logits, logits)
                  + kl_from_fixed(teacher_logits, logits_retinted)).mean()


def kl_from_fixed(reference_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p(reference) ‖ p(logits)) per sample, the reference held fixed (no gradient)."""
    target = F.log_softmax(reference_logits.detach().float(), 1)
    return F.kl_div(F.log_softmax(logits.float(), 1), target, log_target=True,
                    reduction="none").sum(1)


def tone_consistency_loss(logits: torch.Tensor, logits_retinted: torch.Tensor) -> torch.Tensor:
    """KL(p(original) ‖ p(re-tinted)), batch mean, the original's prediction held fixed: the
    re-tinted view learns to give the original's answer, not the original to drift towards
    whatever the re-tint suggests."""
    return kl_from_fixed(logits, logits_retinted).mean()


def _tone_adversary_loss(model: ClassNDiff, feature_map: torch.Tensor, batch: Batch,
                         train: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """CE of the tone head on images of known tone (its gradient reaches the features
    reversed), and its accuracy, which should fall towards the majority-class rate."""
    known = batch.tone < len(TONE_GROUPS)
    if not known.any():
        zero = torch.zeros((), device=feature_map.device)
        return zero, zero
    pooled = model.classifier.backbone.forward_head(feature_map, pre_logits=True)
    tone_logits = model.tone_adversary(pooled[known], train.adv_scale).float()
    loss = F.cross_entropy(tone_logits, batch.tone[known])
    accuracy = (tone_logits.argmax(1) == batch.tone[known]).float().mean()
    return loss, accuracy.detach()


def joint_loss(
    model: ClassNDiff,
    batch: Batch,
    schedule: NoiseSchedule,
    train: TrainConfig,
    generator: torch.Generator | None = None,
    tone_teacher: nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """The Class-N-Diff objective from ONE denoiser pass.

    mse      = ‖ε − ε̂(x_t, t, c)‖²
    cls_x0   = mean_i w(t_i) · CE(classifier(x̂0_i), dx_i)   (x̂0 from that same ε̂; over the
               first joint_batch_fraction of the batch; terms with w outside [cls_min_weight,
               cls_max_weight] are 0; times batch.term_scale (train.joint_every);
               or KL(p(x0_i) ‖ p(x̂0_i)) with train.cls_x0_target "teacher", or the
               distance between unit-length pooled features of x̂0_i and x0_i with "features";
               its gradient reaches every denoiser weight, or with train.cls_x0_reaches
               "dx_embedding" the diagnosis embedding alone; with train.joint_term_update
               "preconditioned" that gradient leaves the loss as "dx_table_push")
    cls_real = CE(classifier(x_real), dx)                   (trains the classifier)
    adv      = CE(tone_head(GRL(features(x_real))), tone)   (optional, λ_adv = train.lambda_adv)
    focus    = soft Dice(Grad-CAM map, lesion mask) (optional, λ_s = train.lambda_saliency)
    consist  = KL(p(x_real) ‖ p(x_real, skin re-tinted))  (optional, λ_c = train.tone_consistency;
               with `tone_teacher`, both views pulled towards the teacher's p(x_real))
    align    = 1 − cos(head(tokens after align_depth blocks), classifier map of x0)
               (optional, λ_align = train.lambda_align; per token, REPA's term)
    loss     = mse + λ · cls_x0 + cls_real + λ_s · focus + λ_adv · adv + λ_c · consist
               + λ_align · align

    With λ = 0 the x̂0 branch is not computed at all: a plain DiT beside an independently
    trained classifier (the ablation). With the denoiser's learning rate at 0 its pass runs
    without a graph (it still supplies x̂0), and not at all when λ = 0 too.
    """
    x0 = batch.x0
    n = x0.shape[0]
    align = torch.zeros((), device=x0.device)
    if train.learning_rate == 0 and train.lambda_cls == 0:
        # Fine-tuning the classifier alone: nothing uses the denoiser, so it does not run.
        t = x_t = eps = drop = None
        mse = torch.zeros((), device=x0.device)
    else:
        aligned = train.lambda_align > 0 and batch.align_on
        with torch.set_grad_enabled(torch.is_grad_enabled() and train.learning_rate > 0):
            t, x_t, eps, mse, drop, hidden = _denoising_pass(
                model, batch, schedule, generator, train.align_depth if aligned else None)
            if aligned:
                if model.alignment_head is None or batch.align_target is None:
                    raise ValueError("train.lambda_align needs the model's alignment head and "
                                     "the batch's targets (the trainer provides both)")
                align = alignment_loss(model.alignment_head(hidden), batch.align_target)
    real = _real_image_loss(model, batch, train, tone_teacher)
    cls_real, focus = real["cls_real"], real["focus"]

    cls_x0 = torch.zeros((), device=x0.device)
    if train.lambda_cls > 0 and batch.term_scale > 0:
        k = max(1, math.ceil(train.joint_batch_fraction * n))
        weight = schedule.classifier_weight(t[:k], train.cls_weight_schedule)
        # Terms outside [floor, ceiling] count as zero: the classifier never sees their x̂0.
        check_weight_band(train)
        kept = ((weight >= train.cls_min_weight)
                & (weight <= train.cls_max_weight)).nonzero().squeeze(1)
        if len(kept):
            out = _term_output(model, batch, train, x_t, eps, t, drop, kept)
            cls_x0 = batch.term_scale * (weight[kept] * _x0_term(
                model, batch, schedule, train, x_t, out, t, kept)).sum() / k
    extra = {}
    if preconditioned_term(train) and batch.term_scale > 0:
        # The term's push on the table, outside the loss: the trainer applies it after the
        # optimiser step, scaled by Adam's second moment of the denoising gradient.
        table = model.denoiser.get_parameter(DX_TABLE)
        extra["dx_table_push"] = (
            torch.autograd.grad(train.lambda_cls * cls_x0, table)[0].detach()
            if cls_x0.requires_grad else torch.zeros_like(table))
        cls_x0 = cls_x0.detach()

    loss = (mse + train.lambda_cls * cls_x0 + cls_real + train.lambda_saliency * focus
            + train.lambda_adv * real["adv"] + train.tone_consistency * real["consistency"]
            + train.lambda_align * align)
    return {"loss": loss, "mse": mse.detach(), "cls_real": cls_real.detach(),
            "cls_x0": cls_x0.detach(), "align": align.detach(), "focus": focus.detach(),
            "adv": real["adv"].detach(),
            "consistency": real["consistency"].detach(),
            "adv_accuracy": real["adv_accuracy"], "logits_real": real["logits"].detach(),
            **extra}


def preconditioned_term(train: TrainConfig) -> bool:
    """Whether the x̂0 term's table gradient is kept out of the loss
    (train.joint_term_update "preconditioned"); refuses settings it cannot apply to."""
    if train.joint_term_update not in TERM_UPDATES:
        raise ValueError(f"unknown train.joint_term_update {train.joint_term_update!r}: "
                         f"one of {', '.join(TERM_UPDATES)}")
    if train.joint_term_update == "adam" or train.lambda_cls == 0:
        return False
    if train.cls_x0_reaches != "dx_embedding":
        raise ValueError("train.joint_term_update 'preconditioned' applies the term's gradient "
                         "to the diagnosis embedding table alone: it needs "
                         "train.cls_x0_reaches 'dx_embedding'")
    return True


def upstream_style_loss(
    model: ClassNDiff,
    batch: Batch,
    schedule: NoiseSchedule,
    train: TrainConfig,
    generator: torch.Generator | None = None,
    branch_probability: float = 0.25,
    branch_weight: float = 0.2,
) -> dict[str, torch.Tensor]:
    """The published code's step, for benchmarks and the ablation only: on a random quarter
    of steps, a SECOND denoiser pass gives the one-step-denoised input x_{t−1} for the
    classifier, weighted 0.2; the classifier is also trained on the clean input."""
    x0 = batch.x0
    t, x_t, eps, mse, _, _ = _denoising_pass(model, batch, schedule, generator)
    real = _real_image_loss(model, batch, train)
    logits_real, cls_real = real["logits"], real["cls_real"]
    cls_branch = torch.zeros((), device=x0.device)
    take_branch = torch.rand((), generator=generator).item() < branch_probability
    if take_branch:
        eps_again = model.denoiser(x_t, t, batch.dx, batch.tone, batch.sex)  # the extra pass
        x0_hat = schedule.predict_x0(x_t, eps_again, t)
        if not model.config.latent_denoiser:
            x0_hat = x0_hat.clamp(-1, 1)
        x_prev = schedule.posterior_mean(x_t, x0_hat, t)
        if model.vae is not None:
            x_prev = model.decode(x_prev)
        cls_branch = F.cross_entropy(model.classifier(x_prev).float(), batch.dx)
    loss = mse + branch_weight * cls_branch + cls_real
    return {"loss": loss, "mse": mse.detach(), "cls_real": cls_real.detach(),
            "cls_x0": cls_branch.detach(), "logits_real": logits_real.detach(),
            "took_branch": torch.tensor(float(take_branch))}


