"""What the app runs: the model, loaded once in the background (ModelHolder), the choice of
weights, temporary files and uploads that are never kept, and the pipeline calls (GPU-decorated
on ZeroGPU Spaces)."""

from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from classndiff.pipelines.inputs import ImageInputError
from classndiff.pipelines.results import ClassNDiffArgumentError
from demo.settings import (
    EXAMPLE_SUFFIXES,
    EXAMPLES_DIR,
    NO_WEIGHTS_HELP,
    PREDICTED,
    ZERO_GPU,
    gpu,
    logger,
)
from demo.worker import ModelWorker, load_pipeline


# --------------------------------------------------------------------------- model holder
class ModelHolder:
    """The pipeline, loaded once in the background so the page is served at once: by a
    `ModelWorker` process when one is given (app.py starts it before gradio is imported),
    else in a thread of this process (tests; ZeroGPU Spaces, whose `spaces` needs it here)."""

    def __init__(self, source: str | None, worker: ModelWorker | None = None) -> None:
        self.source = source or None
        self.worker = worker
        self.pipe: Any = None
        self.error: str | None = None
        self.seconds: float | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load, name="model-loader",
                                                daemon=True)
                self._thread.start()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            if self.worker is not None:
                pipe = self.worker.pipeline()
            else:
                # ZeroGPU: no warm-up (the main process has no GPU; `spaces` moves the model).
                pipe = load_pipeline(self.source, warm_up=not ZERO_GPU)
            self.pipe = pipe
            logger.info("model ready from %s on %s", pipe.source, pipe.device)
        except Exception as error:  # noqa: BLE001 - shown to the user, not a crash
            logger.exception("could not load the model")
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.seconds = getattr(self.pipe, "load_seconds", None) or \
                round(time.perf_counter() - started, 1)
            self._ready.set()

    def get(self, progress: Any = None, timeout: float = 600) -> Any:
        """The pipeline; the first callers wait for the loader (with a progress note). A
        worker that stopped after it had served (killed for memory, say) is replaced."""
        self._replace_stopped_worker()
        self.start()
        if not self._ready.is_set() and progress is not None:
            progress(None, desc="Loading the model (first request after start-up)…")
        if not self._ready.wait(timeout):
            raise gr.Error("The model is still loading; try again in a minute.")
        if self.pipe is None:
            raise gr.Error(f"The model could not be loaded: {self.error}. {NO_WEIGHTS_HELP}")
        return self.pipe

    def _replace_stopped_worker(self) -> None:
        with self._lock:
            if self.worker is None or not self.worker.stopped or self.pipe is None:
                return  # no worker, a working one, or one that never loaded (its error stays)
            logger.warning("the model worker stopped; starting a new one")
            self.worker = ModelWorker(self.source)
            self.pipe, self.error, self._thread = None, None, None
            self._ready.clear()


# --------------------------------------------------------------------------- temp files
class TempFiles:
    """Gradio's upload/output cache in a private folder: uploads are deleted as soon as they
    are read, everything else after `ttl` seconds, the whole folder at exit."""

    def __init__(self, ttl: float = 300, interval: float = 30) -> None:
        parent = os.environ.get("GRADIO_TEMP_DIR") or None
        self.root = Path(tempfile.mkdtemp(prefix="classndiff-app-", dir=parent))
        os.environ["GRADIO_TEMP_DIR"] = str(self.root)  # gradio reads it when it saves files
        self.ttl = ttl
        self.interval = interval
        # Files cached before the app serves (example thumbnails) are kept; nothing is
        # deleted until start().
        self.keep_before = math.inf
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)

    def start(self) -> None:
        self.keep_before = time.time()
        threading.Thread(target=self._sweep_forever, name="temp-sweeper", daemon=True).start()

    def _sweep_forever(self) -> None:
        while True:
            time.sleep(self.interval)
            self.sweep()

    def sweep(self) -> int:
        now, removed = time.time(), 0
        for path in self.root.rglob("*"):
            try:
                stat = path.stat()
                if path.is_file() and self.keep_before < stat.st_mtime < now - self.ttl:
                    path.unlink()
                    removed += 1
            except OSError:
                pass
        return removed

    def discard_upload(self, path: str | Path) -> None:
        """Delete an uploaded file (and its per-upload folder) right after it was read."""
        path = Path(path)
        try:
            if self.root in path.resolve().parents and path.stat().st_mtime > self.keep_before:
                path.unlink()
                if not any(path.parent.iterdir()):
                    path.parent.rmdir()
        except OSError:
            pass

    def new_file(self, name: str) -> Path:
        folder = self.root / "outputs" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder / name

    def save_png(self, image: Image.Image, pnginfo: Any = None) -> str:
        """An output image at a path of its own. (Gradio would store it by content hash and
        rewrite that file in place when another request makes the same image — a download
        of it in progress then breaks.)"""
        path = self.new_file("image.png")
        image.save(path, format="PNG", pnginfo=pnginfo)
        return str(path)


class UploadMemory:
    """Uploads kept in memory (never on disk) for `ttl` seconds, at most `max_bytes` in all:
    for re-running saliency with new settings, and because gradio stores uploads by content
    hash, so users who upload the same file share one path, which the first request deletes."""

    def __init__(self, ttl: float = 300, max_bytes: int = 256 * 2**20) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._items: dict[str, tuple[float, bytes]] = {}  # insertion order = age
        self._lock = threading.Lock()

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (t, _) in self._items.items() if t < now - self.ttl]:
            del self._items[key]
        while sum(len(d) for _, d in self._items.values()) > self.max_bytes and self._items:
            del self._items[next(iter(self._items))]

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (time.monotonic(), data)
            self._expire()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            self._expire()
            item = self._items.get(key)
            return item[1] if item else None

    def discard(self, key: str | None) -> None:
        with self._lock:
            self._items.pop(key or "", None)


# --------------------------------------------------------------------------- view helpers
def example_files() -> list[Path]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)


class GenerationCancelled(Exception):
    """Raised in the sampler's progress callback when the request was stopped."""


def on_gpu(pipe: Any) -> bool:
    return str(pipe.device).startswith("cuda")


# --------------------------------------------------------------------------- model calls
HOLDER: ModelHolder | None = None  # set by build_demo; module-level so spaces.GPU can reach it


def _diagnose_kwargs(pipe: Any, method: str, target: str, opacity: float,
                     predict_anyway: bool = False) -> dict[str, Any]:
    """The keyword arguments this pipeline's diagnose() accepts (older ones: fewer)."""
    import inspect

    params = getattr(pipe, "diagnose_parameters", None) or \
        inspect.signature(pipe.diagnose).parameters
    wanted = {
        "saliency": True,
        "cam_method": method,
        "cam_target": None if target in (None, "", PREDICTED) else target,
        "opacity": float(opacity),
        "abstain": not predict_anyway,
    }
    return {k: v for k, v in wanted.items() if k in params}


@gpu(duration=30)
def run_diagnose(image: bytes | Image.Image, method: str, target: str, opacity: float,
                 predict_anyway: bool = False) -> Any:
    pipe = HOLDER.get()  # type: ignore[union-attr]
    return pipe.diagnose(image, **_diagnose_kwargs(pipe, method, target, opacity,
                                                   predict_anyway))


@gpu(duration=120)
def run_generate(kwargs: dict[str, Any], progress: Callable[[int, int], None] | None) -> Any:
    return HOLDER.get().generate(progress=progress, **kwargs)  # type: ignore[union-attr]


@gpu(duration=30)
def run_counterfactual(image: bytes, target: str | None, strength: float | None) -> Any:
    return HOLDER.get().counterfactual(  # type: ignore[union-attr]
        image, target_dx=target, strength=None if strength is None else float(strength))


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is meant for the user (bad upload, bad argument)."""
    return (ImageInputError, ClassNDiffArgumentError)
