"""The Dockerfile, checked statically (no Docker engine here): what it copies exists and is not
ignored, it runs as uid 1000 on port 7860, CPU torch by default, app.py as the entry point."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def ignore_patterns() -> list[tuple[bool, str]]:
    """(is_exception, pattern) from .dockerignore, in order."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            patterns.append((negate, line.lstrip("!").strip("/")))
    return patterns


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match, plus `**` for any folders)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders
    decides (a "!" pattern puts it back)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for negate, pattern in ignore_patterns():
        if any(pattern_regex(pattern).fullmatch(p) for p in prefixes):
            result = not negate
    return result


def test_every_copy_source_exists_and_is_sent_to_the_build() -> None:
    copies = [args for keyword, args in instructions() if keyword in ("COPY", "ADD")]
    assert copies, "the Dockerfile copies nothing"
    for args in copies:
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        assert not any(w.startswith("--from") for w in shlex.split(args))
        *sources, destination = words
        assert sources and destination
        for source in sources:
            matches = list(ROOT.glob(source)) if source != "." else [ROOT]
            assert matches, f"COPY {source}: no such path in the repository"
            if source != ".":
                assert not ignored(source), f"COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize("path", ["app.py", "demo/diagnose_tab.py", "requirements.txt",
                                  "classndiff/__init__.py",
                                  "classndiff/pipelines/pipeline.py", "configs/embedded.json"])
def test_what_the_app_needs_exists_and_goes_into_the_image(path: str) -> None:
    assert (ROOT / path).is_file(), path
    assert not ignored(path), f"{path} is excluded by .dockerignore"


@pytest.mark.parametrize("path", [".venv/bin/python", "tests/test_app.py", "runs/x/model.pt",
                                  "screenshots/diagnose.png", ".git/HEAD",
                                  "classndiff/__pycache__/x.pyc"])
def test_the_build_context_leaves_out_the_rest(path: str) -> None:
    assert ignored(path), f"{path} would be sent into the image"


def test_embedded_weights_go_in_when_present() -> None:
    assert not ignored("weights/embedded/model.safetensors")
    assert not ignored("weights/embedded/config.json")
    assert not ignored("examples/nv_0.png")


def test_slim_base_non_root_uid_1000_port_7860() -> None:
    steps = instructions()
    base = [args for keyword, args in steps if keyword == "FROM"]
    assert len(base) == 1 and re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base[0]), base
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users, "no USER: it would run as root"
    uid = users[-1]
    if not uid.isdigit():  # a name: find the uid it was created with
        created = [args for keyword, args in steps if keyword == "RUN" and "useradd" in args
                   and re.search(rf"\b{re.escape(uid)}\s*($|&&)", args)]
        assert created, f"USER {uid} is not created in the Dockerfile"
        uid = re.search(r"--uid[= ](\d+)|-u (\d+)", created[0]).group(1)
    assert uid == "1000"
    last_user = max(i for i, (k, _) in enumerate(steps) if k == "USER")
    first_copy = min(i for i, (k, _) in enumerate(steps) if k == "COPY")
    assert last_user < first_copy, "switch user before copying the app in"
    exposed = " ".join(args for keyword, args in steps if keyword == "EXPOSE").split()
    assert "7860" in exposed


def test_environment_entry_point_and_cpu_torch() -> None:
    steps = instructions()
    env = " ".join(args for keyword, args in steps if keyword == "ENV")
    assert re.search(r"GRADIO_SERVER_NAME=0\.0\.0\.0\b", env)
    assert re.search(r"GRADIO_SERVER_PORT=7860\b", env)
    assert "HF_HUB_OFFLINE=" in env
    assert "GRADIO_ANALYTICS_ENABLED=False" in env
    args = {a.split("=")[0]: a.partition("=")[2] for keyword, a in steps if keyword == "ARG"}
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")  # CPU by default, a build arg for CUDA
    runs = " ".join(a for keyword, a in steps if keyword == "RUN")
    assert "${TORCH_INDEX_URL}" in runs and "requirements.txt" in runs
    requirements = (ROOT / "requirements.txt").read_text()
    for package in ("torch", "torchvision", "gradio"):  # what the RUN line greps for
        assert re.search(rf"^{package}==", requirements, re.M), package
    cmd = [args for keyword, args in steps if keyword in ("CMD", "ENTRYPOINT")]
    assert cmd and "app.py" in cmd[-1]
