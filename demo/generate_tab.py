"""The Generate tab: synthetic lesions by diagnosis, skin tone and sex, each stamped
SYNTHETIC, with a zip of the batch (stamped PNGs with their settings in PNG metadata, and
settings.json). Its own queue, a Stop button, and a step budget this hardware can serve.
API name: /generate."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import gradio as gr

from classndiff.config import SamplingConfig, guidance_interval_text
from classndiff.labels import DX_CODES, SEXES, TONE_GROUPS
from demo.render import percent, png_metadata, public_source, stamp_synthetic
from demo.runtime import (
    GenerationCancelled,
    ModelHolder,
    TempFiles,
    on_gpu,
    run_generate,
    user_errors,
)
from demo.settings import ANY, CPU_STEP_BUDGET, DISCLAIMER, SAMPLERS, ZERO_GPU, dx_label


def progress_line(step: int, total: int, elapsed: float) -> str:
    """Where sampling is, and the time left at the pace so far (once it is measurable)."""
    line = f"Sampling… step {step} of {total}"
    if 0 < step < total and elapsed > 1:
        line += f", about {max(1, round(elapsed / step * (total - step)))} s left"
    return line + " (*Stop* cancels)"


class GenerateTab:
    def __init__(self, holder: ModelHolder, temp: TempFiles, sampling: SamplingConfig,
                 max_steps: int) -> None:
        self.holder = holder
        self.temp = temp
        self.sampling = sampling
        self.max_steps = max_steps

    def generate(self, dx: str = "mel", skin_tone: str = ANY, sex: str = ANY,
                 num_images: int = 4, sampler: str | None = None, steps: int | None = None,
                 guidance_scale: float | None = None, seed: float | None = -1,
                 keep_only_agreeing: bool = False) -> Iterator[tuple]:
        """Generate synthetic lesions, each scored by the model's own classifier; yields
        progress, then the gallery, a zip of the batch (stamped PNGs + settings JSON) and the
        settings. Stop (or a client that leaves) cancels it at the next sampling step."""
        sampler = sampler or self.sampling.sampler
        steps = steps or self.sampling.steps
        guidance_scale = self.sampling.guidance_scale if guidance_scale is None else guidance_scale
        budget = CPU_STEP_BUDGET * (8 if on_gpu(self.holder.get()) else 1)
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
                self.holder.get()
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
        yield self.outputs(state["out"])

    def outputs(self, out: Any) -> tuple:
        """Gallery (stamped, captioned with the classifier's view), zip, summary, settings."""
        settings = {**out.settings, "weights": public_source(out.settings.get("weights"))}
        gallery = []
        for image, confidence, predicted in zip(out.images, out.confidences, out.predicted):
            # Short: a gallery thumbnail shows one line of caption.
            if settings["dx"]:
                agree = "✓" if predicted == settings["dx"] else f"≠ {predicted}"
                caption = f"P({settings['dx']}) {percent(confidence)} {agree}"
            else:
                caption = f"{predicted} {percent(confidence)}"
            gallery.append((self.temp.save_png(stamp_synthetic(image),
                                               png_metadata(settings)), caption))
        sidecar = self.sidecar(out, settings)
        return gallery, self.batch_zip(out, settings, sidecar), self.summary(out, settings), \
            sidecar

    @staticmethod
    def name(settings: dict[str, Any]) -> str:
        return "_".join(str(settings.get(k) or "any") for k in ("dx", "skin_tone", "sex"))

    def sidecar(self, out: Any, settings: dict[str, Any]) -> dict[str, Any]:
        return {
            **settings,
            "images": [
                {"file": f"synthetic_{self.name(settings)}_seed{s}.png", "seed": s,
                 "predicted": p, "confidence": round(c, 4)}
                for s, p, c in zip(out.seeds, out.predicted, out.confidences)
            ],
            "note": "SYNTHETIC images made by Class-N-Diff (research demo, not patient data). "
                    "Weights trained on HAM10000: CC BY-NC 4.0.",
        }

    def batch_zip(self, out: Any, settings: dict[str, Any], sidecar: dict[str, Any]) -> str:
        zip_path = self.temp.new_file(
            f"classndiff_synthetic_{self.name(settings)}_seed{settings['seed']}.zip")
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
            for entry, image in zip(sidecar["images"], out.images):
                buffer = io.BytesIO()
                stamp_synthetic(image).save(buffer, format="PNG",
                                            pnginfo=png_metadata({**settings,
                                                                  "seed": entry["seed"]}))
                archive.writestr(entry["file"], buffer.getvalue())
            archive.writestr("settings.json", json.dumps(sidecar, indent=2) + "\n")
        return str(zip_path)

    @staticmethod
    def summary(out: Any, settings: dict[str, Any]) -> str:
        lines = [f"**{len(out.images)} synthetic image(s)** in {settings['seconds']:.1f} s · "
                 f"seed **{settings['seed']}** (enter it to reproduce this batch; image *i* "
                 "uses seed + *i*) · "
                 f"{settings['sampler']}, {settings['steps']} steps, guidance "
                 f"{settings['guidance_scale']:g}"
                 + _interval_note(settings.get("guidance_interval"))]
        if len(out.images) < settings["num_images"]:
            lines.append(f"Only {len(out.images)} of {settings['candidates_drawn']} candidates "
                         f"were classified as {settings['dx']}; untick the filter or raise "
                         "the guidance scale for more.")
        lines.append(f"> {DISCLAIMER} Generated images are synthetic: never present them as "
                     "patient data.")
        return "\n\n".join(lines)

    def build(self) -> None:
        """The tab's components and events (inside a `gr.Tab`)."""
        sampling, max_steps = self.sampling, self.max_steps
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
                                   info="-1 = random; the seed used is shown with the results",
                                   elem_id="gen-seed")
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
            self.generate,
            [g_dx, g_tone, g_sex, g_num, g_sampler, g_steps, g_guidance, g_seed, g_agree],
            [gallery, g_zip, g_summary, g_settings],
            api_name="generate", concurrency_id="generate", concurrency_limit=1)
        stop_button.click(None, None, None, cancels=[generation], api_name="stop",
                          api_visibility="private")


def _interval_note(interval: list | None) -> str:
    """Where guidance acted, when not at every step."""
    where = guidance_interval_text(*interval) if interval else None
    return f" (at noise levels {where} only: the noisiest steps unguided)" if where else ""
