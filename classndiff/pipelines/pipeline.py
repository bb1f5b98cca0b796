"""The public API — the one the app, the CLI and the tests all use.

    pipe = ClassNDiffPipeline.from_pretrained("weights/embedded")   # folder, Hub id, id@rev
    d = pipe.diagnose("lesion.jpg")         # probabilities, malignant (+ call), prediction
    out = pipe.generate(dx="mel", skin_tone="brown", num_images=4, seed=0)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from classndiff.config import ClassNDiffConfig
from classndiff.explain.saliency import SaliencyExplainer, make_target, normalize_method
from classndiff.hub import ResolvedWeights, load_pretrained, load_vae, resolve, save_pretrained
from classndiff.labels import (
    DX_CODES,
    MALIGNANT_DX,
    SEXES,
    TONE_GROUPS,
    encode_dx,
    encode_sex,
    encode_tone,
    malignant_mask,
)
from classndiff.models.diffusion import SAMPLERS, make_scheduler, sample
from classndiff.models.joint import ClassNDiff
from classndiff.pipelines.counterfactual import difference_image, redraw_lesion
from classndiff.pipelines.inputs import (
    ImageInputError,
    center_square,
    load_image,
    to_model_tensor,
    to_pil,
)
from classndiff.pipelines.results import (
    ClassNDiffArgumentError,
    Counterfactual,
    Diagnosis,
    Generation,
    check_int,
)
from classndiff.trust.abstention import (
    OODDetector,
    blank_reason,
    colour_reason,
    image_statistics,
    logits_and_features,
)
from classndiff.trust.fairness import skin_tone_caution
from classndiff.trust.skintone import estimate_skin_tone, normalise_skin_tone
from classndiff.version import __version__

logger = logging.getLogger(__name__)


class ClassNDiffPipeline:
    def __init__(
        self,
        model: ClassNDiff,
        config: ClassNDiffConfig,
        device: str | torch.device = "cpu",
        vae: Any = None,
        source: str = "",
        extras: dict[str, torch.Tensor] | None = None,
    ):
        self.model = model.to(device).eval()
        self.config = config
        self.device = torch.device(device)
        self.vae = vae
        self.source = source
        self.extras = extras or {}
        self._malignant = torch.tensor(malignant_mask())
        self._explainer: SaliencyExplainer | None = None
        self._trust: OODDetector | None | bool = False  # False: not looked up yet
        # Diagnosis and generation may run at once (the app serves them on separate queues);
        # CAMs hook the classifier, so every classifier pass takes this lock. Sampling does
        # not: a diagnosis waits at most for one batch's classification.
        self._classifier_lock = threading.RLock()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        source: str | Path | None = None,
        device: str | torch.device | None = None,
        fallback: bool = True,
    ) -> ClassNDiffPipeline:
        """Load from a folder, a Hub id or `id@revision`; None means the embedded default.
        A Hub source that cannot be reached falls back to the embedded weights (logged)."""
        resolved: ResolvedWeights = resolve(source, fallback=fallback)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, config, extras = load_pretrained(resolved.path, device)
        vae = None
        if config.model.vae:
            vae = load_vae(config.model.vae, config.model.vae_subfolder, device)
        pipe = cls(model, config, device, vae, resolved.description, extras)
        pipe.weights_path = resolved.path
        return pipe

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """config.json + model.safetensors (with the abstention statistics). Weights are
        stored as `dtype`, by default the config's `train.export_dtype` (float16 for the
        shipped model), so re-saving a folder keeps its size."""
        if dtype is None:
            dtype = getattr(torch, self.config.train.export_dtype, torch.float32)
        return save_pretrained(self.model, self.config, directory, self.extras, dtype=dtype)

    # ------------------------------------------------------------------ helpers
    @property
    def temperature(self) -> float:
        calibration = self.config.calibration
        return float(calibration.temperature) if calibration else 1.0

    @property
    def calibrated(self) -> bool:
        return self.config.calibration is not None

    @property
    def malignant_threshold(self) -> float | None:
        """The validation-fitted threshold of the malignant call, if calibrated with one."""
        calibration = self.config.calibration
        return calibration.malignant_threshold if calibration else None

    @property
    def test_views(self) -> int:
        """Dihedral views a prediction averages (test-time augmentation; 1 = none)."""
        return self.config.model.classifier_test_views

    def _to_model_space(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] → what the classifier takes (pixels, or Hub-VAE latents), the
        skin around the lesion re-tinted to the weights' reference tone where they set one."""
        reference = self.config.model.classifier_skin_reference
        if reference is not None:
            pixels = normalise_skin_tone(pixels, reference)
        if not self.config.model.latent_classifier:
            return pixels
        latents = self.vae.encode(pixels.to(self.device)).latent_dist.mean
        return latents * self.config.model.vae_scaling_factor

    def _to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The denoiser's space → pixels in [-1, 1]."""
        if self.model.vae is not None:
            return self.model.decode(x)
        if self.vae is None:
            return x
        return self.vae.decode(x / self.config.model.vae_scaling_factor).sample.clamp(-1, 1)

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw classifier logits for a batch of pixel images in [-1, 1] (averaged over the
        test-time views)."""
        return logits_and_features(self.model.classifier,
                                   self._to_model_space(pixels.to(self.device)),
                                   self.test_views)[0]

    @torch.no_grad()
    def predict_proba(self, pixels: torch.Tensor, calibrated: bool = True) -> torch.Tensor:
        """Class probabilities (N, 7) for pixel images in [-1, 1]; temperature-scaled when
        the weights carry a fitted temperature."""
        temperature = self.temperature if calibrated else 1.0
        with self._classifier_lock:
            return torch.softmax(self.logits(pixels) / temperature, dim=1).cpu()

    def load(self, image: Any) -> torch.Tensor:
        """Any upload → (1, 3, S, S) tensor in [-1, 1] at the data's pixel size."""
        size = self.config.model.pixel_size
        return to_model_tensor(load_image(image, draft_size=2 * size), size)

    @property
    def explainer(self) -> SaliencyExplainer:
        """CAMs over the classifier, built once (the target layer is found on first use)."""
        if self._explainer is None:
            self._explainer = SaliencyExplainer(self.model.classifier, views=self.test_views)
        return self._explainer

    @property
    def trust(self) -> OODDetector | None:
        """The abstention detector stored with the weights (`classndiff calibrate`), or None."""
        if self._trust is False:
            self._trust = OODDetector.from_pretrained(self.extras, self.config.abstention)
        return self._trust

    # ------------------------------------------------------------------ diagnose
    def diagnose(
        self,
        image: Any,
        saliency: bool = False,
        cam_method: str = "gradcam",
        cam_target: str | int | None = None,
        opacity: float = 0.5,
        colormap: str = "viridis",
        skin_tone: bool = True,
        abstain: bool = True,
    ) -> Diagnosis:
        """Classify one dermoscopic image (PIL image, path, bytes or array).

        saliency: also compute a CAM (`cam_method`: gradcam, gradcam++, hirescam, eigencam,
            scorecam) for `cam_target` (None = the predicted class, a dx code, or
            "malignant"), with an overlay of the given `opacity` and matplotlib `colormap`.
        skin_tone: estimate the ITA skin tone of the skin around the lesion.
        abstain: when the weights carry abstention statistics and the image does not look
            like a dermoscopic lesion, return `prediction=None` with the `reason` in words
            (False: predict anyway, and keep the reason in `extras["warning"]`).

        Raises ImageInputError (a ValueError) with a readable message for unusable input,
        ClassNDiffArgumentError for a bad argument."""
        if saliency:  # check arguments before any work
            try:
                cam_method = normalize_method(cam_method)
                make_target(cam_target, 0)
                if not isinstance(opacity, (int, float)) or not 0 <= opacity <= 1:
                    raise ValueError(f"opacity must be between 0 and 1, got {opacity!r}")
                import matplotlib

                if colormap not in matplotlib.colormaps:
                    raise ValueError(f"unknown matplotlib colormap {colormap!r}")
            except ValueError as error:
                raise ClassNDiffArgumentError(str(error)) from None
        upload, pixels = self._read(image)
        with self._classifier_lock:
            return self._diagnose(upload, pixels, saliency, cam_method, cam_target, opacity,
                                  colormap, skin_tone, abstain)

    def _read(self, image: Any) -> tuple[Image.Image, torch.Tensor]:
        """An upload → (centre square at the data's pixel size, (1, 3, S, S) in [-1, 1])."""
        size = self.config.model.pixel_size
        upload = center_square(load_image(image, draft_size=2 * size), size)
        return upload, to_model_tensor(upload, size)

    def _diagnose(self, upload: Image.Image, pixels: torch.Tensor, saliency: bool,
                  cam_method: str, cam_target: str | int | None, opacity: float,
                  colormap: str, skin_tone: bool, abstain: bool) -> Diagnosis:
        size = self.config.model.pixel_size
        model_input = self._to_model_space(pixels.to(self.device))
        with torch.no_grad():
            logits, feature_map, features = self.model.classifier.forward_views(
                model_input, self.test_views)
            logits, features = logits.float(), features.float()
        probs = torch.softmax(logits / self.temperature, dim=1).cpu()[0]
        top = int(probs.argmax())
        extras: dict[str, Any] = {}

        reason = blank_reason(pixels)
        if reason is None:
            stats = image_statistics(pixels)
            reason = colour_reason(stats)
            if reason is None and self.trust is not None:
                check = self.trust.check(features, stats)[0]
                extras["ood"] = {k: check[k] for k in ("feature_score", "stats_score")}
                reason = check["reason"]
        abstained = abstain and reason is not None
        if reason is not None and not abstained:
            extras["warning"], reason = reason, None

        tone = estimate_skin_tone(upload) if skin_tone and not abstained else None
        # Only on a reliable estimate: a ring fallback or a colour cast can read "darker".
        group = tone.get("group") if tone and tone.get("reliable") else None
        caution = skin_tone_caution(self.config.skin_tone_check, group, float(probs[top]),
                                    self.temperature, self.test_views,
                                    self.malignant_threshold)
        if caution is not None:
            extras["skin_tone_check"] = caution
        cam = None
        if saliency and not abstained:
            cam = self.explainer(model_input, target=cam_target, method=cam_method,
                                 predicted=top, image=upload, opacity=opacity,
                                 colormap=colormap, feature_map=feature_map)
            if cam.map.shape != (size, size):  # latent space: the map is at latent resolution
                cam.map = torch.nn.functional.interpolate(
                    torch.from_numpy(cam.map)[None, None], size=(size, size), mode="bilinear",
                    align_corners=False)[0, 0].numpy()
        malignant = float(probs[self._malignant].sum())
        threshold = self.malignant_threshold
        call = None if abstained or threshold is None else malignant >= threshold
        if call is not None:  # what the threshold means, for whoever shows the call
            calibration = self.config.calibration
            extras["malignant_call"] = {
                "target_sensitivity": calibration.malignant_target_sensitivity,
                "sensitivity": calibration.malignant_sensitivity,
                "specificity": calibration.malignant_specificity, "split": calibration.split}
        return Diagnosis(
            probabilities={code: float(p) for code, p in zip(DX_CODES, probs)},
            malignant=malignant,
            malignant_call=call,
            malignant_threshold=threshold,
            prediction=None if abstained else DX_CODES[top],
            confidence=float(probs[top]),
            reason=reason,
            calibrated=self.calibrated,
            saliency=cam,
            skin_tone=tone,
            extras=extras,
        )

    # ------------------------------------------------------------------ generate
    def generate(
        self,
        dx: str | None = "mel",
        skin_tone: str | None = None,
        sex: str | None = None,
        num_images: int = 4,
        steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = 0,
        sampler: str | None = None,
        keep_only_agreeing: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> Generation:
        """Generate synthetic lesions. Any condition may be None ("any"). Image i uses seed
        `seed + i`, so a batch is reproducible from its settings. With
        `keep_only_agreeing`, extra candidates are drawn (up to 4× the count) and only
        those the classifier assigns to `dx` are kept; fewer may come back."""
        num_images, sampler, steps, guidance_scale, seed, ids = self._generation_arguments(
            dx, skin_tone, sex, num_images, steps, guidance_scale, seed, sampler,
            keep_only_agreeing)
        started = time.perf_counter()
        kept, drawn = self._draw(ids, num_images, seed, steps, guidance_scale, sampler,
                                 keep_only_agreeing, progress)
        settings = {
            "dx": DX_CODES[ids[0]] if ids[0] < len(DX_CODES) else None,
            "skin_tone": TONE_GROUPS[ids[1]] if ids[1] < len(TONE_GROUPS) else None,
            "sex": SEXES[ids[2]] if ids[2] < len(SEXES) else None,
            "num_images": num_images,
            "steps": steps,
            "guidance_scale": float(guidance_scale),
            # (σ_min, σ_max): guidance acts only at these noise levels (None: no upper limit)
            "guidance_interval": list(self.config.sampling.guidance_interval),
            "seed": seed,
            "seeds": [k[3] for k in kept],
            "sampler": sampler,
            "keep_only_agreeing": keep_only_agreeing,
            "candidates_drawn": drawn,
            "image_size": kept[0][0].size[0] if kept else None,
            "weights": self.source,
            "classndiff_version": __version__,
            "seconds": round(time.perf_counter() - started, 3),
            "synthetic": True,
        }
        return Generation(
            images=[k[0] for k in kept],
            confidences=[k[1] for k in kept],
            predicted=[k[2] for k in kept],
            seeds=[k[3] for k in kept],
            settings=settings,
        )

    def _generation_arguments(self, dx: str | None, skin_tone: str | None, sex: str | None,
                              num_images: int, steps: int | None,
                              guidance_scale: float | None, seed: int | None,
                              sampler: str | None, keep_only_agreeing: bool) -> tuple:
        """`generate`'s arguments checked and defaulted: (num_images, sampler, steps,
        guidance, seed, condition ids); a bad one raises ClassNDiffArgumentError."""
        s = self.config.sampling
        sampler = sampler or s.sampler
        steps = s.steps if steps is None else steps
        guidance_scale = s.guidance_scale if guidance_scale is None else guidance_scale
        if sampler not in SAMPLERS:
            raise ClassNDiffArgumentError(
                f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
        num_images = check_int("num_images", num_images, 1, s.max_images)
        max_steps = min(s.max_steps, self.config.model.num_train_timesteps)
        steps = check_int("steps", steps, 1, max_steps)
        if not isinstance(guidance_scale, (int, float)) or not 0 <= guidance_scale <= 20:
            raise ClassNDiffArgumentError(
                f"guidance_scale must be a number between 0 and 20, got {guidance_scale!r}")
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        seed = check_int("seed", seed, 0, 2**63 - 1)
        try:
            ids = (encode_dx(dx), encode_tone(skin_tone), encode_sex(sex))
        except ValueError as error:
            raise ClassNDiffArgumentError(str(error)) from None
        if keep_only_agreeing and dx in (None, "", "any"):
            raise ClassNDiffArgumentError("keep_only_agreeing needs a diagnosis to agree with")
        return num_images, sampler, steps, guidance_scale, seed, ids

    def _draw(self, ids: tuple[int, int, int], num_images: int, seed: int, steps: int,
              guidance_scale: float, sampler: str, keep_only_agreeing: bool,
              progress: Callable[[int, int], None] | None,
              ) -> tuple[list[tuple[Image.Image, float, str, int]], int]:
        """Sample until `num_images` are kept (with `keep_only_agreeing`, only those the
        classifier assigns to the requested dx, from at most 4× as many candidates):
        ([(image, confidence, predicted dx, seed)], candidates drawn)."""
        wanted_dx = ids[0] if ids[0] < len(DX_CODES) else None
        attempts = num_images * 4 if keep_only_agreeing else num_images
        kept: list[tuple[Image.Image, float, str, int]] = []
        next_seed = seed
        while len(kept) < num_images and next_seed - seed < attempts:
            count = num_images - len(kept) if not keep_only_agreeing else min(
                num_images, attempts - (next_seed - seed))
            seeds = list(range(next_seed, next_seed + count))
            next_seed += count
            images, probs = self._sample(ids, seeds, steps, guidance_scale, sampler, progress)
            for image, p, image_seed in zip(images, probs, seeds):
                top = DX_CODES[int(p.argmax())]
                confidence = float(p[wanted_dx]) if wanted_dx is not None else float(p.max())
                if keep_only_agreeing and top != DX_CODES[wanted_dx]:
                    continue
                kept.append((image, confidence, top, image_seed))
                if len(kept) == num_images:
                    break
        return kept, next_seed - seed

    # ------------------------------------------------------------------ counterfactual
    def counterfactual(
        self,
        image: Any,
        target_dx: str | None = None,
        strength: float | None = None,
        steps: int = 25,
        guidance_scale: float | None = None,
        seed: int = 0,
        classifier_scale: float | None = None,
        candidates: int | None = None,
    ) -> Counterfactual:
        """What this lesion would have to look like to be called `target_dx`: SDEdit from
        noise level `strength` (0–1] towards the target, skin outside the lesion kept.
        `target_dx` None: the most likely malignant class when the prediction is benign,
        nv when it is malignant. An upload the pipeline abstains on gets no image and the
        same `reason` as `diagnose`. `classifier_scale` > 0 also steers x̂0 by the joint
        classifier's gradient towards the target. `strength` and `classifier_scale` (the
        target's own where the weights set one) and `guidance_scale` default to the weights'
        own (`config.sampling.counterfactual_*`). `candidates` > 1: that many redraws from
        one seed, and the one the model's own classifier finds most like the target is shown
        (selection among the generator's drawings, not a nudge of pixels towards the
        classifier; the pick is recorded in the settings).
        Bad arguments raise ClassNDiffArgumentError."""
        sampling = self.config.sampling
        guidance_scale = (sampling.counterfactual_guidance if guidance_scale is None
                          else guidance_scale)
        if target_dx is not None and target_dx not in DX_CODES:
            raise ClassNDiffArgumentError(
                f"unknown target_dx {target_dx!r}: choose one of {', '.join(DX_CODES)}")
        if strength is not None and (isinstance(strength, bool)
                                     or not isinstance(strength, (int, float))
                                     or not 0 < strength <= 1):
            raise ClassNDiffArgumentError(f"strength must be in (0, 1], got {strength!r}")
        steps = check_int("steps", steps, 1, min(self.config.sampling.max_steps, 250))
        if not isinstance(guidance_scale, (int, float)) or not 0 <= guidance_scale <= 20:
            raise ClassNDiffArgumentError(
                f"guidance_scale must be a number between 0 and 20, got {guidance_scale!r}")
        if classifier_scale is not None and (
                isinstance(classifier_scale, bool)
                or not isinstance(classifier_scale, (int, float))
                or not 0 <= classifier_scale <= 1):
            raise ClassNDiffArgumentError(
                f"classifier_scale must be a number between 0 and 1, got {classifier_scale!r}")
        seed = check_int("seed", seed, 0, 2**63 - 1)
        candidates = check_int("candidates", sampling.counterfactual_candidates
                               if candidates is None else candidates, 1, 16)
        if self.config.model.latent_classifier:
            raise ClassNDiffArgumentError("counterfactuals need a model whose classifier reads "
                                          "pixels")
        upload, pixels = self._read(image)  # once, for the diagnosis and the edit
        with self._classifier_lock:
            before = self._diagnose(upload, pixels, saliency=False, cam_method="gradcam",
                                    cam_target=None, opacity=0.5, colormap="viridis",
                                    skin_tone=False, abstain=True)
        if target_dx is None:
            if before.prediction in MALIGNANT_DX:
                target_dx = "nv"
            else:
                target_dx = max(MALIGNANT_DX, key=before.probabilities.get)
        # Known only now: the defaults may differ by target.
        if strength is None:
            strength = sampling.counterfactual_strength_for(target_dx)
        if classifier_scale is None:
            classifier_scale = sampling.counterfactual_classifier_scale_for(target_dx)
        settings = {"target_dx": target_dx, "strength": float(strength), "steps": steps,
                    "guidance_scale": float(guidance_scale),
                    "classifier_scale": float(classifier_scale),
                    "margin": sampling.counterfactual_margin,
                    "margin_share": sampling.counterfactual_margin_share,
                    "detail": sampling.counterfactual_detail,
                    "candidates": candidates,
                    "seed": seed, "sampler": "ddim",
                    "weights": self.source, "classndiff_version": __version__,
                    "synthetic": True}
        if before.prediction is None:
            return Counterfactual(target_dx, None, None, None, {}, {}, settings,
                                  reason=before.reason)
        started = time.perf_counter()
        pixels = pixels.to(self.device)
        result, mask = redraw_lesion(self.model, pixels, encode_dx(target_dx),
                                     strength=strength, steps=steps,
                                     guidance_scale=guidance_scale, seed=seed,
                                     classifier_scale=classifier_scale,
                                     margin=sampling.counterfactual_margin,
                                     margin_share=sampling.counterfactual_margin_share,
                                     detail=sampling.counterfactual_detail,
                                     candidates=candidates)
        scores = self.predict_proba(result)
        pick = int(scores[:, DX_CODES.index(target_dx)].argmax())
        result, after = result[pick:pick + 1], scores[pick]
        settings["chosen_candidate"] = pick
        settings["seconds"] = round(time.perf_counter() - started, 3)
        settings["lesion_area"] = round(float(mask.mean()), 4)
        return Counterfactual(
            target=target_dx, image=to_pil(result)[0], original=upload.convert("RGB"),
            difference=difference_image((pixels[0].cpu() + 1) / 2, (result[0].cpu() + 1) / 2),
            probabilities_before=before.probabilities,
            probabilities_after={c: float(p) for c, p in zip(DX_CODES, after)},
            settings=settings)

    @torch.no_grad()
    def _sample(self, ids, seeds, steps, guidance_scale, sampler, progress):  # noqa: ANN001, ANN202
        n = len(seeds)
        labels = [torch.full((n,), i, dtype=torch.long, device=self.device) for i in ids]
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        scheduler = make_scheduler(sampler, self.config.model)
        x = sample(self.model, scheduler, *labels, steps=steps, guidance_scale=guidance_scale,
                   generators=generators, progress=progress,
                   guided=self.config.sampling.guided,
                   guidance_interval=self.config.sampling.guidance_interval)
        pixels = self._to_pixels(x)
        probs = self.predict_proba(pixels)
        return to_pil(pixels), probs


__all__ = [
    "ClassNDiffArgumentError",
    "ClassNDiffPipeline",
    "Counterfactual",
    "Diagnosis",
    "Generation",
    "ImageInputError",
]
