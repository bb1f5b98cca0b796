"""Image geometry shared by the dataset reader and the upload path (PIL only, no torch)."""

from __future__ import annotations

from PIL import Image


def center_square(im: Image.Image, size: int | None = None,
                  resample: Image.Resampling = Image.Resampling.LANCZOS) -> Image.Image:
    """Centre crop to a square (as the training images were made), optionally resized."""
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    im = im.crop((left, top, left + side, top + side))
    if size is not None and side != size:
        im = im.resize((size, size), resample)
    return im
