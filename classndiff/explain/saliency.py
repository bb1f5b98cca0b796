"""Where the classifier looked: class-activation maps over the model's timm backbone
(Grad-CAM computed directly where the head allows it, pytorch-grad-cam for the others).

    explainer = SaliencyExplainer(pipe.model.classifier)
    s = explainer(pixels, target="malignant", method="gradcam++")   # s.map: (H, W) in [0, 1]
    s.overlay                                                         # PIL image

The CAM objects are built once per method and cached: their hooks record only inside a CAM
call (plain classification pays nothing), and the gradient stops at the target layer, so a
Grad-CAM costs about one forward pass. The measures (energy inside the expert lesion
masks) are in `classndiff.evaluation.saliency`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from classndiff.explain.result import Saliency
from classndiff.labels import DX_CODES, MALIGNANT_DX

CAM_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "hirescam", "eigencam", "scorecam")
# Computed without pytorch-grad-cam when the head allows it (see SaliencyExplainer.native).
NATIVE_METHODS = ("gradcam", "hirescam")
CAM_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM",
             "eigencam": "EigenCAM", "scorecam": "Score-CAM"}
_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++"}


def normalize_method(method: str) -> str:
    """"Grad-CAM++", "gradcam_pp", "HiResCAM"... → a key of CAM_METHODS."""
    key = str(method).lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}: choose one of {', '.join(CAM_METHODS)}")
    return key


class MalignantTarget:
    """CAM target for "malignant": the log-odds log P(mel|bcc|akiec) − log P(benign).

    The sum of the three malignant logits would change with a shift common to all logits and
    the sum of their probabilities saturates; the log-odds does neither."""

    def __init__(self, malignant: Sequence[int] | None = None):
        malignant = malignant or [DX_CODES.index(c) for c in MALIGNANT_DX]
        self.malignant = list(malignant)
        self.benign = [i for i in range(len(DX_CODES)) if i not in self.malignant]

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return (torch.logsumexp(output[..., self.malignant], dim=-1)
                - torch.logsumexp(output[..., self.benign], dim=-1))


class ClassTarget:
    """CAM target for one class: its logit (pytorch-grad-cam's ClassifierOutputTarget)."""

    def __init__(self, index: int):
        self.index = index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[..., self.index]


def make_target(target: str | int | None, predicted: int) -> tuple[Callable, str]:
    """None → the predicted class; a dx code or index → that class; "malignant" → log-odds."""
    if target is None or target in ("", "predicted", "prediction"):
        return ClassTarget(predicted), DX_CODES[predicted]
    if isinstance(target, str) and target.lower() == "malignant":
        return MalignantTarget(), "malignant"
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(DX_CODES):
        return ClassTarget(target), DX_CODES[target]
    if isinstance(target, str) and target.lower() in DX_CODES:
        return ClassTarget(DX_CODES.index(target.lower())), target.lower()
    raise ValueError(f"unknown CAM target {target!r}: use None (the predicted class), "
                     f"'malignant', or one of {', '.join(DX_CODES)}")


def _spatial_sides(
    backbone: nn.Module, modules: Sequence[tuple[str, nn.Module]], in_chans: int, input_size: int
) -> list[tuple[str, int]]:
    """Run `forward_features` once; the (name, shorter side) of each of `modules` whose output
    is an (N, C, H, W) map, in the order they finish (first call only)."""
    seen: dict[str, int] = {}
    hooks = []
    for name, module in modules:
        def record(_module, _inputs, output, name=name):  # noqa: ANN001, ANN202
            if isinstance(output, torch.Tensor) and output.ndim == 4 and name not in seen:
                seen[name] = int(min(output.shape[-2:]))

        hooks.append(module.register_forward_hook(record))
    was_training = backbone.training
    try:
        backbone.eval()
        device = next(backbone.parameters()).device
        with torch.no_grad():
            backbone.forward_features(torch.zeros(1, in_chans, input_size, input_size,
                                                  device=device))
    finally:
        backbone.train(was_training)
        for hook in hooks:
            hook.remove()
    return list(seen.items())


def find_target_layer(
    backbone: nn.Module, in_chans: int = 3, input_size: int = 64, min_side: int = 2
) -> tuple[str, nn.Module]:
    """The backbone's last spatial feature map: the last top-level child (Identity aside)
    whose output is (N, C, H, W) when `forward_features` runs on an `input_size` image —
    `layer4` for ResNets, `bn2` (after conv_head) for EfficientNets, `stages` for ConvNeXts.
    Found by probing the backbone once rather than from a table of names, so any timm CNN
    works. When that map is smaller than `min_side` (a 1×1 map gives a flat CAM, e.g. a
    small network on a small input), the deepest of timm's stages (`feature_info`) that is
    still at least `min_side` wide is taken instead."""
    children = [(n, c) for n, c in backbone.named_children() if not isinstance(c, nn.Identity)]
    found = _spatial_sides(backbone, children, in_chans, input_size)
    if found and found[-1][1] >= min_side:
        return found[-1][0], backbone.get_submodule(found[-1][0])
    stages = []
    for info in getattr(backbone, "feature_info", None) or []:
        name = info.get("module") if isinstance(info, dict) else None
        if name:
            try:
                stages.append((name, backbone.get_submodule(name)))
            except AttributeError:
                continue
    wide = [n for n, side in _spatial_sides(backbone, stages + children, in_chans, input_size)
            if side >= min_side]
    name = wide[-1] if wide else (found[-1][0] if found else None)
    if name is None:
        raise ValueError(f"no spatial feature map found in {type(backbone).__name__} for a CAM")
    return name, backbone.get_submodule(name)


# The pytorch-grad-cam adapters kept together inside one function, so that the library
# (with OpenCV, matplotlib and scikit-learn) is imported only when a method needs it.
def _cam_classes() -> dict[str, type]:
    """pytorch-grad-cam classes (imported lazily: it pulls in matplotlib and torchvision)."""
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, ScoreCAM
    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients

    class Recorder(ActivationsAndGradients):
        """Records only inside a CAM call, and makes the target layer's output a leaf so
        the backward pass stops there (the CAM needs d target / d activations, nothing
        below them)."""

        def __init__(self, model, target_layers, reshape_transform, detach=True):  # noqa: ANN001
            self.model = model
            self.gradients, self.activations = [], []
            self.reshape_transform = reshape_transform
            self.detach = detach
            self.recording = False
            self.handles = [layer.register_forward_hook(self.save) for layer in target_layers]

        def save(self, module, inputs, output):  # noqa: ANN001, ANN201
            if not self.recording:
                return None
            if torch.is_grad_enabled():
                output = output.detach().requires_grad_(True)
                output.register_hook(self.store_grad)
            self.activations.append(output.detach().cpu())
            return output

        def store_grad(self, grad: torch.Tensor) -> None:
            self.gradients = [grad.detach().cpu(), *self.gradients]

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            self.gradients, self.activations = [], []
            self.recording = True
            try:
                return self.model(x)
            finally:
                self.recording = False

    class QuietScoreCAM(ScoreCAM):
        """Score-CAM without its per-call progress bar, in bigger batches."""

        batch_size = 64

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):  # noqa: ANN001, ANN201
            with torch.no_grad():
                maps = torch.from_numpy(activations).to(self.device)
                maps = nn.functional.interpolate(maps, size=input_tensor.shape[-2:],
                                                 mode="bilinear", align_corners=True)
                flat = maps.flatten(2)
                lo, hi = flat.min(-1)[0][..., None, None], flat.max(-1)[0][..., None, None]
                maps = (maps - lo) / (hi - lo + 1e-8)
                weights = []
                for target, x, m, flat_range in zip(targets, input_tensor, maps, hi - lo):
                    # Channels that are flat (often most, after a ReLU) all mask the image
                    # to zero: score that input once instead of once per channel.
                    live = flat_range.flatten() > 1e-6
                    masked = x[None] * m[live][:, None]
                    scores = torch.empty(len(m), device=x.device)
                    if live.any():
                        scores[live] = torch.cat([
                            target(self.model(masked[i : i + self.batch_size])).float()
                            for i in range(0, len(masked), self.batch_size)])
                    if not live.all():
                        scores[~live] = target(self.model(torch.zeros_like(x[None]))).float()
                    weights.append(torch.softmax(scores, dim=-1))
                return torch.stack(weights).cpu().numpy()

    def cached(kind: type) -> type:
        class Cached(kind):
            def __init__(self, model, target_layers, **kwargs):  # noqa: ANN001
                super().__init__(model, target_layers, **kwargs)
                self.activations_and_grads.release()  # swap the library's always-on hooks
                self.activations_and_grads = Recorder(model, target_layers, None)

        Cached.__name__ = kind.__name__
        return Cached

    return {
        "gradcam": cached(GradCAM),
        "gradcam++": cached(GradCAMPlusPlus),
        "hirescam": cached(HiResCAM),
        "eigencam": cached(EigenCAM),
        "scorecam": cached(QuietScoreCAM),
    }


def overlay_map(
    image: Image.Image | np.ndarray,
    cam: np.ndarray,
    opacity: float = 0.5,
    colormap: str = "viridis",
) -> Image.Image:
    """Blend a [0, 1] map over an RGB image: `opacity` 0 shows the image, 1 the heat map;
    `colormap` is any matplotlib colormap name."""
    import matplotlib

    if not isinstance(opacity, (int, float)) or not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity!r}")
    try:
        cmap = matplotlib.colormaps[colormap]
    except (KeyError, TypeError):
        raise ValueError(f"unknown matplotlib colormap {colormap!r}") from None
    base = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image,
                      dtype=np.float32)
    if base.shape[:2] != cam.shape:
        resized = Image.fromarray(np.uint8(np.clip(cam, 0, 1) * 255)).resize(
            (base.shape[1], base.shape[0]), Image.Resampling.BILINEAR)
        cam = np.asarray(resized, dtype=np.float32) / 255
    heat = cmap(np.clip(cam, 0, 1))[..., :3] * 255
    out = (1 - opacity) * base + opacity * heat
    return Image.fromarray(np.uint8(np.clip(out, 0, 255).round()))


class SaliencyExplainer:
    """CAMs for a LesionClassifier (it takes pixels in [-1, 1], so maps come out at the
    resolution of the pixels given). One instance per model; CAM objects are cached."""

    def __init__(self, classifier: nn.Module, layer: str | None = None, native: bool = True,
                 views: int = 1):
        """`views`: the test-time views the classifier's prediction averages; the native
        Grad-CAM then explains that averaged prediction (its map is the views' maps turned
        back and averaged). pytorch-grad-cam's methods see the image as given."""
        self.classifier = classifier
        self.views = views
        backbone = classifier.backbone
        in_chans = getattr(backbone, "in_chans", None) or 3
        input_size = getattr(classifier, "input_size", None) or 64
        self._probe_shape = (in_chans, input_size)
        if layer is None:
            self.layer_name, self.layer = find_target_layer(backbone, in_chans, input_size)
        else:
            self.layer_name, self.layer = layer, backbone.get_submodule(layer)
        self._cams: dict[str, Any] = {}
        # Grad-CAM needs no backward pass through the backbone when the CAM layer is the map
        # the head average-pools into a linear layer: a target's gradient at that map is the
        # same at every position, so Grad-CAM (and HiResCAM, equal to it there) is
        # ReLU(Σ_k ∂T/∂pooled_k · A_k). Computed here directly (the same maps as
        # pytorch-grad-cam's, tested), a diagnosis with a map does not import pytorch-grad-cam,
        # OpenCV and scikit-learn (~1.3 s at start-up) nor pay the backbone's backward pass.
        self.native = native and self._layer_is_pooled_map(in_chans, input_size)

    def grid(self) -> tuple[int, int]:
        """The CAM layer's map size at the classifier's input size: the finest detail a map
        can follow, whichever method computes it."""
        side = dict(_spatial_sides(self.classifier.backbone, [(self.layer_name, self.layer)],
                                   *self._probe_shape))[self.layer_name]
        return side, side

    def cam(self, method: str = "gradcam") -> Any:
        method = normalize_method(method)
        if method not in self._cams:
            self._cams[method] = _cam_classes()[method](self.classifier, [self.layer])
        return self._cams[method]

    def maps(
        self,
        pixels: torch.Tensor,
        targets: Sequence[Callable] | None = None,
        method: str = "gradcam",
        feature_map: torch.Tensor | None = None,
    ) -> tuple[np.ndarray, torch.Tensor]:
        """(N, 3, H, W) pixels in [-1, 1] → ((N, H, W) maps in [0, 1], logits (N, 7)).
        `targets` None means each image's predicted class. `feature_map`: the classifier's
        (view-averaged) last map of these pixels if already computed (native Grad-CAM only)."""
        if self.native and normalize_method(method) in NATIVE_METHODS:
            return self._native_grad_cam(pixels, targets, feature_map)
        cam = self.cam(method)
        was_training = self.classifier.training
        self.classifier.eval()
        try:
            with torch.enable_grad():
                grayscale = cam(input_tensor=pixels, targets=list(targets) if targets else None)
            logits = cam.outputs.detach().float()
        finally:
            self.classifier.train(was_training)
            self.classifier.zero_grad(set_to_none=True)
        return grayscale.astype(np.float32), logits

    def _layer_is_pooled_map(self, in_chans: int, input_size: int) -> bool:
        """One probe pass: the head average-pools into a linear layer, and the CAM layer's
        output is the map it pools."""
        if not hasattr(self.classifier, "probe"):
            return False
        seen: list[torch.Tensor] = []
        hook = self.layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            logits, feature_map = self.classifier.probe(input_size, in_chans)
        finally:
            hook.remove()
        return (self.classifier.head_pools_linearly(logits, feature_map) and bool(seen)
                and seen[-1].shape == feature_map.shape and torch.equal(seen[-1], feature_map))

    def _native_grad_cam(
        self, pixels: torch.Tensor, targets: Sequence[Callable] | None,
        feature_map: torch.Tensor | None = None,
    ) -> tuple[np.ndarray, torch.Tensor]:
        from classndiff.models.classifier import scale_like_grad_cam

        was_training = self.classifier.training
        self.classifier.eval()
        try:
            if feature_map is None:
                with torch.no_grad():
                    feature_map = self.classifier.forward_views(pixels, self.views)[1]
            feature_map = feature_map.detach().float()
            with torch.enable_grad():
                pooled = feature_map.mean(dim=(-2, -1)).requires_grad_(True)
                head = self.classifier.backbone.get_classifier()
                logits = torch.nn.functional.linear(
                    pooled, head.weight.float(), None if head.bias is None else head.bias.float())
                if targets is None:
                    targets = [ClassTarget(int(c)) for c in logits.argmax(1)]
                total = sum(target(logits[i]) for i, target in enumerate(targets))
                (weights,) = torch.autograd.grad(total, pooled)
        finally:
            self.classifier.train(was_training)
        cams = torch.relu(torch.einsum("nc,nchw->nhw", weights, feature_map))
        maps = scale_like_grad_cam(cams, tuple(pixels.shape[-2:]))[:, 0]
        return maps.detach().cpu().numpy().astype(np.float32), logits.detach()

    def __call__(
        self,
        pixels: torch.Tensor,
        target: str | int | None = None,
        method: str = "gradcam",
        predicted: int | None = None,
        image: Image.Image | None = None,
        opacity: float = 0.5,
        colormap: str = "viridis",
        feature_map: torch.Tensor | None = None,
    ) -> Saliency:
        """One image (1, 3, H, W) → a Saliency. `predicted` (if known) saves a forward pass
        when the target is the predicted class, `feature_map` (see `maps`) another."""
        method = normalize_method(method)
        if predicted is None:  # the pass that predicts also gives the native CAM its map
            with torch.no_grad():
                logits, views_map, _ = self.classifier.forward_views(pixels, self.views)
            predicted = int(logits.argmax(1)[0])
            feature_map = views_map if feature_map is None else feature_map
        target_fn, target_name = make_target(target, predicted)
        grayscale, _ = self.maps(pixels, [target_fn], method, feature_map)
        cam = grayscale[0]
        if image is None:
            array = ((pixels[0].detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round()
            image = Image.fromarray(array.byte().permute(1, 2, 0).numpy())
        overlay = overlay_map(image, cam, opacity, colormap)
        return Saliency(cam, overlay, method, target_name, self.layer_name)


