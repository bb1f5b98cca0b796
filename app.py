"""Class-N-Diff — the clinician-facing Gradio demo (research demo, not a medical device).

A thin view over `classndiff.pipelines.pipeline`: every number and image shown here comes
from `ClassNDiffPipeline.diagnose` / `.generate` / `.counterfactual`; the `demo/` package
lays them out: the page in ui.py, one module per tab (diagnose_tab.py, generate_tab.py; the
Model tab is the card in model_card.py), over runtime.py (model holder, temporary files),
worker.py (the model's process) and render.py.

    python app.py                                   # embedded weights, http://127.0.0.1:7860
    CLASSNDIFF_WEIGHTS=org/repo@rev python app.py   # a Hub repo (or a local folder)

Weights: CLASSNDIFF_WEIGHTS, else the Hub default named in the config (`extra.hub_default`)
when reachable, else weights/embedded/; the source in use is shown in the Model tab.

Start-up is fast because the model loads in a worker process started first, while this
process imports gradio and builds and serves the page; it never imports torch. The first
request waits for the model. Environment: CLASSNDIFF_WEIGHTS, GRADIO_SERVER_NAME (default
127.0.0.1; 0.0.0.0 on Spaces), GRADIO_SERVER_PORT (7860), CLASSNDIFF_MAX_UPLOAD (20mb),
CLASSNDIFF_FILE_TTL (seconds temporary outputs live, 300), CLASSNDIFF_MODEL_WORKER (0: load
the model in this process instead), HF_HUB_OFFLINE."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

# isort: off
import demo.settings  # noqa: F401 - first: privacy settings and `spaces` before gradio/torch
# isort: on
from demo.settings import ZERO_GPU
from demo.weights import check_weights_source, weights_source
from demo.worker import ModelWorker

# What tests and tools read from `app`, imported when first read: importing app.py imports
# neither gradio nor torch, so `main` can start the model worker before either.
EXPORTS = {
    "build_demo": "demo.ui", "serve": "demo.ui", "ModelHolder": "demo.runtime",
    "TempFiles": "demo.runtime", "model_card": "demo.model_card",
    "describe_skin_tone": "demo.render", "stamp_synthetic": "demo.render",
    "CAM_LABELS": "demo.settings", "CAM_METHODS": "demo.settings", "SAMPLERS": "demo.settings",
    "check_weights_source": "demo.weights", "weights_source": "demo.weights",
}
__all__ = [*EXPORTS, "main"]


def __getattr__(name: str) -> Any:
    if name in EXPORTS:
        return getattr(importlib.import_module(EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    source = weights_source()
    problem = check_weights_source(source)
    if problem:
        sys.exit(f"classndiff app: {problem}")
    # Diagnosis is what a first visitor does: the model loads in its own process from now
    # on, while gradio is imported and the page built and served (on 2 cores the two run
    # side by side: benchmarks/app_startup.py). ZeroGPU's `spaces` needs the model here.
    in_process = ZERO_GPU or os.environ.get("CLASSNDIFF_MODEL_WORKER", "1") == "0"
    worker = None if in_process else ModelWorker(source)
    from demo.ui import serve

    serve(source, worker)


if __name__ == "__main__":
    main()
