"""Imported for its effect, before gradio: the model's code (torch, timm, torchvision: about
half of the time to the first diagnosis) starts importing in a background thread. Imports hold
the GIL, so the two do not run side by side; but the model's import no longer waits until
gradio's is done, and the work that releases the GIL (reading shared libraries and weights,
the warm-up pass) overlaps the UI being built and served."""

from __future__ import annotations

import importlib
import logging
import threading

logger = logging.getLogger(__name__)
MODEL_CODE = "classndiff.pipelines.pipeline"


def _import_model_code() -> None:
    try:
        importlib.import_module(MODEL_CODE)
    except Exception:  # noqa: BLE001 - the loader imports again and reports it in the UI
        logger.exception("could not import the model's code")


def preload_model_code() -> threading.Thread:
    """Start importing the model's code; `ModelHolder` imports it again (at once if done)."""
    thread = threading.Thread(target=_import_model_code, name="model-import", daemon=True)
    thread.start()
    return thread


MODEL_IMPORT = preload_model_code()
