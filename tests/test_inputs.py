"""The one image loader: every kind of bad or unusual upload gives either a valid model tensor
or an ImageInputError (a ValueError) with a message a person can act on — never another
exception. All inputs are made in code; no dataset image is used."""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from classndiff.pipelines import inputs
from classndiff.pipelines.inputs import ImageInputError, center_square, load_image, to_model_tensor

SIZE = 32  # the model side used to check tensors


def encode(im: Image.Image, fmt: str, **kw: Any) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **kw)
    return buffer.getvalue()


def lesion(width: int = 96, height: int = 72, seed: int = 0) -> np.ndarray:
    """Skin colour with a dark blob in the middle and a little noise."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), (205, 160, 140), np.float64)
    yy, xx = np.mgrid[:height, :width]
    image[(yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 3) ** 2] = (
        110, 70, 50)
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


def png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR claims another size (CRC fixed): a decompression bomb as
    far as any reader that trusts the header is concerned."""
    data = bytearray(encode(Image.new("L", (16, 16)), "PNG"))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, colour)


# ------------------------------------------------------------------ the corpus
def _animated_gif() -> bytes:
    frames = [solid((220, 30, 30)), solid((30, 220, 30)), solid((30, 30, 220))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


def _rgba_png() -> bytes:
    rgba = Image.fromarray(lesion()).convert("RGBA")
    alpha = np.zeros((72, 96), np.uint8)
    alpha[:, 48:] = 255
    rgba.putalpha(Image.fromarray(alpha))
    return encode(rgba, "PNG")


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(lesion()), "JPEG", exif=exif, quality=95)


GOOD: dict[str, Callable[[], Any]] = {
    "jpeg": lambda: encode(Image.fromarray(lesion()), "JPEG"),
    "png_rgba": _rgba_png,
    "png_la": lambda: encode(Image.fromarray(lesion()).convert("LA"), "PNG"),
    "png_greyscale": lambda: encode(Image.fromarray(lesion()).convert("L"), "PNG"),
    "png_1bit": lambda: encode(Image.fromarray(lesion()).convert("1"), "PNG"),
    "png_palette": lambda: encode(
        Image.fromarray(lesion()).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
    "png_palette_transparency": lambda: encode(
        Image.fromarray(lesion()).convert("P", palette=Image.Palette.ADAPTIVE), "PNG",
        transparency=0),
    "png_16bit": lambda: encode(
        Image.fromarray(lesion()[..., 0].astype(np.uint16) * 257), "PNG"),
    "tiff_float32": lambda: encode(
        Image.fromarray(lesion()[..., 0].astype(np.float32) / 255), "TIFF"),
    "tiff_int32": lambda: encode(
        Image.fromarray(lesion()[..., 0].astype(np.int32) * 1000), "TIFF"),
    "jpeg_cmyk": lambda: encode(Image.fromarray(lesion()).convert("CMYK"), "JPEG"),
    "jpeg_exif_rotated": _exif_rotated,
    "gif_animated": _animated_gif,
    "webp": lambda: encode(Image.fromarray(lesion()), "WEBP"),
    "bmp": lambda: encode(Image.fromarray(lesion()), "BMP"),
    "tiff_multipage": lambda: encode(solid((200, 100, 90)), "TIFF", save_all=True,
                                     append_images=[solid((0, 0, 0))]),
    "non_square_wide": lambda: encode(Image.fromarray(lesion(200, 64)), "PNG"),
    "non_square_tall": lambda: encode(Image.fromarray(lesion(64, 200)), "PNG"),
    "exactly_min_side": lambda: encode(Image.fromarray(lesion(40, inputs.MIN_SIDE)), "PNG"),
    "array_uint8": lambda: lesion(),
    "array_float01": lambda: lesion().astype(np.float32) / 255,
    "array_uint16": lambda: lesion().astype(np.uint16) * 257,
    "array_bool": lambda: lesion()[..., 0] > 128,
    "array_channels_first": lambda: np.ascontiguousarray(lesion().transpose(2, 0, 1)),
    "array_h_w_1": lambda: lesion()[..., :1],
    "array_negative_floats": lambda: lesion().astype(np.float32) - 128,
    "pil_image": lambda: Image.fromarray(lesion()),
    "pil_image_i16": lambda: Image.fromarray(lesion()[..., 0].astype(np.uint16) * 257),
    "file_object": lambda: io.BytesIO(encode(Image.fromarray(lesion()), "PNG")),
    "bytearray": lambda: bytearray(encode(Image.fromarray(lesion()), "PNG")),
}

BAD: dict[str, tuple[Callable[[], Any], str]] = {
    # name: (make the input, a word the message must contain)
    "truncated_jpeg": (lambda: encode(Image.fromarray(lesion()), "JPEG")[:400], "truncated"),
    "truncated_png": (lambda: encode(Image.fromarray(lesion()), "PNG")[:300], "truncated"),
    "header_only_jpeg": (lambda: encode(Image.fromarray(lesion()), "JPEG")[:20], "image"),
    "not_an_image_text": (lambda: b"hello, this is not an image\n" * 10, "not an image"),
    "random_bytes": (lambda: np.random.default_rng(0).bytes(4096), "not an image"),
    "empty_bytes": (lambda: b"", "empty"),
    "pdf": (lambda: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", "PDF"),
    "svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
    "zip": (lambda: b"PK\x03\x04" + bytes(60), "ZIP"),
    "heic": (lambda: b"\x00\x00\x00\x18ftypheic" + bytes(40), "HEIC"),
    "one_pixel": (lambda: encode(solid((200, 150, 130), (1, 1)), "PNG"), "pixels"),
    "tiny_8px": (lambda: encode(Image.fromarray(lesion()).resize((8, 8)), "PNG"), "pixels"),
    "one_below_min_side": (
        lambda: encode(Image.fromarray(lesion(64, inputs.MIN_SIDE - 1)), "PNG"), "pixels"),
    "huge_20000_png_header": (lambda: png_claiming(20_000, 20_000), "megapixels"),
    "huge_9000_png_header": (lambda: png_claiming(9_000, 9_000), "megapixels"),
    "huge_100000_png_header": (lambda: png_claiming(100_000, 100_000), "megapixels"),
    "too_elongated": (lambda: encode(Image.fromarray(lesion(400, 64)), "PNG"), "elongated"),
    "array_nan": (lambda: np.full((64, 64, 3), np.nan, np.float32), "NaN"),
    "array_inf": (lambda: np.full((64, 64, 3), np.inf, np.float64), "infinite"),
    "array_five_channels": (lambda: np.zeros((64, 64, 5), np.uint8), "array"),
    "array_four_dims": (lambda: np.zeros((1, 64, 64, 3), np.uint8), "array"),
    "array_empty": (lambda: np.zeros((0, 0, 3), np.uint8), "empty"),
    "array_strings": (lambda: np.full((64, 64), "a"), "numbers"),
    "array_complex": (lambda: np.zeros((64, 64), np.complex64), "numbers"),
    "array_tiny": (lambda: np.zeros((4, 4, 3), np.uint8), "pixels"),
    "missing_path": (lambda: "/nonexistent/lesion.jpg", "no such file"),
    "directory_path": (lambda: "/", "folder"),
    "path_with_nul": (lambda: "lesion\x00.jpg", "path"),
    "wrong_type_int": (lambda: 12345, "expected"),
    "wrong_type_none": (lambda: None, "expected"),
    "text_mode_file": (lambda: io.StringIO("not bytes"), "binary"),
}


def check_tensor(image: Image.Image) -> torch.Tensor:
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert min(image.size) >= inputs.MIN_SIDE
    x = to_model_tensor(image, SIZE)
    assert x.shape == (1, 3, SIZE, SIZE) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    return x


def check_message(error: ImageInputError, word: str) -> None:
    message = str(error)
    assert isinstance(error, ValueError)
    assert word.lower() in message.lower(), message
    assert 15 <= len(message) <= 300 and "Traceback" not in message
    assert " " in message.strip() and not message.startswith("<")  # words, not a repr


def test_the_corpus_is_big_enough() -> None:
    assert len(GOOD) + len(BAD) >= 30


@pytest.mark.parametrize("name", sorted(GOOD))
def test_usable_uploads_give_a_valid_tensor(name: str) -> None:
    check_tensor(load_image(GOOD[name]()))


@pytest.mark.parametrize("name", sorted(BAD))
def test_unusable_uploads_give_a_readable_error(name: str) -> None:
    make, word = BAD[name]
    with pytest.raises(ImageInputError) as caught:
        load_image(make())
    check_message(caught.value, word)


def test_files_on_disk_and_size_limit(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lesion.png"
    Image.fromarray(lesion()).save(path)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(load_image(str(path))))
    monkeypatch.setattr(inputs, "MAX_BYTES", 1000)
    for source in (path, path.read_bytes(), io.BytesIO(path.read_bytes())):
        with pytest.raises(ImageInputError, match="larger than"):
            load_image(source)


def test_a_file_deleted_after_the_check_gives_a_readable_error(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's uploads are shared by content hash: another request may delete the file
    between the existence check and the read. That is a message, not a FileNotFoundError."""
    path = tmp_path / "lesion.png"
    Image.fromarray(lesion()).save(path)

    def deleted_meanwhile(self):  # noqa: ANN001, ANN202
        raise FileNotFoundError(2, "No such file or directory", str(self))

    monkeypatch.setattr(Path, "read_bytes", deleted_meanwhile)
    with pytest.raises(ImageInputError) as caught:
        load_image(path)
    check_message(caught.value, "could not be read")


def test_a_huge_header_is_rejected_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """20000×20000 8-bit would be 400 MB decoded; the check must come from the header."""
    bombs = [png_claiming(side, side) for side in (7_000, 20_000)]
    decoded = []
    original = Image.Image.load

    def spy(self: Image.Image) -> Any:
        decoded.append(self.size)
        return original(self)

    monkeypatch.setattr(Image.Image, "load", spy)
    for bomb in bombs:
        with pytest.raises(ImageInputError, match="megapixels"):
            load_image(bomb)
    assert not decoded
    monkeypatch.undo()
    # and the cap is a parameter: an ordinary image over a small cap is refused the same way
    with pytest.raises(ImageInputError, match="megapixels"):
        load_image(encode(Image.fromarray(lesion()), "PNG"), max_pixels=1000)


def test_exif_orientation_is_applied() -> None:
    """Stored 96×72 with a red top-left corner, orientation 6 (rotate 90° clockwise to
    view): upright it is 72×96 with the red corner at the top right."""
    array = np.full((72, 96, 3), 128, np.uint8)
    array[:20, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    image = load_image(encode(Image.fromarray(array), "JPEG", exif=exif, quality=95))
    upright = np.asarray(image).astype(int)
    assert image.size == (72, 96)
    assert upright[5, -5, 0] > 200 and upright[5, -5, 1] < 60  # red at the top right
    assert abs(upright[5, 5] - 128).max() < 20  # grey at the top left
    without = load_image(encode(Image.fromarray(array), "JPEG", quality=95))
    assert without.size == (96, 72)


def test_alpha_is_composited_on_white() -> None:
    rgb = np.asarray(load_image(_rgba_png())).astype(int)
    assert (rgb[:, :40] == 255).all()  # transparent half: white
    assert np.abs(rgb[:, 60:] - lesion()[:, 60:]).max() <= 1  # opaque half: unchanged


def test_greyscale_palette_and_16_bit_keep_their_values() -> None:
    grey = np.asarray(load_image(GOOD["png_greyscale"]())).astype(int)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    expected = np.asarray(Image.fromarray(lesion()).convert("L")).astype(int)
    assert np.array_equal(grey[..., 0], expected)
    palette = np.asarray(load_image(GOOD["png_palette"]())).astype(int)
    assert np.abs(palette - lesion().astype(int)).mean() < 8
    # 16-bit 128·257 is mid-grey, not clipped to white or stretched
    sixteen = np.full((40, 40), 128 * 257, np.uint16)
    sixteen[:20] = 200 * 257
    out = np.asarray(load_image(encode(Image.fromarray(sixteen), "PNG")))
    assert out[30, 0, 0] == 128 and out[0, 0, 0] == 200
    # floating-point TIFF in [0, 1] is scaled to 0-255, not rounded to black
    for name in ("tiff_float32", "array_float01"):
        out = np.asarray(load_image(GOOD[name]())).astype(int)
        assert np.abs(out[..., 0] - lesion()[..., 0]).max() <= 1, name
    # 32-bit integers beyond 16 bits are stretched to the full range
    out = np.asarray(load_image(GOOD["tiff_int32"]()))
    assert out.min() == 0 and out.max() == 255


def test_cmyk_colours_survive() -> None:
    rgb = np.asarray(load_image(GOOD["jpeg_cmyk"]())).astype(float)
    assert np.abs(rgb.mean((0, 1)) - lesion().mean((0, 1))).max() < 12


def test_animated_and_multipage_files_give_the_first_frame() -> None:
    first = np.asarray(load_image(_animated_gif())).astype(int)
    assert first[..., 0].mean() > 180 and first[..., 1].mean() < 80  # red, not green/blue
    page = np.asarray(load_image(GOOD["tiff_multipage"]())).astype(int)
    assert abs(page.mean((0, 1)) - (200, 100, 90)).max() < 3


def test_non_square_images_are_centre_cropped() -> None:
    """Green bands at both ends of a wide image, red in the middle square: the centre crop
    (as in training) keeps only the red."""
    array = np.zeros((64, 128, 3), np.uint8)
    array[:, :32] = array[:, 96:] = (0, 255, 0)
    array[:, 32:96] = (255, 0, 0)
    image = load_image(encode(Image.fromarray(array), "PNG"))
    assert image.size == (128, 64)  # not cropped yet: the caller decides
    square = center_square(image)
    assert square.size == (64, 64)
    assert (np.asarray(square) == (255, 0, 0)).all()
    x = to_model_tensor(image, SIZE)
    assert torch.allclose(x[0, 0], torch.ones(SIZE, SIZE), atol=0.02)  # red channel at +1
    assert torch.allclose(x[0, 1], -torch.ones(SIZE, SIZE), atol=0.02)  # no green


def test_damaged_files_never_raise_anything_else() -> None:
    """Fuzz: valid JPEG/PNG/GIF bytes with random bytes overwritten or cut short."""
    rng = np.random.default_rng(0)
    sources = [encode(Image.fromarray(lesion()), fmt) for fmt in ("JPEG", "PNG", "GIF")]
    outcomes = {"ok": 0, "error": 0}
    for trial in range(150):
        data = bytearray(sources[trial % 3])
        if trial % 2:
            for _ in range(int(rng.integers(1, 8))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        else:
            data = data[: int(rng.integers(1, len(data)))]
        try:
            check_tensor(load_image(bytes(data)))
            outcomes["ok"] += 1
        except ImageInputError as error:
            assert len(str(error)) >= 15
            outcomes["error"] += 1
    assert outcomes["error"] > 0  # the corruption really happened
