"""What a saliency method returns. Torch-free, so that a process without the model (the
app's, when the model runs in a worker process) can receive it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image


@dataclass
class Saliency:
    map: np.ndarray  # (H, W) float32 in [0, 1], at the model input's resolution
    overlay: Image.Image | None  # the map blended over the image
    method: str  # a key of CAM_METHODS
    target: str  # a dx code, or "malignant"
    layer: str  # the backbone layer the CAM was taken at

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "target": self.target, "layer": self.layer}
