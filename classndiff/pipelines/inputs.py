"""One image loader for every entry point (API, CLI, app).

Whatever arrives — a path, bytes, a file object, a PIL image, a NumPy array — comes out as
an RGB PIL image, upright, or as an `ImageInputError` whose message a person can act on.
Never a stack trace, never a silent wrong answer. `to_model_tensor` then centre-crops to a
square, as the training images were made.

Handled: EXIF orientation, alpha (composited on white), greyscale, palette, 16-bit and float
images, CMYK / YCbCr / LAB, embedded ICC profiles (converted to sRGB), animated and
multi-page files (first frame), tiny images (rejected), huge images (rejected from the header
before decoding, so a decompression bomb costs nothing), truncated or non-image bytes.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from classndiff.images import center_square

MIN_SIDE = 32  # below this there is nothing to diagnose
MAX_PIXELS = 40_000_000  # checked from the header, before the image is decoded
MAX_BYTES = 50 * 1024 * 1024
MAX_ASPECT = 4.0  # a centre crop of anything longer is not the photo the user meant

READABLE = "JPEG, PNG, TIFF, BMP, WebP or GIF"
# Magic numbers of formats people upload that PIL cannot read, for a more useful message.
_KNOWN_UNREADABLE = {
    b"%PDF": "a PDF document",
    b"<svg": "an SVG drawing",
    b"<?xm": "an XML/SVG document",
    b"PK\x03\x04": "a ZIP archive (or an Office document)",
    b"\x1a\x45\xdf\xa3": "a video (WebM/MKV)",
}


class ImageInputError(ValueError):
    """An upload that cannot be used, with the reason in words."""


def _too_big() -> ImageInputError:
    return ImageInputError(f"the file is larger than {MAX_BYTES // 2**20} MB")


def _describe_unreadable(head: bytes) -> str:
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand.startswith((b"hei", b"hev", b"mif", b"msf", b"avi")):
            return "a HEIC/AVIF photo: export it as JPEG first"
        return "a video or HEIC file"
    for magic, what in _KNOWN_UNREADABLE.items():
        if head.lstrip()[: len(magic)].lower() == magic.lower():
            return what
    if not head:
        return "an empty file"
    return "not an image"


def _read_source(source: Any) -> io.BytesIO:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > MAX_BYTES:
            raise _too_big()
        return io.BytesIO(bytes(source))
    if isinstance(source, (str, Path)):
        try:
            if "\x00" in str(source):
                raise ValueError("embedded NUL")
            path = Path(source).expanduser()
            is_file, is_dir = path.is_file(), path.is_dir()
        except (OSError, ValueError):  # a name too long for the OS, a NUL byte...
            raise ImageInputError("expected a path to an image file") from None
        if is_dir:
            raise ImageInputError(f"{path} is a folder, not an image file")
        if not is_file:
            raise ImageInputError(f"no such file: {path}")
        try:
            if path.stat().st_size > MAX_BYTES:
                raise _too_big()
            return io.BytesIO(path.read_bytes())
        except OSError:  # deleted or unreadable since the check above (e.g. a shared upload)
            raise ImageInputError(f"the file could not be read: {path}") from None
    if hasattr(source, "read"):
        data = source.read(MAX_BYTES + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise ImageInputError("the file object must be opened in binary mode")
        if len(data) > MAX_BYTES:
            raise _too_big()
        return io.BytesIO(bytes(data))
    raise ImageInputError(f"expected an image, a path or bytes, got {type(source).__name__}")


def _open(source: Any) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    data = _read_source(source)
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check runs in open(), from the header; make it an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(data)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(
            f"the image has far more than {MAX_PIXELS // 1_000_000} megapixels: "
            "downscale it first"
        ) from None
    except UnidentifiedImageError:
        if not data.getbuffer().nbytes:
            raise ImageInputError(f"the file is empty; upload a {READABLE} image") from None
        what = _describe_unreadable(data.getvalue()[:16])
        raise ImageInputError(f"this file is {what}; upload a {READABLE} image") from None
    except Exception as error:  # noqa: BLE001 - a malformed header can raise almost anything
        raise ImageInputError(f"the image could not be read: {error}") from None


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first, as tensors come
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageInputError(f"an image array must be H×W or H×W×(1, 3, 4), got {array.shape}")
    if array.size == 0:
        raise ImageInputError("the image array is empty")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise ImageInputError(f"an image array must hold numbers, got {array.dtype}")
        a = array.astype(np.float64)
        if not np.isfinite(a).all():
            raise ImageInputError("the image array contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0 and hi <= 1.0 and np.issubdtype(array.dtype, np.floating):
            a = a * 255.0  # floats in [0, 1]
        elif lo >= 0 and hi <= 255:
            pass
        elif lo >= 0 and hi <= 65535:
            a = a / 257.0  # 16-bit
        else:
            a = (a - lo) * (255.0 / (hi - lo))  # anything else: stretch to the full range
        array = np.clip(np.round(a), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return Image.fromarray(np.ascontiguousarray(array))


_SRGB = None


def _icc_to_srgb(im: Image.Image) -> Image.Image:
    """Colours as the model saw them in training (sRGB), when the file says otherwise."""
    global _SRGB
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "CMYK"):
        return im
    try:
        _SRGB = _SRGB or ImageCms.createProfile("sRGB")
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, source, _SRGB, outputMode="RGB") or im
    except Exception:  # noqa: BLE001 - a broken profile: fall back to the plain conversion
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        if im.mode.startswith("I;16") or (lo >= 0 and 255 < hi <= 65535):
            a = a / 257.0  # 16-bit: keep the exposure, don't stretch
        elif im.mode == "F" and lo >= 0 and hi <= 1.0:
            a = a * 255.0  # floating point in [0, 1], as float TIFFs usually are
        elif lo < 0 or hi > 255:
            a = (a - lo) * (255.0 / (hi - lo))
        im = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))
    if im.mode == "La":
        im = im.convert("LA")  # premultiplied alpha: Pillow converts it only to LA
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")  # palette transparency becomes alpha
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    im = _icc_to_srgb(im)
    return im.convert("RGB")


def load_image(
    source: Any,
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Any upload → an upright RGB PIL image (not yet cropped), or ImageInputError.

    `draft_size` lets JPEGs decode at a reduced scale (never below that side): a 12 MP
    phone photo then costs a few ms instead of ~100."""
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
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageInputError(
            f"the image is {width}×{height} pixels, too elongated for a lesion photo: crop it "
            "around the lesion"
        )
    try:
        if getattr(im, "is_animated", False) or getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # the first frame of a GIF/WebP/APNG/TIFF/MPO
        if draft_size and im.format == "JPEG" and im.mode in ("RGB", "L", "CMYK"):
            im.draft(im.mode, (draft_size, draft_size))
        im.load()
        try:
            im = ImageOps.exif_transpose(im) or im
        except Exception:  # noqa: BLE001 - broken EXIF: keep the pixels as stored
            pass
        return _to_rgb(im)
    except ImageInputError:
        raise
    except MemoryError:
        raise ImageInputError("the image is too large to decode") from None
    except Exception as error:  # noqa: BLE001 - decoders raise OSError, ValueError, SyntaxError...
        raise ImageInputError(f"the image is damaged or truncated ({error})") from None


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
