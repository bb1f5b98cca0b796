"""Photometric shifts other dermatoscopes produce, for the camera-shift test: colour
temperature, gamma, vignetting, JPEG compression and a slight blur. Each takes and returns
a uint8 RGB array (H, W, 3); none moves a pixel, so labels and masks still hold."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter


def colour_temperature(image: np.ndarray, warmth: float) -> np.ndarray:
    """warmth > 0: redder and less blue (a warm light); < 0: the reverse."""
    gains = np.array([1 + warmth, 1.0, 1 - warmth])
    return np.clip(image * gains, 0, 255).round().astype(np.uint8)


def gamma(image: np.ndarray, value: float) -> np.ndarray:
    return (255 * (image / 255.0) ** value).round().astype(np.uint8)


def vignette(image: np.ndarray, strength: float) -> np.ndarray:
    """Darken towards the corners: the corner keeps 1 − strength of its light."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2)) / np.sqrt(2)
    return np.clip(image * (1 - strength * r ** 2)[..., None], 0, 255).round().astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def blur(image: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda im: im,
    "warm light (+12 % red, −12 % blue)": lambda im: colour_temperature(im, 0.12),
    "cool light (−12 % red, +12 % blue)": lambda im: colour_temperature(im, -0.12),
    "gamma 0.7 (brighter)": lambda im: gamma(im, 0.7),
    "gamma 1.4 (darker)": lambda im: gamma(im, 1.4),
    "vignetting (corners −50 %)": lambda im: vignette(im, 0.5),
    "JPEG quality 30": lambda im: jpeg(im, 30),
    "blur (radius 1 px)": lambda im: blur(im, 1.0),
}
