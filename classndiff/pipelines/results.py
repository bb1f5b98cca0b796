"""What the pipeline returns (Diagnosis, Generation, Counterfactual) and how it reports a bad
argument. Torch-free, so that a process without the model (the app's, when the model runs in
a worker process) can receive them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from classndiff.explain.result import Saliency


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
    # malignant ≥ malignant_threshold (fitted by `classndiff calibrate` for a validation
    # sensitivity, see trust/threshold.py); None when abstained or no threshold is stored.
    malignant_call: bool | None = None
    malignant_threshold: float | None = None

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


@dataclass
class Counterfactual:
    """What the lesion would look like as `target`: images at the data's pixel size."""

    target: str
    image: Image.Image | None  # the counterfactual (SYNTHETIC), None when abstained
    original: Image.Image | None
    difference: Image.Image | None  # |counterfactual − original|, brighter = more changed
    probabilities_before: dict[str, float]
    probabilities_after: dict[str, float]
    settings: dict[str, Any]
    reason: str | None = None  # why the pipeline abstained (as `diagnose` says it)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: images left out."""
        return {"target": self.target, "reason": self.reason, "settings": self.settings,
                "probabilities_before": self.probabilities_before,
                "probabilities_after": self.probabilities_after,
                "prediction_before": _top(self.probabilities_before),
                "prediction_after": _top(self.probabilities_after)}


def _top(probabilities: dict[str, float]) -> str | None:
    return max(probabilities, key=probabilities.get) if probabilities else None
