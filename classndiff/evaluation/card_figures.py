"""Figures for the model card and the shipped examples, all made by the shipped model:

* `plot_training_log`: loss and validation accuracy / AUC over steps, from the trainer's
  `log.csv`;
* `sample_grid`: one row per diagnosis, columns per skin-tone group, fixed seeds;
* `select_examples`: generated lesions per class, chosen by the *independent evaluator's*
  agreement with the requested class (never by hand, never dataset images), each saved as a
  PNG with a JSON sidecar of the settings that reproduce it.

    classndiff figures weights/embedded --log weights/embedded/training_log.csv
    classndiff examples weights/embedded --evaluator weights/evaluator --output-dir examples
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from classndiff.evaluation.generation import sample_grid as labelled_grid
from classndiff.labels import DX_CODES, DX_NAMES, TONE_GROUPS
from classndiff.plots import pyplot, save_figure


def plot_training_log(log_csv: str | Path, png: str | Path) -> Path:
    """Two panels: training losses, and validation metrics, against the step."""
    plt = pyplot()
    rows = list(csv.DictReader(Path(log_csv).open()))

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return [p[0] for p in points], [p[1] for p in points]

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for key, label in (("mse", "denoising MSE"), ("cls_real", "CE, real images"),
                       ("cls_x0", "CE, denoised x̂0 (λ·w(t) weighted)"),
                       ("focus", "lesion focus (Dice loss, CAM vs mask)"),
                       ("adv", "adversarial tone head (CE)"),
                       ("consistency", "skin-tone consistency (KL, original → re-tinted)")):
        steps, values = series(key)
        if steps and any(v > 0 for v in values):  # a term that was off is not plotted
            left.plot(steps, values, label=label)
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_title("training losses")
    left.legend(fontsize=8)
    for key, label in (("val_accuracy", "accuracy"), ("val_balanced_accuracy", "balanced acc."),
                       ("val_macro_auc", "macro AUC"), ("val_malignant_auc", "malignant AUC"),
                       ("val_energy_in_mask", "CAM energy in lesion mask")):
        steps, values = series(key)
        if steps:
            right.plot(steps, values, marker="o", markersize=3, label=label)
    right.set_xlabel("step")
    right.set_title("validation split (EMA weights)")
    right.set_ylim(0.4, 1.0)
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="lower right")
    return save_figure(fig, png, dpi=100)


def sample_grid(pipe: Any, png: str | Path, per_tone: int = 2, seed: int = 0,
                steps: int | None = None, guidance_scale: float | None = None) -> Path:
    """Rows: the 7 diagnoses; columns: `per_tone` images for each skin-tone group, with
    the labels of `generation.sample_grid`."""
    images, dx, tone = [], [], []
    for c, code in enumerate(DX_CODES):
        for g, group in enumerate(TONE_GROUPS):
            out = pipe.generate(dx=code, skin_tone=group, num_images=per_tone, seed=seed,
                                steps=steps, guidance_scale=guidance_scale)
            images += out.images
            dx += [c] * len(out.images)
            tone += [g] * len(out.images)
    return labelled_grid(_as_tensor(images), np.array(dx), np.array(tone), png,
                         per_cell=per_tone)


def _as_tensor(images: list[Image.Image]) -> torch.Tensor:
    arrays = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def select_examples(pipe: Any, evaluator: Any, output_dir: str | Path, per_class: int = 2,
                    candidates: int = 6, seed: int = 0, steps: int | None = None,
                    guidance_scale: float | None = None) -> list[dict[str, Any]]:
    """Generate `candidates` images per class (skin tones in turn) and keep the `per_class`
    the pipeline does not abstain on (they are offered in the Diagnose tab), among those
    the ones the evaluator is most sure belong to the requested class. Writes `<dx>_<n>.png`
    + `.json` and returns the sidecars. Images the evaluator disagrees with are kept only
    when too few agree, and their sidecar says so."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    chosen: list[dict[str, Any]] = []
    for c, dx in enumerate(DX_CODES):
        pool = []
        for k in range(candidates):
            tone = TONE_GROUPS[k % len(TONE_GROUPS)]
            image_seed = seed + 1000 * c + k
            out = pipe.generate(dx=dx, skin_tone=tone, num_images=1, seed=image_seed,
                                steps=steps, guidance_scale=guidance_scale)
            pool.append((out.images[0], out.confidences[0], out.settings))
        _, probs = evaluator.embed(_as_tensor([p[0] for p in pool]))
        # Examples are offered in the Diagnose tab: prefer images the pipeline's own
        # "does this look like dermoscopy" check accepts, then the evaluator's agreement,
        # then the pipeline's own diagnosis agreeing (a teacher clicks "nv" and sees nv).
        predicted = [pipe.diagnose(p[0], skin_tone=False).prediction for p in pool]
        accepted = [prediction is not None for prediction in predicted]
        order = sorted(range(len(pool)),
                       key=lambda i: (accepted[i], int(probs[i].argmax()) == c,
                                      predicted[i] == dx, float(probs[i, c])),
                       reverse=True)
        for n, i in enumerate(order[:per_class], start=1):
            image, confidence, settings = pool[i]
            sidecar = {
                "file": f"{dx}_{n}.png",
                "diagnosis": dx,
                "diagnosis_name": DX_NAMES[dx],
                "skin_tone": settings["skin_tone"],
                "sex": settings["sex"],
                "seed": settings["seed"],
                "steps": settings["steps"],
                "guidance_scale": settings["guidance_scale"],
                "sampler": settings["sampler"],
                "weights": settings["weights"],
                "model_confidence": round(float(confidence), 4),
                "evaluator_probability": round(float(probs[i, c]), 4),
                "evaluator_agrees": bool(int(probs[i].argmax()) == c),
                "passes_abstention_check": bool(accepted[i]),
                "pipeline_prediction": predicted[i],
                "chosen_from": len(pool),
                "synthetic": True,
            }
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()  # the file itself says what it is
            info.add_text("synthetic", "true")
            info.add_text("classndiff_settings", json.dumps(sidecar))
            image.save(output_dir / sidecar["file"], pnginfo=info)
            (output_dir / f"{dx}_{n}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
            chosen.append(sidecar)
    return chosen
