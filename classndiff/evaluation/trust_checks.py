"""The trust bars, measured: natural photos and test lesions against the abstention rule,
calibration, skin-tone (ITA) agreement, and the bad-input corpus (`classndiff trust`)."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from classndiff.trust.abstention import (
    calibration_summary,
    collect,
    reliability_diagram,
)

# ---------------------------------------------------------------------------- trust bars
logger = logging.getLogger(__name__)

# ------------------------------------------------------------------ measurements (the bars)
NATURAL_PHOTOS: tuple[str, ...] = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page",
    "retina", "rocket", "text", "stereo_motorcycle",
)
SYNTHETIC_PICTURES: tuple[str, ...] = (
    "binary_blobs", "checkerboard", "colorwheel", "horse", "logo", "shepp_logan_phantom",
)


def data_dir_for(config: Any, data_dir: str | Path | None) -> Path:
    from classndiff.data import default_data_dir

    if data_dir:
        return Path(data_dir)
    configured = Path(config.train.data_dir)
    return configured if (configured / "metadata.csv").exists() else default_data_dir()



def natural_images(include_synthetic: bool = False) -> dict[str, np.ndarray]:
    """The photos that ship with scikit-image and scikit-learn (no download needed): none of
    them is a dermoscopic lesion. Optionally the synthetic pictures too."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    names = NATURAL_PHOTOS + (SYNTHETIC_PICTURES if include_synthetic else ())
    out: dict[str, np.ndarray] = {}
    for name in names:
        try:
            image = getattr(skimage.data, name)()
        except Exception as error:  # noqa: BLE001 - an image that needs a download: skip it
            logger.info("skipping skimage.data.%s: %s", name, error)
            continue
        if name == "stereo_motorcycle":
            out["motorcycle_left"], out["motorcycle_right"] = image[0], image[1]
            continue
        out[name] = image
    sample = load_sample_images()
    for filename, image in zip(sample.filenames, sample.images):
        out[f"sklearn_{Path(filename).stem}"] = image
    return out


def _crops(image: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random square crops, 40–90 % of the short side: what a user might upload."""
    h, w = image.shape[:2]
    out = []
    for _ in range(count):
        side = int(min(h, w) * rng.uniform(0.4, 0.9))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        out.append(image[top : top + side, left : left + side])
    return out


def measure_ood(
    pipe: Any, data_dir: str | Path | None = None, split: str = "test", crops: int = 4,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Share of natural photos (whole, and `crops` random crops of each) that `diagnose`
    turns away, and share of the split's lesions it turns away."""
    if pipe.trust is None:
        raise ValueError("these weights have no abstention statistics: run "
                         "`classndiff calibrate WEIGHTS` first")
    rng = np.random.default_rng(0)
    photos = natural_images()
    whole = {name: pipe.diagnose(image, skin_tone=False).prediction is None
             for name, image in photos.items()}
    cropped = [pipe.diagnose(c, skin_tone=False).prediction is None
               for image in photos.values() for c in _crops(image, crops, rng)]
    synthetic = {name: pipe.diagnose(image, skin_tone=False).prediction is None
                 for name, image in natural_images(include_synthetic=True).items()
                 if name in SYNTHETIC_PICTURES}
    data = collect(pipe, split, data_dir_for(pipe.config, data_dir), batch_size)
    lesion_checks = pipe.trust.check(data["features"], data["stats"])
    rejected = np.array([c["abstain"] for c in lesion_checks])
    greyscale = {name for name, image in photos.items() if image.ndim == 2}
    return {
        "natural_photos_rejected": float(np.mean(list(whole.values()))),
        "natural_photos_n": len(whole),
        "colour_photos_rejected": float(np.mean([v for k, v in whole.items()
                                                 if k not in greyscale])),
        "colour_photos_n": len(whole) - len(greyscale),
        "natural_photos_accepted": [k for k, v in whole.items() if not v],
        "natural_crops_rejected": float(np.mean(cropped)),
        "natural_crops_n": len(cropped),
        "synthetic_pictures_rejected": float(np.mean(list(synthetic.values()))),
        "synthetic_pictures_accepted": [k for k, v in synthetic.items() if not v],
        f"{split}_lesions_rejected": float(rejected.mean()),
        f"{split}_lesions_n": int(len(rejected)),
        "by_detector": {
            "feature": float(np.mean([c["feature_score"] > 1 for c in lesion_checks])),
            "stats": float(np.mean([c["stats_score"] > 1 for c in lesion_checks])),
        },
    }


def measure_calibration(
    pipe: Any, data_dir: str | Path | None = None, split: str = "test",
    report_dir: str | Path | None = None,
) -> dict[str, Any]:
    """ECE before/after the stored temperature on a held-out split (+ a diagram)."""
    data = collect(pipe, split, data_dir_for(pipe.config, data_dir))
    result = {"split": split, "n": int(len(data["labels"])), "temperature": pipe.temperature,
              **calibration_summary(data["logits"], data["labels"], pipe.temperature)}
    if report_dir:
        result["reliability_diagram"] = str(reliability_diagram(
            data["logits"], data["labels"], pipe.temperature,
            Path(report_dir) / f"reliability_{split}.png",
            title=f"{split} split (n = {len(data['labels'])})"))
    return result


def measure_skin_tone(
    data_dir: str | Path | None = None, split: str = "test", limit: int | None = None,
) -> dict[str, Any]:
    """Agreement of `estimate_skin_tone` (lesion segmented, no mask) with the data's `ita`,
    `skin_tone`, `skin_tone_group` and `ita_reliable` columns."""
    from PIL import Image
    from scipy.stats import pearsonr, spearmanr

    from classndiff.data import default_data_dir, read_metadata
    from classndiff.trust.skintone import estimate_skin_tone

    root = Path(data_dir) if data_dir else default_data_dir()
    rows = read_metadata(root, split)[:limit]
    estimates = []
    for row in rows:
        with Image.open(root / row["image"]) as im:
            estimates.append(estimate_skin_tone(im.convert("RGB")))
    ours = np.array([e["ita"] if e["ita"] is not None else np.nan for e in estimates])
    ref = np.array([float(r["ita"]) for r in rows])
    ok = ~np.isnan(ours)
    ref_reliable = np.array([r.get("ita_reliable") == "1" for r in rows])
    our_reliable = np.array([e["reliable"] for e in estimates])
    both = ok & ref_reliable & our_reliable
    groups = np.array([e["group"] for e in estimates])
    ref_groups = np.array([r["skin_tone_group"] for r in rows])
    result = {
        "split": split, "n": len(rows),
        "pearson_all": float(pearsonr(ours[ok], ref[ok])[0]),
        "spearman_all": float(spearmanr(ours[ok], ref[ok])[0]),
        "pearson_both_reliable": float(pearsonr(ours[both], ref[both])[0]),
        "mae_both_reliable": float(np.abs(ours[both] - ref[both]).mean()),
        "n_both_reliable": int(both.sum()),
        "group_agreement": float((groups == ref_groups).mean()),
        "bin_agreement": float(np.mean([e["bin"] == r["skin_tone"]
                                        for e, r in zip(estimates, rows)])),
        "reliable_flag_agreement": float((our_reliable == ref_reliable).mean()),
        "group_recall": {g: {"n": int((ref_groups == g).sum()),
                             "recall": float((groups[ref_groups == g] == g).mean())}
                         for g in ("lighter", "brown", "darker") if (ref_groups == g).any()},
    }
    return result


# A table of broken inputs, one entry per case: long, with no logic to split.
def bad_input_corpus() -> dict[str, Any]:
    """Uploads that must never crash `diagnose`: each kind gives a clear ImageInputError or a
    result (an abstention when it is not a lesion). Made in code: no files needed."""
    from PIL import Image

    rng = np.random.default_rng(0)

    def encode(im: Image.Image, fmt: str, **kw: Any) -> bytes:
        buffer = io.BytesIO()
        im.save(buffer, fmt, **kw)
        return buffer.getvalue()

    lesion = np.full((96, 128, 3), (205, 160, 140), np.uint8)
    yy, xx = np.mgrid[:96, :128]
    lesion[(yy - 48) ** 2 + (xx - 64) ** 2 < 30**2] = (110, 70, 50)
    lesion = np.clip(lesion + rng.normal(0, 4, lesion.shape), 0, 255).astype(np.uint8)
    rgb = Image.fromarray(lesion)
    jpeg = encode(rgb, "JPEG", quality=90)
    png = encode(rgb, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(((xx > 64) * 255).astype(np.uint8)))
    frames = [rgb, Image.fromarray(255 - lesion), rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:], duration=100)
    bomb = bytearray(encode(Image.new("L", (64, 64)), "PNG"))
    bomb[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR claims 100000×100000
    import zlib

    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")
    grey = np.asarray(rgb.convert("L"))
    noise = rng.integers(0, 256, (128, 128, 3), np.uint8)
    cap = bytearray(encode(Image.new("L", (64, 64)), "PNG"))
    cap[16:24] = (9_000).to_bytes(4, "big") * 2  # 81 MP: over our cap, under Pillow's
    cap[29:33] = zlib.crc32(bytes(cap[12:29])).to_bytes(4, "big")
    return {
        "jpeg_exif_rotated": encode(rgb, "JPEG", exif=exif),
        "png_rgba": encode(rgba, "PNG"),
        "png_greyscale": encode(rgb.convert("L"), "PNG"),
        "png_palette": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "png_16bit_grey": encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"),
        "tiff_float32": encode(Image.fromarray(grey.astype(np.float32) / 255), "TIFF"),
        "jpeg_cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "tiny_8px": encode(rgb.resize((8, 8)), "PNG"),
        "huge_header_bomb": bytes(bomb),
        "over_pixel_cap": bytes(cap),
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "truncated_png": png[: len(png) // 2],
        "not_an_image_text": b"hello, this is not an image\n" * 10,
        "empty_bytes": b"",
        "pdf_bytes": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n",
        "gif_animated": animated.getvalue(),
        "webp": encode(rgb, "WEBP"),
        "bmp": encode(rgb, "BMP"),
        "non_square_wide": encode(Image.fromarray(np.concatenate([lesion] * 2, 1)), "PNG"),
        "too_elongated": encode(Image.fromarray(np.concatenate([lesion] * 6, 1)), "PNG"),
        "array_float01": lesion.astype(np.float32) / 255,
        "array_uint16": lesion.astype(np.uint16) * 257,
        "array_bool": lesion[..., 0] > 128,
        "array_nan": np.full((64, 64, 3), np.nan, np.float32),
        "array_bad_shape": np.zeros((64, 64, 5), np.uint8),
        "array_channels_first": np.ascontiguousarray(lesion.transpose(2, 0, 1)),
        "blank_white": encode(Image.new("RGB", (128, 128), "white"), "PNG"),
        "random_noise": encode(Image.fromarray(noise), "PNG"),
        "missing_path": "/nonexistent/lesion.jpg",
        "wrong_type": 12345,
    }


def measure_bad_inputs(pipe: Any) -> dict[str, Any]:
    """Every corpus item through `diagnose(saliency=True)`: 'error: …' (a clear
    ImageInputError), 'abstain: …' or 'diagnosed'. Anything else is a crash."""
    from classndiff.pipelines.inputs import ImageInputError

    outcomes, crashes = {}, []
    for name, item in bad_input_corpus().items():
        try:
            d = pipe.diagnose(item, saliency=True)
            outcomes[name] = f"abstain: {d.reason}" if d.prediction is None else "diagnosed"
        except ImageInputError as error:
            outcomes[name] = f"error: {error}"
        except Exception as error:  # noqa: BLE001 - that is what is being counted
            crashes.append(name)
            outcomes[name] = f"CRASH {type(error).__name__}: {error}"
    return {"kinds": len(outcomes), "crashes": len(crashes), "crashed": crashes,
            "outcomes": outcomes}
