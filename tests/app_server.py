"""Run app.py as a real server process on a free loopback port, for the app tests; and a
snippet of the app's code in a fresh interpreter (`python_lines`), for what it imports.

Used by the `app_server` fixture in conftest.py and by benchmarks/app_startup.py."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def python_lines(code: str, timeout: float = 120, env: dict[str, str] | None = None) -> list[str]:
    """`python -c code` run in the repository: it must succeed; its standard output's lines."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, urllib.error.URLError):
        return None


@dataclass
class AppServer:
    url: str
    process: subprocess.Popen
    log: Path
    temp_parent: Path  # GRADIO_TEMP_DIR given to the app; it makes its private folder inside
    cold_start_s: float  # process start → first HTTP 200

    def temp_dirs(self) -> list[Path]:
        return sorted(self.temp_parent.glob("classndiff-app-*"))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_app(weights: str | Path, workdir: Path, timeout: float = 90,
              extra_env: dict[str, str] | None = None) -> AppServer:
    """Start `python app.py` and wait for its first HTTP 200 (the model loads afterwards)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    temp_parent = workdir / "gradio_tmp"
    temp_parent.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "CLASSNDIFF_WEIGHTS": str(weights),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_TEMP_DIR": str(temp_parent),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    log = workdir / "app.log"
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    while http_status(url) != 200:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{log.read_text()}")
        if time.perf_counter() - started > timeout:
            stop_app(process)
            raise TimeoutError(f"app.py not serving after {timeout} s:\n{log.read_text()}")
        time.sleep(0.05)
    return AppServer(url, process, log, temp_parent, time.perf_counter() - started)


def stop_app(process: subprocess.Popen, timeout: float = 15) -> int:
    """SIGTERM (as docker stop does), then SIGKILL if it hangs; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return process.returncode


@contextlib.contextmanager
def running_app(weights: str | Path, workdir: Path, **kwargs) -> Iterator[AppServer]:  # noqa: ANN003
    server = start_app(weights, workdir, **kwargs)
    try:
        yield server
    finally:
        stop_app(server.process)
