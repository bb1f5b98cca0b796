"""The model in a process of its own, started before the app imports gradio.

On a 2-core machine the app's two slow starts, gradio (~2 s) and torch + timm + the weights
(~3 s), then run side by side instead of one after the other, and the first diagnosis comes
that much sooner (`benchmarks/app_startup.py`). The app holds a `WorkerPipeline`: the calls
it makes of `ClassNDiffPipeline` (diagnose; generate, with its per-step progress callback,
which may stop the sampler; counterfactual) and the attributes the Model tab reads.

Each call runs in a thread of its own in the worker, so a diagnosis never waits behind a
generation (the app's queues bound how many of each run). Messages are pickled over a
private socket pair between the two processes, which nothing else can reach. Results are
the pipeline's own torch-free dataclasses; errors meant for the user (a bad upload, a bad
argument) arrive as themselves, anything else as `WorkerError` with the worker's log holding
the traceback. The worker exits when the app's end of the socket closes.

This module imports only the standard library at the top, so the app's process never imports
torch. ZeroGPU Spaces keep the model in the app's process (`spaces` packs it there).

    python -m demo.worker FD [SOURCE]     # what ModelWorker runs; not for people
"""

from __future__ import annotations

import atexit
import inspect
import itertools
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

logger = logging.getLogger("classndiff.app.worker")

ROOT = Path(__file__).resolve().parent.parent
CALLS = ("diagnose", "generate", "counterfactual")
# Errors that reach the app as themselves: their modules import no torch.
PORTABLE_ERROR_MODULES = ("builtins", "classndiff.pipelines.inputs", "classndiff.pipelines.results")


class WorkerError(RuntimeError):
    """The worker could not load the model, stopped, or failed in a way not meant for users."""


class WorkerCancelled(Exception):
    """Raised in the worker's progress callback when the app stopped the call."""


def load_pipeline(source: str | None, warm_up: bool = True) -> Any:
    """The pipeline, after one pass through everything a diagnosis uses (saliency too: its
    first use imports pytorch-grad-cam, OpenCV and matplotlib), so the first real request
    does not pay for lazy set-up."""
    from PIL import Image

    from classndiff.pipelines.pipeline import ClassNDiffPipeline

    pipe = ClassNDiffPipeline.from_pretrained(source)
    if warm_up:
        warm = Image.new("RGB", (pipe.config.model.pixel_size,) * 2, (200, 150, 130))
        pipe.diagnose(warm, saliency=True, abstain=False)
    return pipe


# --------------------------------------------------------------------------- the app's side
class ModelWorker:
    """Starts the worker process at once; `pipeline()` waits until its model is ready."""

    def __init__(self, source: str | None) -> None:
        self.source = source or None
        self.started = time.perf_counter()
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "demo.worker", str(theirs.fileno()), self.source or ""],
            cwd=ROOT, pass_fds=(theirs.fileno(),))
        theirs.close()
        self._conn = Connection(ours.detach())
        self._send_lock = threading.Lock()
        self._replies: dict[int, queue.Queue] = {}
        self._ids = itertools.count()
        self._ready = threading.Event()
        self._info: dict[str, Any] = {}
        self._error: str | None = None
        self.stopped = False  # its socket closed: it exited or was killed
        threading.Thread(target=self._read, name="model-worker-reader", daemon=True).start()
        atexit.register(self.close)

    def pipeline(self, timeout: float | None = None) -> WorkerPipeline:
        if not self._ready.wait(timeout):
            raise WorkerError("the model worker is still loading")
        if self._error:
            raise WorkerError(self._error)
        return WorkerPipeline(self, self._info)

    def call(self, method: str, args: tuple, kwargs: dict[str, Any],
             progress: Callable[[int, int], None] | None = None) -> Any:
        """One pipeline call in the worker. `progress(step, total)` runs here for each
        sampling step; if it raises, the worker stops the call and that error is raised."""
        call_id = next(self._ids)
        replies: queue.Queue = queue.Queue()
        self._replies[call_id] = replies  # before the check: the reader fails it if it dies
        try:
            if self._error:
                raise WorkerError(self._error)
            self._send(("call", call_id, method, args, kwargs, progress is not None))
            stopped_by: BaseException | None = None
            while True:
                kind, _, *payload = replies.get()
                if kind == "progress":
                    if stopped_by is None and progress is not None:
                        try:
                            progress(*payload)
                        except BaseException as error:  # noqa: BLE001 - re-raised below
                            stopped_by = error
                    self._send(("continue" if stopped_by is None else "cancel", call_id))
                elif kind == "result":
                    return payload[0]
                else:
                    raise stopped_by or payload[0]
        finally:
            self._replies.pop(call_id, None)

    def close(self) -> None:
        try:
            self._send(("close",))
            self.process.wait(timeout=5)
        except (WorkerError, subprocess.TimeoutExpired):
            self.process.kill()

    def _send(self, message: tuple) -> None:
        try:
            with self._send_lock:
                self._conn.send(message)
        except (OSError, ValueError) as error:  # closed socket
            raise WorkerError(self._error or f"the model worker is gone ({error})") from None

    def _read(self) -> None:
        try:
            while True:
                message = self._conn.recv()
                if message[0] == "ready":
                    self._info = message[1]
                    self._ready.set()
                elif message[0] == "failed":
                    self._error = message[1]
                    self._ready.set()
                elif (replies := self._replies.get(message[1])) is not None:
                    replies.put(message)
        except (EOFError, OSError):
            pass
        except Exception:  # noqa: BLE001 - a message that cannot be read: fail every call
            logger.exception("unreadable message from the model worker")
            self.process.kill()
        gone = f"the model worker stopped (exit code {self.process.wait()})"
        self._error = self._error or gone
        self.stopped = True
        self._ready.set()
        for replies in list(self._replies.values()):
            replies.put(("error", None, WorkerError(gone)))


class WorkerPipeline:
    """`ClassNDiffPipeline` as the app uses it, running in the worker process."""

    def __init__(self, worker: ModelWorker, info: dict[str, Any]) -> None:
        self._worker = worker
        self.source: str = info["source"]
        self.device: str = info["device"]
        self.config = info["config"]
        self.temperature: float = info["temperature"]
        self.calibrated: bool = info["calibrated"]
        self.weights_path: str | None = info["weights_path"]
        self.diagnose_parameters: tuple[str, ...] = info["diagnose_parameters"]
        self.load_seconds: float = round(time.perf_counter() - worker.started, 1)

    def diagnose(self, image: Any, **kwargs: Any) -> Any:
        return self._worker.call("diagnose", (image,), kwargs)

    def generate(self, progress: Callable[[int, int], None] | None = None, **kwargs: Any) -> Any:
        return self._worker.call("generate", (), kwargs, progress)

    def counterfactual(self, image: Any, **kwargs: Any) -> Any:
        return self._worker.call("counterfactual", (image,), kwargs)


# --------------------------------------------------------------------------- the worker's side
def describe(pipe: Any) -> dict[str, Any]:
    return {"source": str(pipe.source), "device": str(pipe.device), "config": pipe.config,
            "temperature": pipe.temperature, "calibrated": pipe.calibrated,
            "weights_path": str(getattr(pipe, "weights_path", "") or "") or None,
            "diagnose_parameters": tuple(inspect.signature(pipe.diagnose).parameters)}


def portable(error: BaseException) -> BaseException:
    if type(error).__module__ in PORTABLE_ERROR_MODULES:
        return error
    if not isinstance(error, WorkerCancelled):
        logger.error("model call failed", exc_info=error)
    return WorkerError(f"{type(error).__name__}: {error}")


def serve(fd: int, source: str | None) -> None:
    """Load the model, say so, then run each call in a thread until the app goes away."""
    conn = Connection(fd)
    send_lock = threading.Lock()
    replies: dict[int, queue.Queue] = {}

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    try:
        pipe = load_pipeline(source)
    except Exception as error:  # noqa: BLE001 - reported to the app, which shows it
        logger.exception("could not load the model")
        send(("failed", f"{type(error).__name__}: {error}"))
        return
    # The app logs "model ready" when it hears this; the worker's own line says which process.
    logger.info("worker process %d loaded the model", os.getpid())
    send(("ready", describe(pipe)))

    def run(call_id: int, method: str, args: tuple, kwargs: dict[str, Any],
            wants_progress: bool) -> None:
        def progress(step: int, total: int) -> None:
            send(("progress", call_id, step, total))
            if replies[call_id].get() == "cancel":
                raise WorkerCancelled

        try:
            if method not in CALLS:
                raise WorkerError(f"no such call: {method}")
            if wants_progress:
                kwargs = {**kwargs, "progress": progress}
            value = getattr(pipe, method)(*args, **kwargs)
            send(("result", call_id, value))
        except BaseException as error:  # noqa: BLE001 - sent to the app
            send(("error", call_id, portable(error)))
        finally:
            replies.pop(call_id, None)

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the app has gone
        if message[0] == "call":
            replies[message[1]] = queue.Queue()
            threading.Thread(target=run, args=message[1:], daemon=True,
                             name=f"model-call-{message[1]}").start()
        elif message[0] in ("continue", "cancel") and message[1] in replies:
            replies[message[1]].put(message[0])
        elif message[0] == "close":
            return


if __name__ == "__main__":
    # Through the module's own name, so that the errors it sends unpickle as
    # demo.worker.WorkerError in the app, not as this script's __main__.WorkerError.
    from demo.worker import serve as serve_as_module

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    serve_as_module(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None)
