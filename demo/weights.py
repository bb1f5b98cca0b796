"""Which weights the app serves (CLASSNDIFF_WEIGHTS, the Hub default named in the config, or
weights/embedded/) and a plain message when there are none. Standard library and the
torch-free config only: app.py reads this before anything heavy is imported."""

from __future__ import annotations

import json
import os
from pathlib import Path

from classndiff.config import ClassNDiffConfig
from demo.settings import NO_WEIGHTS_HELP, ROOT


def embedded_folder() -> Path:
    """Same default as classndiff.hub.embedded_dir (that module imports torch)."""
    return Path(os.environ.get("CLASSNDIFF_EMBEDDED", ROOT / "weights" / "embedded"))


def hub_default() -> str | None:
    """The Hub repo (`id` or `id@revision`) the config names as the default weights:
    `extra.hub_default` in the embedded weights' config.json (newer weights published there
    replace the shipped ones when the Hub is reachable)."""
    try:
        config = json.loads((embedded_folder() / "config.json").read_text())
        value = config.get("extra", {}).get("hub_default")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def weights_source() -> str | None:
    """Where the weights come from: CLASSNDIFF_WEIGHTS (a folder, a Hub id or id@revision);
    else the Hub default named in the config; else None, the embedded weights. A Hub source
    that cannot be reached (no network, or HF_HUB_OFFLINE=1 with nothing cached) makes the
    loader fall back to the embedded weights, and the Model tab says so."""
    return os.environ.get("CLASSNDIFF_WEIGHTS") or hub_default() or None


def check_weights_source(source: str | None) -> str | None:
    """A plain message when there are obviously no weights (no torch needed to tell), else
    None. Hub ids are checked by the loader (it may fall back to the embedded weights)."""
    from_env = "CLASSNDIFF_WEIGHTS=" + str(source)
    if source:
        path = Path(source).expanduser()
        if path.exists():
            if not ((path / "config.json").is_file() and (path / "model.safetensors").is_file()):
                return f"{from_env}: {path} has no config.json + model.safetensors. " \
                    + NO_WEIGHTS_HELP
            return None
        if source.startswith(("/", ".", "~")) or source.split("@")[0].count("/") != 1:
            return f"{from_env}: no such folder, and not a Hub id. " + NO_WEIGHTS_HELP
        return None
    embedded = embedded_folder()
    if not (embedded / "model.safetensors").is_file():
        return f"No model weights found: {embedded} is empty. " + NO_WEIGHTS_HELP
    return None


def local_config(source: str | None) -> ClassNDiffConfig:
    """The config of a local weights folder (for the UI's limits) — read as JSON, no torch.
    Hub sources get the defaults; the pipeline enforces the real limits anyway."""
    candidates = [Path(source).expanduser()] if source else [embedded_folder()]
    for folder in candidates:
        try:
            return ClassNDiffConfig.from_json(folder / "config.json")
        except (OSError, ValueError):
            pass
    return ClassNDiffConfig()
