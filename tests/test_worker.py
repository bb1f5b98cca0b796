"""The model worker process (demo/worker.py): the app's calls and answers cross the process
boundary unchanged, user errors arrive as themselves, Stop reaches the sampler, a diagnosis
does not wait behind a generation, and a worker that fails or dies gives a plain error."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classndiff.pipelines.inputs import ImageInputError
from classndiff.pipelines.results import ClassNDiffArgumentError, Diagnosis
from demo.worker import ModelWorker, WorkerError
from tests.app_server import python_lines


def lesion_bytes() -> bytes:
    import io

    from tests.conftest import make_lesion

    buffer = io.BytesIO()
    Image.fromarray(make_lesion(np.random.default_rng(3), 4, size=96)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def worker(tiny_weights: Path):
    worker = ModelWorker(str(tiny_weights))
    yield worker
    worker.close()


def test_diagnosis_through_the_worker_equals_the_pipelines(worker, tiny_pipe) -> None:  # noqa: ANN001
    remote = worker.pipeline(timeout=120)
    assert remote.device == str(tiny_pipe.device) and remote.config == tiny_pipe.config
    assert "abstain" in remote.diagnose_parameters
    image = lesion_bytes()
    here = tiny_pipe.diagnose(image, saliency=True, abstain=False)
    there = remote.diagnose(image, saliency=True, abstain=False)
    assert isinstance(there, Diagnosis)
    assert there.prediction == here.prediction
    for code, p in here.probabilities.items():
        assert there.probabilities[code] == pytest.approx(p, abs=1e-5)
    np.testing.assert_allclose(there.saliency.map, here.saliency.map, atol=1e-4)
    assert there.saliency.overlay.size == here.saliency.overlay.size


def test_user_errors_arrive_as_themselves(worker) -> None:  # noqa: ANN001
    remote = worker.pipeline(timeout=120)
    with pytest.raises(ImageInputError, match="not an image"):
        remote.diagnose(b"not an image")
    with pytest.raises(ClassNDiffArgumentError, match="unknown diagnosis"):
        remote.generate(dx="xx", num_images=1)


def test_a_raising_progress_callback_stops_the_sampler(worker) -> None:  # noqa: ANN001
    remote = worker.pipeline(timeout=120)
    seen: list[int] = []

    class Stop(Exception):
        pass

    def progress(step: int, total: int) -> None:
        seen.append(step)
        if step >= 2:
            raise Stop

    with pytest.raises(Stop):
        remote.generate(dx="mel", num_images=1, sampler="ddpm", steps=50, progress=progress)
    assert seen == [1, 2]  # the worker did not sample on after the callback raised
    # and the worker serves the next call
    out = remote.generate(dx="nv", num_images=1, steps=3, seed=1)
    assert len(out.images) == 1


def test_a_diagnosis_does_not_wait_behind_a_generation(worker) -> None:  # noqa: ANN001
    remote = worker.pipeline(timeout=120)
    release = threading.Event()
    started = threading.Event()

    def progress(step: int, total: int) -> None:  # holds the generation at its first step
        started.set()
        release.wait(30)

    generation = threading.Thread(target=lambda: remote.generate(
        dx="mel", num_images=1, steps=3, progress=progress))
    generation.start()
    try:
        assert started.wait(30)
        t0 = time.perf_counter()
        remote.diagnose(lesion_bytes(), saliency=False)
        assert time.perf_counter() - t0 < 10
        assert generation.is_alive()  # still held: the diagnosis did not queue behind it
    finally:
        release.set()
        generation.join(30)


def test_a_worker_that_cannot_load_says_why(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    worker = ModelWorker(str(tmp_path))
    try:
        with pytest.raises(WorkerError) as raised:
            worker.pipeline(timeout=120)
        assert "deserializing header" in str(raised.value), raised.value
    finally:
        worker.close()


def test_a_dead_worker_gives_a_plain_error(tiny_weights: Path) -> None:
    worker = ModelWorker(str(tiny_weights))
    remote = worker.pipeline(timeout=120)
    worker.process.kill()
    worker.process.wait(10)
    with pytest.raises(WorkerError, match="stopped|gone"):
        for _ in range(50):  # the reader notices the closed socket within moments
            remote.diagnose(lesion_bytes(), saliency=False)
            time.sleep(0.1)


def test_the_app_replaces_a_worker_that_stopped(tiny_weights: Path) -> None:
    """A worker killed after it had served (out of memory, say): the calls in flight get a
    plain error, the next request waits for a new worker and is answered."""
    from demo.runtime import ModelHolder

    holder = ModelHolder(str(tiny_weights), ModelWorker(str(tiny_weights)))
    first = holder.get(timeout=120)
    first.diagnose(lesion_bytes(), saliency=False)
    old = holder.worker
    old.process.kill()
    for _ in range(100):
        if old.stopped:
            break
        time.sleep(0.05)
    assert old.stopped
    with pytest.raises(WorkerError):
        first.diagnose(lesion_bytes(), saliency=False)
    second = holder.get(timeout=120)
    assert holder.worker is not old and second is not first
    assert second.diagnose(lesion_bytes(), saliency=False).probabilities
    holder.worker.close()


def test_the_apps_process_never_imports_torch(tiny_weights: Path) -> None:
    code = ("import sys; from demo.worker import ModelWorker; "
            f"p = ModelWorker({str(tiny_weights)!r}).pipeline(timeout=120); "
            "from PIL import Image; d = p.diagnose(Image.new('RGB', (64, 64), (190, 120, 100)),"
            " saliency=True, abstain=False); "
            "print(d.prediction is not None, 'torch' in sys.modules, 'timm' in sys.modules)")
    assert python_lines(code, timeout=180)[-1] == "True False False"
