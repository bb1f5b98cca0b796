"""One image loader for every entry point (API, CLI, app).

Whatever arrives — a path, bytes, a file object, a PIL image, a NumPy array — comes out as
an RGB PIL image, upright, centre-cropped to a square, or as an `ImageInputError` whose
message a person can act on. Never a stack trace, never a silent wrong answer."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 32  # below this there is nothing to diagnose
MAX_PIXELS = 40_000_000  # checked from the header, before the image is decoded
MAX_BYTES = 50 * 1024 * 1024


class ImageInputError(ValueError):
    """An upload that cannot be used, with the reason in words."""


def _open(source: Any) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, (bytes, bytearray)):
        if len(source) > MAX_BYTES:
            raise ImageInputError(f"the file is larger than {MAX_BYTES // 2**20} MB")
        data = io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageInputError(f"no such file: {path}")
        if path.stat().st_size > MAX_BYTES:
            raise ImageInputError(f"the file is larger than {MAX_BYTES // 2**20} MB")
        data = io.BytesIO(path.read_bytes())
    elif hasattr(source, "read"):
        data = io.BytesIO(source.read(MAX_BYTES + 1))
        if len(data.getvalue()) > MAX_BYTES:
            raise ImageInputError(f"the file is larger than {MAX_BYTES // 2**20} MB")
    else:
        raise ImageInputError(f"expected an image, a path or bytes, got {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(data)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError("this file is not an image this app can read (JPEG, PNG, TIFF, "
                              "BMP, WebP, GIF)") from None
    except OSError as error:
        raise ImageInputError(f"the image could not be read: {error}") from None


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageInputError(f"an image array must be H×W or H×W×(1, 3, 4), got {array.shape}")
    if array.dtype != np.uint8:
        a = array.astype(np.float64)
        hi = 1.0 if a.max(initial=0) <= 1.0 else (255.0 if a.max() <= 255 else 65535.0)
        array = np.clip(a / hi * 255.0, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return Image.fromarray(array)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        im = Image.fromarray(((a - lo) * scale).astype(np.uint8))
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGBa"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im.convert("RGB")


def load_image(source: Any, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Any upload → an upright RGB PIL image (not yet cropped), or ImageInputError."""
    im = _open(source)
    width, height = im.size  # from the header: nothing decoded yet
    if width * height > max_pixels:
        raise ImageInputError(
            f"the image is {width}×{height} pixels; the limit is {max_pixels // 1_000_000} "
            "megapixels: downscale it first"
        )
    if min(width, height) < min_side:
        raise ImageInputError(
            f"the image is only {width}×{height} pixels; at least {min_side}×{min_side} is needed"
        )
    try:
        if getattr(im, "is_animated", False):
            im.seek(0)  # the first frame of a GIF/WebP/APNG
        im.load()
        im = ImageOps.exif_transpose(im) or im
        return _to_rgb(im)
    except ImageInputError:
        raise
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageInputError(f"the image is damaged or truncated: {error}") from None


def center_square(im: Image.Image, size: int | None = None) -> Image.Image:
    """Centre crop to a square (as the training images were made), optionally resized."""
    w, h = im.size
    side = min(w, h)
    im = im.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
    if size is not None and side != size:
        im = im.resize((size, size), Image.Resampling.LANCZOS)
    return im


def to_model_tensor(im: Image.Image, size: int):  # noqa: ANN201 - torch.Tensor (lazy import)
    """RGB PIL → (1, 3, size, size) float tensor in [-1, 1]."""
    import torch

    array = np.asarray(center_square(im, size), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1


def to_pil(x) -> list[Image.Image]:  # noqa: ANN001 - torch.Tensor in [-1, 1]
    """(N, 3, H, W) in [-1, 1] → list of RGB PIL images."""
    array = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    array = array.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]
