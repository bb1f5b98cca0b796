"""The one checkpoint format of every training loop in the project (the joint trainer and the
independent evaluator's): safetensors and JSON only, never pickles, and everything a
resumed run needs to be the same run.

    folder/model.safetensors      weights being trained
    folder/ema.safetensors        their EMA
    folder/best.safetensors       the best-by-validation weights so far (optional)
    folder/optimizer.safetensors  the optimizer's tensors (its layout in state.json)
    folder/rng-<rank>.safetensors the global torch RNG, the data generator, CUDA's RNG
    folder/state.json             step, scores, seconds trained, the loop's own fields
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def cpu_contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, on the CPU, contiguous: what safetensors can write."""
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """An optimizer's state as flat tensors + a JSON-ready layout."""
    state = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "keys": {}}
    for index, values in state["state"].items():
        for name, value in values.items():
            key = f"{index}.{name}"
            tensors[key] = torch.as_tensor(value).detach().cpu().contiguous()
            meta["keys"][key] = [int(index), name]
    return tensors, meta


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, (index, name) in meta["keys"].items():
        state.setdefault(index, {})[name] = tensors[key]
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_rng(folder: Path, generator: torch.Generator, rank: int = 0) -> None:
    """Each process's random state (dropout differs per process; the data generator not)."""
    rng = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(rng, str(folder / f"rng-{rank}.safetensors"))


def load_rng(folder: Path, generator: torch.Generator, rank: int = 0) -> None:
    rng = load_file(str(folder / f"rng-{rank}.safetensors"))
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["generator"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def save_checkpoint(folder: Path, model: torch.nn.Module, ema: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, state: dict[str, Any],
                    best: dict[str, torch.Tensor] | None = None) -> Path:
    """Weights, EMA, best weights, optimizer and `state` (the RNG: `save_rng`)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(cpu_contiguous(model.state_dict()), str(folder / "model.safetensors"))
    save_file(cpu_contiguous(ema.state_dict()), str(folder / "ema.safetensors"))
    if best is not None:
        save_file(cpu_contiguous(best), str(folder / "best.safetensors"))
    tensors, meta = optimizer_tensors(optimizer)
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "state.json").write_text(json.dumps({**state, "optimizer": meta}))
    return folder


def load_checkpoint(folder: Path, model: torch.nn.Module, ema: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, device: str = "cpu"
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore what `save_checkpoint` wrote; returns (state, best weights or None)."""
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=device))
    ema.load_state_dict(load_file(str(folder / "ema.safetensors"), device=device))
    state = json.loads((folder / "state.json").read_text())
    load_optimizer(optimizer, load_file(str(folder / "optimizer.safetensors"), device=device),
                   state.pop("optimizer"))
    best_file = folder / "best.safetensors"
    best = load_file(str(best_file)) if best_file.exists() else None
    return state, best
