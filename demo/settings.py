"""The app's settings and fixed texts: where weights and examples come from, what the
hardware allows, the labels, the disclaimer, the page's CSS."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Privacy: no usage analytics, no telemetry — set before gradio / huggingface_hub import
# (app.py imports this module first).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

try:  # ZeroGPU on Spaces: `spaces` must be imported before torch.
    import spaces  # type: ignore[import-not-found]

    gpu = spaces.GPU
except ImportError:  # anywhere else a no-op decorator

    def gpu(fn: Callable | None = None, **_: Any) -> Any:
        return fn if fn is not None else (lambda f: f)

# On a ZeroGPU Space the main process has no real GPU: the model is loaded (and moved to
# "cuda") before launch so that `spaces` can pack it, there is no warm-up pass, and the
# decorated functions run in a worker process (so they get no closures for progress).
ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")

from classndiff.labels import DX_NAMES  # noqa: E402 - cheap: no torch

logger = logging.getLogger("classndiff.app")

ROOT = Path(__file__).resolve().parent.parent  # the repository (or the Space)
EXAMPLES_DIR = Path(os.environ.get("CLASSNDIFF_EXAMPLES", ROOT / "examples"))
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SAMPLERS = ("dpm++", "ddim", "ddpm")
# Mirrors of classndiff.explain.saliency.CAM_METHODS / models.diffusion.SAMPLERS (those
# import torch; a test keeps them equal).
# HiResCAM is left out: for a pooled linear head (this classifier's) it equals Grad-CAM.
CAM_METHODS = ("gradcam", "gradcam++", "eigencam", "scorecam")
CAM_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM",
              "eigencam": "EigenCAM", "scorecam": "Score-CAM (slow)"}
PREDICTED = "predicted"
MALIGNANT = "malignant"
ANY = "any"
AUTO = "auto"
# The card's row labels stay on one line; long commands in its tables wrap anywhere, so
# they do not squeeze the other columns to a letter per line.
CSS = ("#model-card td:first-child, #model-card th { white-space: nowrap; } "
       "#model-card td code { word-break: break-all; } "
       # WCAG AA contrast (≥ 4.5:1): help text, the upload box's "or", the primary button.
       ".info-text, .or, [data-testid='block-info'] + span { color: #374151 !important; } "
       "button.primary, button.lg.primary { background: #b4410f !important; "
       "border-color: #b4410f !important; color: #ffffff !important; } "
       "button.stop { background: #b91c1c !important; border-color: #b91c1c !important; "
       "color: #ffffff !important; } "
       ".show-api, footer a, [data-testid='max-value'], [data-testid='min-value'] "
       "{ color: #374151 !important; } "
       # A phone: a smaller title, so the answer starts within the first screen.
       "@media (max-width: 640px) { h1 { font-size: 1.45rem !important; "
       "line-height: 1.2 !important; } }")
# Gradio's empty placeholders carry aria-label on plain <div>s, which ARIA prohibits
# (axe: aria-prohibited-attr): give them role="img" so the label is allowed and read out.
HEAD = """<script>
(() => {
  const fix = () => document.querySelectorAll('div[aria-label]:not([role]),' +
      'span[aria-label]:not([role])').forEach(el => el.setAttribute('role', 'img'));
  new MutationObserver(fix).observe(document.documentElement,
                                    {childList: true, subtree: true});
  document.addEventListener('DOMContentLoaded', fix);
})();
</script>"""
EMPTY_SUMMARY = "Upload an image to see the model's assessment."
WITHHELD_WHEN_ABSTAINING = ("probabilities", "malignant", "confidence", "saliency",
                            "malignant_call", "malignant_threshold")
# What the CPU serves in reasonable time: steps × images per request (a GPU gets 8×).
CPU_STEP_BUDGET = 1000
DISPLAY_SIZE = 256  # generated images are 64 px: upscaled for the gallery
DISCLAIMER = (
    "**Research demo — not a medical device.** Not for diagnosis, screening or treatment "
    "decisions. Results can be wrong, most of all for darker skin, which is rare in the "
    "training data."
)
NO_WEIGHTS_HELP = (
    "Set CLASSNDIFF_WEIGHTS to a folder holding config.json + model.safetensors, a Hugging "
    "Face Hub id, or id@revision; or put the shipped weights in weights/embedded/."
)


def dx_label(code: str) -> str:
    return f"{DX_NAMES[code]} ({code})"
