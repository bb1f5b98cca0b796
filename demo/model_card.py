"""The Model tab's text: the weights' MODEL_CARD.md with its figures inlined, and their
measured metrics as readable tables."""

from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image

from classndiff.labels import TONE_GROUPS
from classndiff.version import __version__
from demo.settings import EXAMPLE_SUFFIXES, ROOT


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


# The Model tab's fallback text when the weights carry no MODEL_CARD.md: a template.
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
    space = (f"latent space ({m.vae})" if m.vae else
             f"the latents of its own autoencoder, decoded to {m.generated_size} px"
             if m.vae_config else f"pixel space, {m.image_size} px")
    training = pipe.config.training
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
        f"- Trained {training.step if training else '?'} steps (batch {t.batch_size}, "
        f"λ = {t.lambda_cls}, "
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
