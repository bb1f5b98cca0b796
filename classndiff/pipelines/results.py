"""What the pipeline returns (Diagnosis, Generation; Counterfactual is in counterfactual.py)
and how it reports a bad argument."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from classndiff.explain.saliency import Saliency


class ClassNDiffArgumentError(ValueError):
    """A bad argument to the pipeline (unknown label, steps or count out of range...)."""


@dataclass
class Diagnosis:
    probabilities: dict[str, float]  # the 7 classes, summing to 1
    malignant: float  # P(mel or bcc or akiec)
    prediction: str | None  # a dx code, or None when the pipeline abstains
    confidence: float  # probability of the top class
    reason: str | None = None  # why it abstained, in words
    calibrated: bool = False  # whether probabilities are temperature-scaled
    saliency: Saliency | None = None  # map + overlay, method, target (when asked for)
    skin_tone: dict[str, Any] | None = None  # ita, bin, group, reliable (see skintone.py)
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the saliency map and overlay are left out, their settings kept."""
        saliency = self.saliency
        self.saliency = None
        try:
            out = asdict(self)
        finally:
            self.saliency = saliency
        out["saliency"] = saliency.to_dict() if saliency is not None else None
        return out


@dataclass
class Generation:
    images: list[Image.Image]
    confidences: list[float]  # the model's own P(requested dx) per image (None for "any")
    predicted: list[str]  # the classifier's top class per image
    seeds: list[int]
    settings: dict[str, Any]  # everything needed to reproduce the batch, JSON-ready


def check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ClassNDiffArgumentError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise ClassNDiffArgumentError(f"{name} must be between {low} and {high}, got {value}")
    return value
