"""Class-N-Diff — the clinician-facing Gradio demo (research demo, not a medical device).

A thin view over `classndiff.pipelines.pipeline`: every number and image shown here comes from
`ClassNDiffPipeline.diagnose` / `.generate`; this file only lays them out.

    python app.py                                   # embedded weights, http://127.0.0.1:7860
    CLASSNDIFF_WEIGHTS=org/repo@rev python app.py   # a Hub repo (or a local folder)

Weights: CLASSNDIFF_WEIGHTS, else the Hub default named in the config (`extra.hub_default`)
when reachable, else weights/embedded/; the source in use is shown in the Model tab.

Start-up is fast because nothing here imports torch: the UI is built and served first and
the model is loaded once, in a background thread started at launch; the first request
waits for it. Environment: CLASSNDIFF_WEIGHTS, GRADIO_SERVER_NAME (default 127.0.0.1;
0.0.0.0 on Spaces), GRADIO_SERVER_PORT (7860), CLASSNDIFF_MAX_UPLOAD (20mb),
CLASSNDIFF_FILE_TTL (seconds temporary outputs live, 300), HF_HUB_OFFLINE.
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Privacy: no usage analytics, no telemetry — set before gradio / huggingface_hub import.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

try:  # ZeroGPU on Spaces: `spaces` must be imported before torch.
    import spaces  # type: ignore[import-not-found]

    gpu = spaces.GPU
except ImportError:  # anywhere else a no-op decorator

    def gpu(fn: Callable | None = None, **_: Any) -> Any:
        return fn if fn is not None else (lambda f: f)

# On a ZeroGPU Space the main process has no real GPU: the model is loaded (and moved to
# "cuda") before launch so that `spaces` can pack it, there is no warm-up pass, and the
# decorated functions run in a worker process (so they get no closures for progress).
ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")

import gradio as gr  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from classndiff import __version__  # noqa: E402 - cheap: no torch
from classndiff.config import ClassNDiffConfig  # noqa: E402
from classndiff.labels import DX_CODES, DX_NAMES, MALIGNANT_DX, SEXES, TONE_GROUPS  # noqa: E402
from classndiff.pipelines.inputs import ImageInputError, center_square, load_image  # noqa: E402

logger = logging.getLogger("classndiff.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = Path(os.environ.get("CLASSNDIFF_EXAMPLES", ROOT / "examples"))
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SAMPLERS = ("dpm++", "ddim", "ddpm")
# Mirrors of classndiff.explain.saliency.CAM_METHODS / models.diffusion.SAMPLERS (those
# import torch; a test keeps them equal).
# HiResCAM is left out: for a pooled linear head (this classifier's) it equals Grad-CAM.
CAM_METHODS = ("gradcam", "gradcam++", "eigencam", "scorecam")
CAM_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM",
              "eigencam": "EigenCAM", "scorecam": "Score-CAM (slow)"}
PREDICTED = "predicted"
MALIGNANT = "malignant"
ANY = "any"
AUTO = "auto"
# The card's row labels stay on one line; long commands in its tables wrap anywhere, so
# they do not squeeze the other columns to a letter per line.
CSS = ("#model-card td:first-child, #model-card th { white-space: nowrap; } "
       "#model-card td code { word-break: break-all; } "
       # WCAG AA contrast (≥ 4.5:1): help text, the upload box's "or", the primary button.
       ".info-text, .or, [data-testid='block-info'] + span { color: #374151 !important; } "
       "button.primary, button.lg.primary { background: #b4410f !important; "
       "border-color: #b4410f !important; color: #ffffff !important; } "
       "button.stop { background: #b91c1c !important; border-color: #b91c1c !important; "
       "color: #ffffff !important; } "
       ".show-api, footer a, [data-testid='max-value'], [data-testid='min-value'] "
       "{ color: #374151 !important; } "
       # A phone: a smaller title, so the answer starts within the first screen.
       "@media (max-width: 640px) { h1 { font-size: 1.45rem !important; "
       "line-height: 1.2 !important; } }")
# Gradio's empty placeholders carry aria-label on plain <div>s, which ARIA prohibits
# (axe: aria-prohibited-attr): give them role="img" so the label is allowed and read out.
HEAD = """<script>
(() => {
  const fix = () => document.querySelectorAll('div[aria-label]:not([role]),' +
      'span[aria-label]:not([role])').forEach(el => el.setAttribute('role', 'img'));
  new MutationObserver(fix).observe(document.documentElement,
                                    {childList: true, subtree: true});
  document.addEventListener('DOMContentLoaded', fix);
})();
</script>"""
EMPTY_SUMMARY = "Upload an image to see the model's assessment."
WITHHELD_WHEN_ABSTAINING = ("probabilities", "malignant", "confidence", "saliency")
# What the CPU serves in reasonable time: steps × images per request (a GPU gets 8×).
CPU_STEP_BUDGET = 1000
DISPLAY_SIZE = 256  # generated images are 64 px: upscaled for the gallery
DISCLAIMER = (
    "**Research demo — not a medical device.** Not for diagnosis, screening or treatment "
    "decisions. Results can be wrong, most of all for darker skin, which is rare in the "
    "training data."
)
NO_WEIGHTS_HELP = (
    "Set CLASSNDIFF_WEIGHTS to a folder holding config.json + model.safetensors, a Hugging "
    "Face Hub id, or id@revision; or put the shipped weights in weights/embedded/."
)


def dx_label(code: str) -> str:
    return f"{DX_NAMES[code]} ({code})"


# --------------------------------------------------------------------------- model holder
class ModelHolder:
    """The pipeline, loaded once in a background thread so the page is served at once."""

    def __init__(self, source: str | None) -> None:
        self.source = source or None
        self.pipe: Any = None
        self.error: str | None = None
        self.seconds: float | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load, name="model-loader",
                                                daemon=True)
                self._thread.start()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            from classndiff.pipelines.pipeline import ClassNDiffPipeline

            pipe = ClassNDiffPipeline.from_pretrained(self.source)
            if not ZERO_GPU:
                # A warm-up pass through everything a diagnosis uses (saliency too: its
                # first use imports pytorch-grad-cam, OpenCV and matplotlib, ~1.2 s), so the
                # first real request does not pay for lazy set-up.
                warm = Image.new("RGB", (pipe.config.model.pixel_size,) * 2, (200, 150, 130))
                pipe.diagnose(warm, saliency=True, abstain=False)
            self.pipe = pipe
            logger.info("model ready from %s on %s", pipe.source, pipe.device)
        except Exception as error:  # noqa: BLE001 - shown to the user, not a crash
            logger.exception("could not load the model")
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.seconds = round(time.perf_counter() - started, 1)
            self._ready.set()

    def get(self, progress: Any = None, timeout: float = 600) -> Any:
        """The pipeline; the first callers wait for the loader (with a progress note)."""
        self.start()
        if not self._ready.is_set() and progress is not None:
            progress(None, desc="Loading the model (first request after start-up)…")
        if not self._ready.wait(timeout):
            raise gr.Error("The model is still loading; try again in a minute.")
        if self.pipe is None:
            raise gr.Error(f"The model could not be loaded: {self.error}. {NO_WEIGHTS_HELP}")
        return self.pipe


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


# --------------------------------------------------------------------------- temp files
class TempFiles:
    """Gradio's upload/output cache in a private folder: uploads are deleted as soon as they
    are read, everything else after `ttl` seconds, the whole folder at exit."""

    def __init__(self, ttl: float = 300, interval: float = 30) -> None:
        parent = os.environ.get("GRADIO_TEMP_DIR") or None
        self.root = Path(tempfile.mkdtemp(prefix="classndiff-app-", dir=parent))
        os.environ["GRADIO_TEMP_DIR"] = str(self.root)  # gradio reads it when it saves files
        self.ttl = ttl
        self.interval = interval
        # Files cached before the app serves (example thumbnails) are kept; nothing is
        # deleted until start().
        self.keep_before = math.inf
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)

    def start(self) -> None:
        self.keep_before = time.time()
        threading.Thread(target=self._sweep_forever, name="temp-sweeper", daemon=True).start()

    def _sweep_forever(self) -> None:
        while True:
            time.sleep(self.interval)
            self.sweep()

    def sweep(self) -> int:
        now, removed = time.time(), 0
        for path in self.root.rglob("*"):
            try:
                stat = path.stat()
                if path.is_file() and self.keep_before < stat.st_mtime < now - self.ttl:
                    path.unlink()
                    removed += 1
            except OSError:
                pass
        return removed

    def discard_upload(self, path: str | Path) -> None:
        """Delete an uploaded file (and its per-upload folder) right after it was read."""
        path = Path(path)
        try:
            if self.root in path.resolve().parents and path.stat().st_mtime > self.keep_before:
                path.unlink()
                if not any(path.parent.iterdir()):
                    path.parent.rmdir()
        except OSError:
            pass

    def new_file(self, name: str) -> Path:
        folder = self.root / "outputs" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder / name

    def save_png(self, image: Image.Image, pnginfo: Any = None) -> str:
        """An output image at a path of its own. (Gradio would store it by content hash and
        rewrite that file in place when another request makes the same image — a download
        of it in progress then breaks.)"""
        path = self.new_file("image.png")
        image.save(path, format="PNG", pnginfo=pnginfo)
        return str(path)


class UploadMemory:
    """Uploads kept in memory (never on disk) for `ttl` seconds, at most `max_bytes` in all:
    for re-running saliency with new settings, and because gradio stores uploads by content
    hash, so users who upload the same file share one path, which the first request deletes."""

    def __init__(self, ttl: float = 300, max_bytes: int = 256 * 2**20) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._items: dict[str, tuple[float, bytes]] = {}  # insertion order = age
        self._lock = threading.Lock()

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (t, _) in self._items.items() if t < now - self.ttl]:
            del self._items[key]
        while sum(len(d) for _, d in self._items.values()) > self.max_bytes and self._items:
            del self._items[next(iter(self._items))]

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (time.monotonic(), data)
            self._expire()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            self._expire()
            item = self._items.get(key)
            return item[1] if item else None

    def discard(self, key: str | None) -> None:
        with self._lock:
            self._items.pop(key or "", None)


# --------------------------------------------------------------------------- view helpers
def example_files() -> list[Path]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)


def stamp_synthetic(image: Image.Image, size: int = DISPLAY_SIZE) -> Image.Image:
    """Upscale (Lanczos) a small generated image for display and stamp SYNTHETIC in a corner,
    so that it can never be mistaken for a photograph of a patient."""
    image = image.convert("RGB")
    if image.width < size:
        image = image.resize((size, round(image.height * size / image.width)),
                             Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(image, "RGBA")
    font_size = max(10, image.width // 14)
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    text = "SYNTHETIC"
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, font_size // 4)
    x, y = 2 * pad, 2 * pad - top  # top-left: the gallery's caption covers the bottom
    draw.rectangle((x - pad, y - pad + top, x + right - left + pad, y + bottom + pad),
                   fill=(0, 0, 0, 200))
    draw.text((x - left, y), text, font=font, fill=(255, 255, 255, 255))
    return image


TONE_SCALE = "lighter: ITA > 41° · brown: 10–41° · darker: ≤ 10°"


def describe_skin_tone(tone: Any) -> str | None:
    """Whatever diagnose() gives for skin tone (object, dict, number or text) in words, on
    one scale: the model's lighter / brown / darker groups, with the ITA behind it. A skin
    with a grey, pink or blue cast (median b* ≤ 0) has no measurable ITA (the formula
    saturates at 90°): said so, instead of a number."""
    if tone is None:
        return None
    if hasattr(tone, "__dict__") and not isinstance(tone, dict):
        tone = {k: v for k, v in vars(tone).items() if not k.startswith("_")}
    if isinstance(tone, (int, float)):
        return f"ITA {tone:.0f}°"
    if not isinstance(tone, dict):
        return str(tone)
    group = tone.get("group") or tone.get("skin_tone_group") or tone.get("label")
    ita = tone.get("ita", tone.get("ita_degrees"))
    skin_b = tone.get("skin_b")
    if isinstance(skin_b, (int, float)) and skin_b <= 0:
        return ("not measurable: the skin has a grey, pink or blue colour cast, where ITA "
                "reflects only lightness")
    if not group or group == "unknown" or not isinstance(ita, (int, float)) \
            or not math.isfinite(ita):
        return "not measurable (too little visible skin, or a dim, colour-cast image)"
    text = f"**{group}** (ITA {ita:.0f}°; {TONE_SCALE})"
    if tone.get("reliable") is False:
        text += " — low reliability: little skin visible, measured on the image border"
    return text


def saliency_overlay(saliency: Any) -> tuple[Image.Image | None, str | None]:
    """(overlay image, a caption) from whatever diagnose() put in `Diagnosis.saliency`."""
    if saliency is None:
        return None, None
    if isinstance(saliency, Image.Image):
        return saliency, None
    if isinstance(saliency, dict):
        get = saliency.get
    else:
        def get(key: str, default: Any = None) -> Any:
            return getattr(saliency, key, default)
    image = get("overlay")
    if image is not None and not isinstance(image, Image.Image):
        try:
            import numpy as np

            array = np.asarray(image)
            if array.dtype != np.uint8:
                array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
            image = Image.fromarray(array)
        except (TypeError, ValueError):
            image = None
    method, target = get("method"), get("target")
    if isinstance(target, int) and 0 <= target < len(DX_CODES):
        target = DX_CODES[target]
    if target == MALIGNANT:
        target = "malignant vs benign (log-odds)"
    elif target in DX_NAMES:
        target = dx_label(target)
    caption = f"{CAM_LABELS.get(method, method or 'saliency')} of {target or 'the prediction'}"
    return image, caption


def saliency_panel(original: Image.Image, overlay: Image.Image,
                   cam: Any = None, colormap: str = "viridis") -> Image.Image:
    """Original and overlay side by side, the map's hot region (≥ 0.5 of its peak) outlined
    in white on the overlay, and the colour scale beside them, labelled low → high."""
    import numpy as np
    from matplotlib import colormaps

    side = DISPLAY_SIZE
    original = original.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
    overlay = overlay.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
    if cam is not None:
        heat = np.asarray(Image.fromarray(np.uint8(np.clip(cam, 0, 1) * 255)).resize(
            (side, side), Image.Resampling.BILINEAR)) >= 128
        inner = heat.copy()
        inner[1:-1, 1:-1] = (heat[1:-1, 1:-1] & heat[:-2, 1:-1] & heat[2:, 1:-1]
                             & heat[1:-1, :-2] & heat[1:-1, 2:])
        edge = heat & ~inner
        array = np.asarray(overlay).copy()
        array[edge] = 255
        overlay = Image.fromarray(array)
    bar_width, gap = 56, 6
    canvas = Image.new("RGB", (2 * side + 2 * gap + bar_width, side), (255, 255, 255))
    canvas.paste(original, (0, 0))
    canvas.paste(overlay, (side + gap, 0))
    ramp = colormaps[colormap](np.linspace(1, 0, side - 24))[:, :3]
    bar = Image.fromarray(np.uint8(np.repeat(ramp[:, None], 16, 1) * 255))
    x = 2 * side + 2 * gap
    canvas.paste(bar, (x, 12))
    draw = ImageDraw.Draw(canvas)
    draw.text((x + 19, 8), "high", fill=(0, 0, 0))
    draw.text((x + 19, side - 22), "low", fill=(0, 0, 0))
    return canvas


class GenerationCancelled(Exception):
    """Raised in the sampler's progress callback when the request was stopped."""


def cpu_only() -> bool:
    try:
        import torch
    except ImportError:
        return True
    return not torch.cuda.is_available()


def public_source(source: Any) -> str:
    """Where the weights came from, without the server's paths: a Hub id stays; a local
    folder is named by its last component."""
    text = str(source or "")
    return re.sub(r"(/[^\s,;()]+)+/([^/\s,;()]+)", r"\2", text)


def png_metadata(settings: dict[str, Any]) -> Any:
    """PNG text chunks: `synthetic`, the settings (JSON) and the model that made it."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("synthetic", "true")
    info.add_text("Description", "SYNTHETIC image generated by Class-N-Diff (research demo, "
                                 "not patient data)")
    info.add_text("classndiff_settings", json.dumps(settings, default=str))
    info.add_text("classndiff_weights", public_source(settings.get("weights")))
    return info


def percent(p: float) -> str:
    return f"{100 * p:.1f} %"


def diagnosis_markdown(d: Any, saliency_caption: str | None) -> str:
    lines = []
    if d.prediction is not None:
        lines.append(f"### Prediction: {dx_label(d.prediction)} — {percent(d.confidence)}")
    else:
        lines.append("### No prediction: the model abstains")
        reason = (d.reason or "the image does not look like what it was trained on").rstrip(". ")
        lines.append(f"**Why:** {reason}. No class or malignant probability is shown, and no "
                     "saliency map is drawn. Tick *Predict even if the image looks unusual* to "
                     "see the model's guess anyway (marked as such).")
    warning = (getattr(d, "extras", None) or {}).get("warning")
    if warning and d.prediction is not None:
        warning = re.sub(r"\s*No diagnosis is given\.?\s*$", "", str(warning)).rstrip(". ")
        lines.append(f"⚠ **The model would normally abstain on this image:** "
                     f"{warning}. Shown because *Predict even if the image "
                     "looks unusual* is ticked: treat this result with extra caution.")
    if d.prediction is not None:
        malignant = "+".join(MALIGNANT_DX)
        lines.append(f"**Malignant probability** ({malignant}): **{percent(d.malignant)}**")
    tone = describe_skin_tone(getattr(d, "skin_tone", None))
    lines.append(f"**Skin-tone estimate:** {tone} — from the skin around the lesion (ITA), an "
                 "imaging proxy, not a measurement of the patient" if tone else
                 "**Skin-tone estimate:** not estimated (the model abstained)"
                 if d.prediction is None else
                 "**Skin-tone estimate:** not available for this model version")
    calibrated = getattr(d, "calibrated", False)
    lines.append("Probabilities are temperature-calibrated." if calibrated else
                 "Probabilities are *not* calibrated (no fitted temperature in these weights).")
    if saliency_caption:
        lines.append(f"Saliency: {saliency_caption}. Left, the image; right, where the "
                     "classifier's evidence for that answer lies (bright = strong, outlined: "
                     "the strongest half). It shows where the model looked, not why.")
    lines.append(f"> {DISCLAIMER}")
    return "\n\n".join(lines)


def jsonable(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


def group_tables(metrics: Any, path: str = "") -> list[tuple[str, dict[str, dict]]]:
    """Every dict in `metrics` keyed by skin-tone group (at least two of TONE_GROUPS), as
    (where, {group: its metrics}) — the per-skin-tone results, however the evaluator nests
    them."""
    found = []
    if isinstance(metrics, dict):
        groups = {k: v for k, v in metrics.items() if k in TONE_GROUPS or k == "unknown"}
        if len([k for k in groups if k in TONE_GROUPS]) >= 2 and all(
                isinstance(v, dict) for v in groups.values()):
            found.append((path, groups))
        for key, value in metrics.items():
            if key not in groups:
                found += group_tables(value, f"{path}.{key}" if path else str(key))
    return found


def scalar_rows(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [row for key, item in value.items()
                for row in scalar_rows(item, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [(prefix, value)]
    return []


def shown(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def metrics_table(metrics: dict[str, Any], limit: int = 40) -> str:
    """Markdown tables of a (nested) metrics dict: one per per-skin-tone block (groups as
    rows), then the other scalar entries."""
    parts = []
    skip = set()
    for where, groups in group_tables(metrics):
        skip.add(where)
        columns: list[str] = []
        for values in groups.values():
            columns += [k for k, _ in scalar_rows(values) if k not in columns]
        columns = columns[:8]
        title = f"**Per skin-tone group{' (' + where + ')' if where else ''}**"
        lines = [title, "", "| group | " + " | ".join(columns) + " |",
                 "|---" * (len(columns) + 1) + "|"]
        for group, values in groups.items():
            flat = dict(scalar_rows(values))
            lines.append(f"| {group} | " + " | ".join(shown(flat[c]) if c in flat else "–"
                                                     for c in columns) + " |")
        parts.append("\n".join(lines))
    rows = [(key, value) for key, value in scalar_rows(metrics)
            if not any(key == w or key.startswith(w + ".") for w in skip if w)
            and not (("" in skip) and key.split(".")[0] in (*TONE_GROUPS, "unknown"))]
    if rows:
        cells = [(key, shown(value)) for key, value in rows[:limit]]
        if len(rows) > limit:
            cells.append((f"… {len(rows) - limit} more in metrics.json", ""))
        pairs = 3 if len(cells) > 9 else 1  # long lists side by side, not one tall column
        height = math.ceil(len(cells) / pairs)
        lines = ["| measure | value " * pairs + "|", "|---|---" * pairs + "|"]
        for r in range(height):
            row = [cells[c * height + r] if c * height + r < len(cells) else ("", "")
                   for c in range(pairs)]
            lines.append("| " + " | ".join(f"{k} | {v}" for k, v in row) + " |")
        parts.insert(0, "\n".join(lines))
    return "\n\n".join(parts) if parts else "_no numeric results_"


def display_source(pipe: Any) -> str:
    """Where the weights came from, with this checkout's folder left out of the paths."""
    return str(pipe.source).replace(str(ROOT) + os.sep, "")


def inline_images(text: str, folder: Path, max_width: int = 900) -> str:
    """Markdown images with paths relative to the weights folder (which the browser cannot
    reach) as inline JPEG data; anything unreadable or outside the folder as plain text."""
    import base64

    root = folder.resolve()

    def replace(match: re.Match) -> str:
        alt, target = match.group(1), match.group(2)
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http(s):, data: … as they are
            return match.group(0)
        try:
            path = (root / target).resolve()
            if root not in path.parents or path.suffix.lower() not in EXAMPLE_SUFFIXES:
                raise ValueError(target)
            with Image.open(path) as image:
                image = image.convert("RGB")
                if image.width > max_width:
                    image = image.resize((max_width, round(image.height * max_width /
                                                           image.width)),
                                         Image.Resampling.LANCZOS)
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=85)
        except (OSError, ValueError):
            return f"*({alt or target})*"
        data = base64.b64encode(buffer.getvalue()).decode()
        return f"![{alt}](data:image/jpeg;base64,{data})"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", replace, text)


def model_card(pipe: Any) -> str:
    """MODEL_CARD.md shipped with the weights, else a summary built from the config."""
    folder = Path(getattr(pipe, "weights_path", "") or ".")
    source = (f"**Weights in use:** {display_source(pipe)} · device {pipe.device} · "
              f"classndiff {__version__}")
    card = folder / "MODEL_CARD.md"
    if card.is_file():
        text = re.sub(r"\A---\n.*?\n---\n", "", card.read_text(), flags=re.S)  # front matter
        return f"{source}\n\n{inline_images(text, folder)}"
    m, t = pipe.config.model, pipe.config.train
    space = f"latent space ({m.vae})" if m.vae else f"pixel space, {m.image_size} px"
    training = pipe.config.extra.get("training", {})
    parts = [
        source,
        "## Class-N-Diff: one model that diagnoses and generates",
        "A class-conditioned diffusion transformer (DiT) and a timm lesion classifier trained "
        "jointly: the classifier's loss on the denoiser's one-step estimate of the clean image "
        "is added to the diffusion loss, so generation is steered by what makes lesions "
        "classifiable (Imran & Munia, EMBC 2025). Conditions: diagnosis, skin-tone group, sex, "
        "each droppable (classifier-free guidance).",
        "### Model",
        f"- Denoiser: DiT, {space}, patch {m.patch_size}, hidden {m.hidden_size}, depth {m.depth}",
        f"- Classifier: {m.classifier_backbone} at {m.classifier_image_size} px "
        f"(input read at {m.pixel_size} px)",
        f"- Sampling: {pipe.config.sampling.sampler}, {pipe.config.sampling.steps} steps, "
        f"guidance {pipe.config.sampling.guidance_scale}",
        "### Data and training",
        "- HAM10000 (10,015 dermoscopic images, 7 diagnoses), lesion-grouped train / val / test "
        "split; 94 % of images are lighter skin, so per-tone results for darker skin rest on "
        "very few images.",
        f"- Trained {training.get('step', '?')} steps (batch {t.batch_size}, λ = {t.lambda_cls}, "
        f"condition dropout {t.cond_drop_prob}, {t.mixed_precision} mixed precision).",
        f"- Calibration: {'temperature ' + str(pipe.temperature) if pipe.calibrated else 'none'}",
    ]
    per_tone = False
    for name, title in (("metrics.json", "Measured results (test split)"),
                        ("best_val.json", "Validation results during training")):
        path = folder / name
        if path.is_file():
            try:
                metrics = json.loads(path.read_text())
                parts += [f"### {title}", metrics_table(metrics)]
                per_tone = per_tone or bool(group_tables(metrics))
            except (OSError, ValueError):
                pass
    if not per_tone:
        parts += ["### Per skin-tone results",
                  "Not measured for these weights yet. HAM10000 has very few images of darker "
                  "skin, so expect the model to be least reliable there."]
    parts += [
        "### Limitations",
        "- A research demo, **not a medical device**: not validated clinically, not for "
        "diagnosis, screening or treatment.",
        "- Trained on one public dataset of dermoscopic images from two sites; other cameras, "
        "clinical (non-dermoscopic) photos, and darker skin are under-represented or absent.",
        "- Generated images are synthetic and low resolution; they are stamped SYNTHETIC and "
        "must never be presented as patient data.",
        "### Licence",
        "Code Apache-2.0. Weights trained on HAM10000 are **CC BY-NC 4.0**: non-commercial use "
        "only, crediting the dataset authors.",
        "### Citation",
        "- A. Imran, N. Munia. *Class-N-Diff: Classification-Induced Diffusion Model Can Make "
        "Fair Skin Cancer Diagnosis.* EMBC 2025. arXiv:2510.16887.",
        "- P. Tschandl, C. Rosendahl, H. Kittler. *The HAM10000 dataset, a large collection of "
        "multi-source dermatoscopic images of common pigmented skin lesions.* Scientific Data 5, "
        "180161 (2018).",
    ]
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- model calls
HOLDER: ModelHolder | None = None  # set by build_demo; module-level so spaces.GPU can reach it


def _diagnose_kwargs(pipe: Any, method: str, target: str, opacity: float,
                     predict_anyway: bool = False) -> dict[str, Any]:
    """The keyword arguments this pipeline's diagnose() accepts (older ones: fewer)."""
    import inspect

    params = inspect.signature(pipe.diagnose).parameters
    wanted = {
        "saliency": True,
        "cam_method": method,
        "cam_target": None if target in (None, "", PREDICTED) else target,
        "opacity": float(opacity),
        "abstain": not predict_anyway,
    }
    return {k: v for k, v in wanted.items() if k in params}


@gpu(duration=30)
def run_diagnose(image: bytes | Image.Image, method: str, target: str, opacity: float,
                 predict_anyway: bool = False) -> Any:
    pipe = HOLDER.get()  # type: ignore[union-attr]
    return pipe.diagnose(image, **_diagnose_kwargs(pipe, method, target, opacity,
                                                   predict_anyway))


@gpu(duration=120)
def run_generate(kwargs: dict[str, Any], progress: Callable[[int, int], None] | None) -> Any:
    return HOLDER.get().generate(progress=progress, **kwargs)  # type: ignore[union-attr]


@gpu(duration=30)
def run_counterfactual(image: bytes, target: str | None, strength: float) -> Any:
    return HOLDER.get().counterfactual(image, target_dx=target,  # type: ignore[union-attr]
                                       strength=float(strength))


def counterfactual_markdown(cf: Any) -> str:
    if cf.reason:
        reason = cf.reason.rstrip(". ")
        return (f"### No counterfactual: the model abstains\n\n**Why:** {reason}.\n\n"
                f"> {DISCLAIMER}")
    before = cf.probabilities_before.get(cf.target, 0.0)
    after = cf.probabilities_after.get(cf.target, 0.0)
    return "\n\n".join([
        f"### Shown as {dx_label(cf.target)} (SYNTHETIC)",
        f"The model's P({cf.target}): **{percent(before)} → {percent(after)}** "
        f"(strength {cf.settings['strength']:g}, {cf.settings['seconds']:.1f} s).",
        "How to read it: the middle image is the lesion redrawn by the generator as the model "
        "pictures this diagnosis; the skin around it is the upload's own. The right image "
        "shows what changed (bright = more). It is the model's idea of the class, not a "
        "prediction of how this lesion will evolve.",
        f"> {DISCLAIMER}"])


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is meant for the user (bad upload, bad argument)."""
    errors: tuple[type[BaseException], ...] = (ImageInputError,)
    if HOLDER is not None and HOLDER.pipe is not None:
        from classndiff.pipelines.pipeline import ClassNDiffArgumentError

        errors += (ClassNDiffArgumentError,)
    return errors


# --------------------------------------------------------------------------- the UI
def build_demo(holder: ModelHolder, temp: TempFiles | None = None) -> gr.Blocks:
    global HOLDER
    HOLDER = holder
    temp = temp or TempFiles()
    memory = UploadMemory(ttl=temp.ttl)
    config = local_config(holder.source)
    sampling = config.sampling
    max_steps = min(sampling.max_steps, config.model.num_train_timesteps)
    examples = example_files()

    # ---- diagnose
    def show(d: Any, data: bytes) -> tuple:
        overlay, caption = saliency_overlay(getattr(d, "saliency", None))
        original = center_square(load_image(data), DISPLAY_SIZE)
        if overlay is None:  # no saliency (abstained, or an older pipeline): the upload
            overlay = original
        else:
            overlay = saliency_panel(original, overlay,
                                     getattr(getattr(d, "saliency", None), "map", None))
        details = {**jsonable(d.to_dict()), "disclaimer": "research demo, not a medical device"}
        probabilities = {dx_label(code): p for code, p in d.probabilities.items()}
        if d.prediction is None:  # abstained: a number beside an abstention reads as the answer
            probabilities = None
            for key in WITHHELD_WHEN_ABSTAINING:
                details.pop(key, None)
            details["withheld"] = "the model abstains: no class or malignant probability"
        return probabilities, diagnosis_markdown(d, caption), temp.save_png(overlay), details

    def analyse(data: bytes, method: str, target: str, opacity: float, predict_anyway: bool,
                progress: gr.Progress) -> tuple:
        holder.get(progress)
        try:
            return show(run_diagnose(data, method, target, opacity, bool(predict_anyway)), data)
        except user_errors() as error:
            raise gr.Error(str(error), title="This image cannot be diagnosed") from None

    def read_image(key: str | None) -> bytes:
        """The upload's bytes: from disk the first time (then deleted), later from memory."""
        data = memory.get(key) if key else None  # uploads are stored by content hash
        if data is None and key and Path(key).is_file():
            data = Path(key).read_bytes()
            memory.put(key, data)
            temp.discard_upload(key)  # nothing uploaded is kept on disk after the request
            return data
        if data is None:
            raise gr.Error("Upload a dermoscopic image (JPEG, PNG, …) first." if not key else
                           "This upload has expired; please upload the image again.",
                           title="No image")
        return data

    def validate(image: str | None, cam_method: str, cam_target: str, opacity: float,
                 predict_anyway: bool, last: str | None) -> list:
        """Checks the upload before the queue, so a bad file gets its message right on the
        upload box (and a ValidationError through the API)."""
        message = None
        key = str(image) if image else last
        if not key:
            message = "Upload a dermoscopic image (JPEG, PNG, …) first."
        elif memory.get(key) is not None:
            pass  # read and checked before
        elif Path(key).is_file():
            try:
                load_image(key, draft_size=DISPLAY_SIZE)  # JPEGs decode at a reduced scale
            except ImageInputError as error:
                # Users who upload the same file share its path: another request may have
                # just read it into memory and deleted it. Then it is fine.
                if memory.get(key) is None:
                    message = str(error)
                    temp.discard_upload(key)  # not kept either
        else:
            message = "This upload has expired; please upload the image again."
        return [gr.validate(message is None, message or ""), *(gr.validate(True, "")
                                                              for _ in range(5))]

    def diagnose(image: str | None, cam_method: str = "gradcam", cam_target: str = PREDICTED,
                 opacity: float = 0.5, predict_anyway: bool = False, last: str | None = None,
                 progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008 - gradio idiom
        """Diagnose one dermoscopic image: class probabilities, malignant probability,
        prediction or abstention, saliency overlay and skin-tone estimate. `predict_anyway`:
        give the prediction (with a warning) even where the model would abstain."""
        key = str(image) if image else last  # no file: re-run the last image (new settings)
        data = read_image(key)
        try:
            return (*analyse(data, cam_method, cam_target, opacity, predict_anyway, progress),
                    key)
        except gr.Error:
            memory.discard(key)
            raise

    def redraw(image: str | None, cam_method: str, cam_target: str, opacity: float,
               predict_anyway: bool, last: str | None,
               progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
        if not (image or last):  # settings changed before any image: nothing to do
            return tuple(gr.skip() for _ in range(5))
        return diagnose(image, cam_method, cam_target, opacity, predict_anyway, last, progress)

    def clear_results() -> tuple:
        return None, EMPTY_SUMMARY, None, None

    def diagnose_example(cam_method: str, cam_target: str, opacity: float, predict_anyway: bool,
                         evt: gr.SelectData, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
        path = str(examples[evt.index])
        return (None, *diagnose(path, cam_method, cam_target, opacity, predict_anyway, None,
                                progress))

    # ---- counterfactual
    def counterfactual(image: str | None, target: str = AUTO, strength: float = 0.6,
                       last: str | None = None,
                       progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
        """What the uploaded lesion would have to look like to be called `target` (AUTO:
        the most likely malignant class for a benign prediction, nv for a malignant one):
        original, counterfactual (stamped SYNTHETIC) and the change, with the model's
        probability of the target before and after."""
        data = read_image(str(image) if image else last)
        holder.get(progress)
        try:
            cf = run_counterfactual(data, None if target == AUTO else target, strength)
        except user_errors() as error:
            raise gr.Error(str(error), title="No counterfactual for this image") from None
        if cf.reason:
            return [], counterfactual_markdown(cf)
        settings = {**cf.settings, "weights": public_source(cf.settings.get("weights"))}
        gallery = [
            (temp.save_png(cf.original.resize((DISPLAY_SIZE, DISPLAY_SIZE),
                                              Image.Resampling.LANCZOS)), "original"),
            (temp.save_png(stamp_synthetic(cf.image), png_metadata(settings)),
             f"as {cf.target} (SYNTHETIC)"),
            (temp.save_png(cf.difference.resize((DISPLAY_SIZE, DISPLAY_SIZE),
                                                Image.Resampling.NEAREST)), "change"),
        ]
        return gallery, counterfactual_markdown(cf)

    # ---- generate
    def generate(dx: str = "mel", skin_tone: str = ANY, sex: str = ANY, num_images: int = 4,
                 sampler: str = sampling.sampler, steps: int = sampling.steps,
                 guidance_scale: float = sampling.guidance_scale, seed: float | None = -1,
                 keep_only_agreeing: bool = False) -> Any:
        """Generate synthetic lesions, each scored by the model's own classifier; yields
        progress, then the gallery, a zip of the batch (stamped PNGs + settings JSON) and the
        settings. Stop (or a client that leaves) cancels it at the next sampling step."""
        budget = CPU_STEP_BUDGET * (1 if cpu_only() else 8)
        if steps * num_images > budget:
            raise gr.Error(f"{num_images} images × {steps} steps is more than this machine "
                           f"serves in reasonable time (steps × images ≤ {budget}); use fewer "
                           "images or steps (dpm++ needs only ~20).", title="Too long")
        kwargs = dict(dx=None if dx == ANY else dx,
                      skin_tone=None if skin_tone == ANY else skin_tone,
                      sex=None if sex == ANY else sex, num_images=num_images, sampler=sampler,
                      steps=steps, guidance_scale=guidance_scale,
                      seed=None if seed is None or seed == "" or seed < 0 else int(seed),
                      keep_only_agreeing=keep_only_agreeing)
        cancelled = threading.Event()
        state: dict[str, Any] = {"step": 0, "total": steps}

        def on_step(step: int, total: int) -> None:
            if cancelled.is_set():
                raise GenerationCancelled
            state.update(step=step, total=total)

        def work() -> None:
            try:
                holder.get()
                state["out"] = run_generate(kwargs, None if ZERO_GPU else on_step)
            except BaseException as error:  # noqa: BLE001 - handed to the request below
                state["error"] = error

        worker = threading.Thread(target=work, daemon=True, name="generate")
        worker.start()
        started = time.perf_counter()
        try:
            while worker.is_alive():
                worker.join(0.5)
                yield (gr.skip(), gr.skip(), progress_line(state["step"], state["total"],
                                                           time.perf_counter() - started),
                       gr.skip())
        finally:
            cancelled.set()  # Stop, or a client that left: the sampler ends at its next step
        error = state.get("error")
        if isinstance(error, user_errors()):
            raise gr.Error(str(error), title="Cannot generate with these settings") from None
        if error is not None:
            raise error
        yield generation_outputs(state["out"])

    def progress_line(step: int, total: int, elapsed: float) -> str:
        """Where sampling is, and the time left at the pace so far (once it is measurable)."""
        line = f"Sampling… step {step} of {total}"
        if 0 < step < total and elapsed > 1:
            line += f", about {max(1, round(elapsed / step * (total - step)))} s left"
        return line + " (*Stop* cancels)"

    def generation_outputs(out: Any) -> tuple:
        settings = {**out.settings, "weights": public_source(out.settings.get("weights"))}
        gallery = []
        for image, confidence, predicted in zip(out.images, out.confidences, out.predicted):
            # Short: a gallery thumbnail shows one line of caption.
            if settings["dx"]:
                agree = "✓" if predicted == settings["dx"] else f"≠ {predicted}"
                caption = f"P({settings['dx']}) {percent(confidence)} {agree}"
            else:
                caption = f"{predicted} {percent(confidence)}"
            gallery.append((temp.save_png(stamp_synthetic(image),
                                          png_metadata(settings)), caption))
        name = "_".join(str(settings.get(k) or "any") for k in ("dx", "skin_tone", "sex"))
        sidecar = {
            **settings,
            "images": [
                {"file": f"synthetic_{name}_seed{s}.png", "seed": s, "predicted": p,
                 "confidence": round(c, 4)}
                for s, p, c in zip(out.seeds, out.predicted, out.confidences)
            ],
            "note": "SYNTHETIC images made by Class-N-Diff (research demo, not patient data). "
                    "Weights trained on HAM10000: CC BY-NC 4.0.",
        }
        zip_path = temp.new_file(f"classndiff_synthetic_{name}_seed{settings['seed']}.zip")
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
            for entry, image in zip(sidecar["images"], out.images):
                buffer = io.BytesIO()
                stamp_synthetic(image).save(buffer, format="PNG",
                                            pnginfo=png_metadata({**settings,
                                                                  "seed": entry["seed"]}))
                archive.writestr(entry["file"], buffer.getvalue())
            archive.writestr("settings.json", json.dumps(sidecar, indent=2) + "\n")
        asked = settings["num_images"]
        summary = [f"**{len(out.images)} synthetic image(s)** in {settings['seconds']:.1f} s · "
                   f"seed **{settings['seed']}** (enter it to reproduce this batch; image *i* "
                   "uses seed + *i*) · "
                   f"{settings['sampler']}, {settings['steps']} steps, guidance "
                   f"{settings['guidance_scale']:g}"]
        if len(out.images) < asked:
            summary.append(f"Only {len(out.images)} of {settings['candidates_drawn']} candidates "
                           f"were classified as {settings['dx']}; untick the filter or raise "
                           "the guidance scale for more.")
        summary.append(f"> {DISCLAIMER} Generated images are synthetic: never present them as "
                       "patient data.")
        return gallery, str(zip_path), "\n\n".join(summary), sidecar

    # ---- model tab and status
    def status_and_card() -> tuple[str, str]:
        try:
            pipe = holder.get()
        except gr.Error as error:
            message = f"⚠ {error.message}"
            return message, message
        status = (f"Model ready · {display_source(pipe)} · {pipe.device} "
                  f"(loaded in {holder.seconds} s)")
        return status, model_card(pipe)

    with gr.Blocks(title="Class-N-Diff — research demo", analytics_enabled=False,
                   delete_cache=(60, int(temp.ttl))) as demo:
        gr.Markdown(
            "# Class-N-Diff · dermoscopy research demo\n"
            "One jointly trained model that **diagnoses** a dermoscopic image among 7 HAM10000 "
            "classes and **generates** synthetic lesions by diagnosis, skin tone and sex.\n\n"
            f"> {DISCLAIMER}")
        status = gr.Markdown("Model: loading in the background…", elem_id="model-status")
        last_image = gr.State(None, time_to_live=temp.ttl)  # a key of `memory`

        with gr.Tab("Diagnose", id="diagnose"):
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.File(label="Dermoscopic image (JPEG, PNG, TIFF, BMP, WebP)",
                                     type="filepath", elem_id="diagnose-upload", height=150)
                    diagnose_button = gr.Button("Diagnose", variant="primary",
                                                elem_id="diagnose-button")
                    predict_anyway = gr.Checkbox(
                        False, label="Predict even if the image looks unusual",
                        info="Off: the model declines images unlike its training data "
                        "(e.g. other cameras, non-dermoscopic photos). On: its guess, with a "
                        "warning.",
                        elem_id="predict-anyway")
                    with gr.Accordion("Saliency settings", open=False):
                        cam_method = gr.Dropdown([(CAM_LABELS[m], m) for m in CAM_METHODS],
                                                 value=CAM_METHODS[0], label="Method",
                                                 elem_id="cam-method")
                        cam_target = gr.Dropdown(
                            [("predicted class", PREDICTED),
                             ("malignant (mel+bcc+akiec vs benign)", MALIGNANT),
                             *((dx_label(c), c) for c in DX_CODES)],
                            value=PREDICTED, label="Explain", elem_id="cam-target")
                        opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity",
                                            elem_id="cam-opacity")
                with gr.Column(scale=2):
                    summary = gr.Markdown(EMPTY_SUMMARY, label="summary",
                                          elem_id="diagnose-summary")
                    with gr.Row():
                        # No big heading: when the model abstains there is no top class.
                        probabilities = gr.Label(num_top_classes=7, label="Class probabilities",
                                                 show_heading=False, elem_id="probabilities")
                        overlay = gr.Image(label="Image and saliency map (colour scale at right)",
                                           type="filepath", format="png", interactive=False,
                                           elem_id="saliency", height=300)
                    with gr.Accordion("Details (JSON)", open=False):
                        details = gr.JSON(label="diagnose() result")
                    with gr.Accordion("What would it have to look like to be called …? "
                                      "(counterfactual)", open=False, elem_id="cf"):
                        with gr.Row():
                            cf_target = gr.Dropdown(
                                [("the other side (benign ↔ malignant)", AUTO),
                                 *((dx_label(c), c) for c in DX_CODES)], value=AUTO,
                                label="Show as", elem_id="cf-target")
                            cf_strength = gr.Slider(0.2, 1.0, value=0.6, step=0.05,
                                                    label="Strength (how much may change)",
                                                    elem_id="cf-strength")
                        cf_button = gr.Button("Show counterfactual", elem_id="cf-button")
                        cf_gallery = gr.Gallery(label="Original · counterfactual · change",
                                                columns=3, format="png", interactive=False,
                                                allow_preview=False, elem_id="cf-gallery",
                                                height="auto")
                        cf_summary = gr.Markdown("", elem_id="cf-summary")
                    if examples:  # below the results: on a phone the answer comes first
                        example_gallery = gr.Gallery(
                            [(temp.save_png(stamp_synthetic(Image.open(p))), p.stem)
                             for p in examples], label="Synthetic examples "
                            "(made by the model): click one", columns=7, height=160,
                            allow_preview=False, interactive=False, elem_id="examples")
            outputs = [probabilities, summary, overlay, details, last_image]
            inputs = [upload, cam_method, cam_target, opacity, predict_anyway, last_image]
            # Clear the previous result first, so that a failed upload never leaves another
            # image's result on screen.
            gr.on([upload.upload, diagnose_button.click], clear_results, None, outputs[:4],
                  queue=False, api_name="clear", api_visibility="private",
                  show_progress="hidden").then(
                diagnose, inputs, outputs, api_name="diagnose", concurrency_id="diagnose",
                validator=validate)
            upload.clear(clear_results, None, outputs[:4], queue=False,
                         api_name="clear_upload", api_visibility="private")
            gr.on([cam_method.change, cam_target.change, opacity.release,
                   predict_anyway.change], redraw, inputs,
                  outputs, api_name="redraw", api_visibility="private",
                  concurrency_id="diagnose",
                  show_progress="minimal", trigger_mode="always_last")
            if examples:
                example_gallery.select(diagnose_example,
                                       [cam_method, cam_target, opacity, predict_anyway],
                                       [upload, *outputs], api_name="diagnose_example",
                                       api_visibility="private", concurrency_id="diagnose")

            cf_button.click(counterfactual, [upload, cf_target, cf_strength, last_image],
                            [cf_gallery, cf_summary], api_name="counterfactual",
                            concurrency_id="counterfactual")

        with gr.Tab("Generate", id="generate"):
            with gr.Row():
                with gr.Column(scale=1):
                    g_dx = gr.Dropdown([(ANY, ANY), *((dx_label(c), c) for c in DX_CODES)],
                                       value="mel", label="Diagnosis", elem_id="gen-dx")
                    g_tone = gr.Dropdown([ANY, *TONE_GROUPS], value=ANY, label="Skin-tone group",
                                         elem_id="gen-tone")
                    g_sex = gr.Dropdown([ANY, *SEXES], value=ANY, label="Sex", elem_id="gen-sex")
                    g_num = gr.Slider(1, sampling.max_images, value=min(4, sampling.max_images),
                                      step=1, label="Number of images", elem_id="gen-num")
                    with gr.Row():
                        g_sampler = gr.Dropdown(list(SAMPLERS), value=sampling.sampler,
                                                label="Sampler", elem_id="gen-sampler",
                                                info="dpm++ ≈20 steps · ddim ≈50 · ddpm ≈250; "
                                                "images × steps ≤ 1000 on a CPU")
                        g_steps = gr.Slider(1, max_steps, value=min(sampling.steps, max_steps),
                                            step=1, label="Steps", elem_id="gen-steps")
                    g_guidance = gr.Slider(0, 10, value=sampling.guidance_scale, step=0.25,
                                           label="Guidance scale", elem_id="gen-guidance")
                    # -1, not blank: the browser sends a blank Number as 0.
                    g_seed = gr.Number(-1, precision=0, minimum=-1, label="Seed",
                                       info="-1 = random; the seed used is shown with the "
                                       "results", elem_id="gen-seed")
                    g_agree = gr.Checkbox(False, label="Keep only images the classifier agrees "
                                          "with", elem_id="gen-agree")
                    with gr.Row():
                        generate_button = gr.Button("Generate", variant="primary",
                                                    elem_id="generate-button")
                        stop_button = gr.Button("Stop", variant="stop", elem_id="stop-button")
                with gr.Column(scale=2):
                    g_summary = gr.Markdown("Generated images are stamped SYNTHETIC.",
                                            label="summary", elem_id="gen-summary")
                    # No label badge: it would cover the first image's SYNTHETIC stamp.
                    gallery = gr.Gallery(label="Synthetic images", show_label=False, columns=4,
                                         format="png", object_fit="contain",
                                         elem_id="gen-gallery", interactive=False, height="auto")
                    g_zip = gr.File(label="Batch download (zip: PNGs + settings.json)",
                                    interactive=False, elem_id="gen-zip")
                    with gr.Accordion("Settings (JSON)", open=False):
                        g_settings = gr.JSON(label="settings")
            # Its own queue: a diagnosis never waits behind a long generation.
            generation = generate_button.click(
                generate,
                [g_dx, g_tone, g_sex, g_num, g_sampler, g_steps, g_guidance, g_seed, g_agree],
                [gallery, g_zip, g_summary, g_settings],
                api_name="generate", concurrency_id="generate", concurrency_limit=1)
            stop_button.click(None, None, None, cancels=[generation], api_name="stop",
                              api_visibility="private")

        with gr.Tab("Model", id="model"):
            card = gr.Markdown("Loading the model card…", elem_id="model-card")

        demo.load(status_and_card, None, [status, card], api_name="status",
                  api_visibility="private", concurrency_limit=None, show_progress="hidden")
    return demo


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    source = weights_source()
    problem = check_weights_source(source)
    if problem:
        sys.exit(f"classndiff app: {problem}")
    on_spaces = bool(os.environ.get("SPACE_ID"))
    server_name = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if on_spaces else "127.0.0.1")
    server_port = int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
    temp = TempFiles(ttl=float(os.environ.get("CLASSNDIFF_FILE_TTL", 300)))
    holder = ModelHolder(source)
    # Diagnosis is what a first visitor does: the model loads from now on, while the page is
    # built and served (benchmarks/app_startup.py: first diagnosis 5.9 → 5.5 s after the
    # process starts; the page 2.1 → 2.7 s).
    holder.start()
    demo = build_demo(holder, temp)
    if ZERO_GPU:  # `spaces` packs the model's tensors when the app launches
        holder.wait()  # a failure is shown in the UI, as elsewhere
    # SIGTERM (docker stop, Spaces) exits like Ctrl-C, so atexit removes the temp folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # One run per queue at a time (diagnose, generate, counterfactual each have their own),
    # a bounded queue for everyone else.
    demo.queue(max_size=64, default_concurrency_limit=1)
    # Gradio's default font, with its bold face too (else bold text mixes in fallback glyphs).
    theme = gr.themes.Default(font=[gr.themes.LocalFont("Source Sans Pro",
                                                        weights=(400, 600, 700)),
                                    "ui-sans-serif", "system-ui", "sans-serif"])
    demo.launch(
        theme=theme, css=CSS, head=HEAD, server_name=server_name, server_port=server_port,
        share=False,
        max_file_size=os.environ.get("CLASSNDIFF_MAX_UPLOAD", "20mb"),
        show_error=False, footer_links=["api"], run_history=False, ssr_mode=False,
        mcp_server=False, pwa=False, enable_monitoring=False, prevent_thread_lock=True,
    )
    temp.start()
    demo.block_thread()


if __name__ == "__main__":
    main()
