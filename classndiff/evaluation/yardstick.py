"""A neutral yardstick for generated images, in the feature space of a network that has
never seen this data (ImageNet EfficientNet-Lite0, pooled 1280-d, inputs at 224 px):

    feats = ImageNetFeatures()(uint8_images)
    frechet_distance(real, fake) · kernel_distance(real, fake)        (generation.py)
    mix_matched_fd(real, real_labels, fake, fake_labels)   real re-weighted to fake's class mix
    precision_recall(real, fake, k=5)     Kynkäänniemi et al., 2019
    diversity(fake) / diversity(real)     mean pairwise feature distance
    blockiness(uint8_images)              patch seams: grid steps ÷ off-grid steps
    border_ita(uint8_images)              skin tone of the outer ring (ITA, degrees)

Every figure is meant to be read beside the floor real images reach at the same count and
size (real train vs real test): `yardstick` computes both."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from classndiff.evaluation.generation import frechet_distance, kernel_distance
from classndiff.training.evaluator import downsample_uint8
from classndiff.trust.skintone import ita_degrees

FEATURE_BACKBONE = "tf_efficientnet_lite0"


class ImageNetFeatures(nn.Module):
    """Pooled ImageNet Lite0 features of uint8 (N, 3, H, W) images, resized to 224."""

    def __init__(self, size: int = 224):
        super().__init__()
        import timm

        from classndiff.models.backbones import load_imagenet_weights

        self.size = size
        self.net = timm.create_model(FEATURE_BACKBONE, pretrained=False)
        load_imagenet_weights(self.net, FEATURE_BACKBONE)
        self.net.reset_classifier(0)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].float() / 127.5 - 1  # Lite: inputs in [-1, 1]
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.size)
            out.append(self.net(x).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.net.num_features))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.clip(d, 0, None))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Improved precision and recall: a point is covered by a set when it lies within the
    k-th-nearest-neighbour radius of some member of that set. Precision = share of fake
    covered by real (realism); recall = share of real covered by fake (coverage)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if len(real) <= k or len(fake) <= k:
        return {"precision": float("nan"), "recall": float("nan")}
    radius_real = np.sort(_pairwise(real, real), 1)[:, k]  # column 0 is the point itself
    radius_fake = np.sort(_pairwise(fake, fake), 1)[:, k]
    cross = _pairwise(fake, real)  # (fake, real)
    precision = (cross <= radius_real[None]).any(1).mean()
    recall = (cross.T <= radius_fake[None]).any(1).mean()
    return {"precision": float(precision), "recall": float(recall)}


def diversity(features: np.ndarray) -> float:
    """Mean distance between distinct pairs of feature vectors."""
    features = np.asarray(features, np.float64)
    n = len(features)
    if n < 2:
        return float("nan")
    return float(_pairwise(features, features).sum() / (n * (n - 1)))


def within_class_diversity(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes (with ≥ 2 images) of the within-class diversity."""
    values = [diversity(features[labels == c]) for c in np.unique(labels)
              if (labels == c).sum() >= 2]
    return float(np.mean(values)) if values else float("nan")


def blockiness(images: torch.Tensor | np.ndarray, grids: tuple[int, ...] = (4, 8, 16)) -> float:
    """Patch seams: mean absolute step between neighbouring pixels across the lines of a
    p-pixel grid ÷ the same step elsewhere, the maximum over `grids`. Natural images give
    ≈1; an image painted patch by patch gives more. uint8 (N, 3, H, W) or (N, H, W, 3)."""
    x = torch.as_tensor(np.asarray(images)).float()
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    steps_x = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(0, 1, 2))  # (W−1,)
    steps_y = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(0, 1, 3))  # (H−1,)
    ratios = []
    for p in grids:
        for steps in (steps_x, steps_y):
            # step i is between pixel i and i+1: it crosses a grid line when (i+1) % p == 0
            on = torch.tensor([(i + 1) % p == 0 for i in range(len(steps))])
            if on.any() and (~on).any():
                ratios.append(float(steps[on].mean() / steps[~on].mean().clamp(min=1e-6)))
    return max(ratios) if ratios else float("nan")


def border_ita(images: torch.Tensor | np.ndarray, ring: float = 0.12) -> np.ndarray:
    """Median ITA (degrees) of each image's outer ring (`ring` of the side), where the skin
    around a centred lesion is: ITA = atan((L* − 50) / b*)·180/π."""
    from skimage.color import rgb2lab

    x = np.asarray(images)
    if x.shape[1] == 3 and x.shape[-1] != 3:
        x = x.transpose(0, 2, 3, 1)
    side = x.shape[1]
    width = max(1, round(ring * side))
    keep = np.zeros((side, side), bool)
    keep[:width], keep[-width:], keep[:, :width], keep[:, -width:] = True, True, True, True
    out = []
    for image in x:
        lab = rgb2lab(image.astype(np.float64) / 255)[keep]
        out.append(float(np.median(ita_degrees(lab[:, 0], lab[:, 2], floor=1e-3))))
    return np.asarray(out)


def class_mix_weights(labels: np.ndarray, target_labels: np.ndarray) -> np.ndarray:
    """A weight for each image of `labels` such that every class carries the share it has
    in `target_labels` (classes absent there weigh 0), spread evenly over that class's
    images."""
    labels, target_labels = np.asarray(labels), np.asarray(target_labels)
    classes, counts = np.unique(target_labels, return_counts=True)
    weights = np.zeros(len(labels))
    for c, count in zip(classes, counts):
        members = labels == c
        if not members.any():
            raise ValueError(f"class {c} is in the generated set but not in the reference: "
                             "no reference images to match its share")
        weights[members] = count / len(target_labels) / members.sum()
    return weights


def mix_matched_fd(real_feats: np.ndarray, real_labels: np.ndarray, fake_feats: np.ndarray,
                   fake_labels: np.ndarray) -> float:
    """FD to the real images re-weighted to the generated set's class mix. A class-balanced
    draw against the test set's natural mix (two thirds naevi) is otherwise also charged for
    drawing its rare classes as those classes: the pooled FD then mixes realism with class
    fidelity, the two things a comparison of generators at the same budget keeps apart."""
    return frechet_distance(real_feats, fake_feats,
                            weights_a=class_mix_weights(real_labels, fake_labels))


def compare(real_feats: np.ndarray, fake_feats: np.ndarray, real_labels: np.ndarray,
            fake_labels: np.ndarray, k: int = 5) -> dict[str, float]:
    """FD, KID, precision/recall and the within-class diversity ratio of one set against
    a real reference (features already extracted)."""
    pr = precision_recall(real_feats, fake_feats, k)
    real_div = within_class_diversity(real_feats, real_labels)
    fake_div = within_class_diversity(fake_feats, fake_labels)
    # No reference image of a drawn class (a small --quick reference): no mix to match.
    covered = np.isin(fake_labels, real_labels).all()
    return {"fd": frechet_distance(real_feats, fake_feats),
            "fd_mix_matched": mix_matched_fd(real_feats, real_labels, fake_feats, fake_labels)
            if covered else float("nan"),
            "kid": kernel_distance(real_feats, fake_feats)["mean"],
            "precision": pr["precision"], "recall": pr["recall"],
            "diversity_ratio": fake_div / real_div if real_div else float("nan")}


def yardstick(features: ImageNetFeatures, fake: torch.Tensor, fake_labels: np.ndarray,
              test: torch.Tensor, test_labels: np.ndarray, train: torch.Tensor,
              train_labels: np.ndarray) -> dict[str, Any]:
    """Every generation figure, and the floor: a real train sample of the same count and
    label mix as `fake` against the same real test images, all at the generator's size."""
    size = fake.shape[-1]
    test, floor = downsample_uint8(test, size), downsample_uint8(train, size)
    test_feats, fake_feats, floor_feats = features(test), features(fake), features(floor)
    model = compare(test_feats, fake_feats, test_labels, fake_labels)
    real = compare(test_feats, floor_feats, test_labels, train_labels)
    model["blockiness"] = blockiness(fake)
    real["blockiness"] = blockiness(floor)
    return {"model": model, "real_floor": real, "count": int(len(fake)), "size": int(size)}
