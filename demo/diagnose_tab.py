"""The Diagnose tab: upload → probabilities (or the reason the model abstains), saliency
panel, skin tone, and the counterfactual ("what would it have to look like to be called …").
API names: /diagnose, /counterfactual."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from classndiff.config import SamplingConfig
from classndiff.labels import DX_CODES
from classndiff.pipelines.inputs import ImageInputError, center_square, load_image
from demo.render import (
    counterfactual_markdown,
    diagnosis_markdown,
    jsonable,
    png_metadata,
    public_source,
    saliency_overlay,
    saliency_panel,
    stamp_synthetic,
)
from demo.runtime import (
    ModelHolder,
    TempFiles,
    UploadMemory,
    run_counterfactual,
    run_diagnose,
    user_errors,
)
from demo.settings import (
    AUTO,
    CAM_LABELS,
    CAM_METHODS,
    DISPLAY_SIZE,
    EMPTY_SUMMARY,
    MALIGNANT,
    PREDICTED,
    WITHHELD_WHEN_ABSTAINING,
    dx_label,
)


class DiagnoseTab:
    """The tab's handlers (each a Gradio event; `diagnose` and `counterfactual` are API
    endpoints) and its layout. Uploads live in `memory` by key, never on disk past the
    request that read them."""

    def __init__(self, holder: ModelHolder, temp: TempFiles, examples: list[Path],
                 sampling: SamplingConfig | None = None) -> None:
        self.holder = holder
        self.sampling = sampling or SamplingConfig()  # the weights' defaults
        self.temp = temp
        self.memory = UploadMemory(ttl=temp.ttl)
        self.examples = examples

    # ------------------------------------------------------------------ handlers
    def show(self, d: Any, data: bytes) -> tuple:
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
        return probabilities, diagnosis_markdown(d, caption), self.temp.save_png(overlay), details

    def analyse(self, data: bytes, method: str, target: str, opacity: float,
                predict_anyway: bool, progress: gr.Progress) -> tuple:
        self.holder.get(progress)
        try:
            return self.show(run_diagnose(data, method, target, opacity, bool(predict_anyway)),
                             data)
        except user_errors() as error:
            raise gr.Error(str(error), title="This image cannot be diagnosed") from None

    def read_image(self, key: str | None) -> bytes:
        """The upload's bytes: from disk the first time (then deleted), later from memory."""
        data = self.memory.get(key) if key else None  # uploads are stored by content hash
        if data is None and key and Path(key).is_file():
            try:
                data = Path(key).read_bytes()
            except OSError:  # another request with the same upload read and deleted it
                data = self.memory.get(key)
            else:
                self.memory.put(key, data)
                self.temp.discard_upload(key)  # nothing uploaded is kept on disk after reading
        if data is None:
            raise gr.Error("Upload a dermoscopic image (JPEG, PNG, …) first." if not key else
                           "This upload has expired; please upload the image again.",
                           title="No image")
        return data

    def validate(self, image: str | None, cam_method: str, cam_target: str, opacity: float,
                 predict_anyway: bool, last: str | None) -> list:
        """Checks the upload before the queue, so a bad file gets its message right on the
        upload box (and a ValidationError through the API)."""
        message = None
        key = str(image) if image else last
        if not key:
            message = "Upload a dermoscopic image (JPEG, PNG, …) first."
        elif self.memory.get(key) is not None:
            pass  # read and checked before
        elif Path(key).is_file():
            try:
                load_image(key, draft_size=DISPLAY_SIZE)  # JPEGs decode at a reduced scale
            except ImageInputError as error:
                # Users who upload the same file share its path: another request may have
                # just read it into memory and deleted it. Then it is fine.
                if self.memory.get(key) is None:
                    message = str(error)
                    self.temp.discard_upload(key)  # not kept either
        elif self.memory.get(key) is None:  # (read by another request since the first look)
            message = "This upload has expired; please upload the image again."
        return [gr.validate(message is None, message or ""), *(gr.validate(True, "")
                                                              for _ in range(5))]

    def diagnose(self, image: str | None, cam_method: str = "gradcam",
                 cam_target: str = PREDICTED, opacity: float = 0.5,
                 predict_anyway: bool = False, last: str | None = None,
                 progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008 - gradio idiom
        """Diagnose one dermoscopic image: class probabilities, malignant probability,
        prediction or abstention, saliency overlay and skin-tone estimate. `predict_anyway`:
        give the prediction (with a warning) even where the model would abstain."""
        key = str(image) if image else last  # no file: re-run the last image (new settings)
        data = self.read_image(key)
        try:
            return (*self.analyse(data, cam_method, cam_target, opacity, predict_anyway,
                                  progress), key)
        except gr.Error:
            self.memory.discard(key)
            raise

    def redraw(self, image: str | None, cam_method: str, cam_target: str, opacity: float,
               predict_anyway: bool, last: str | None,
               progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
        if not (image or last):  # settings changed before any image: nothing to do
            return tuple(gr.skip() for _ in range(5))
        return self.diagnose(image, cam_method, cam_target, opacity, predict_anyway, last,
                             progress)

    @staticmethod
    def clear_results() -> tuple:
        return None, EMPTY_SUMMARY, None, None

    def diagnose_example(self, cam_method: str, cam_target: str, opacity: float,
                         predict_anyway: bool, evt: gr.SelectData,
                         progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
        path = str(self.examples[evt.index])
        return (None, *self.diagnose(path, cam_method, cam_target, opacity, predict_anyway,
                                     None, progress))

    def strength_slider(self, target: str, own: bool) -> gr.Slider:
        """While `own` is ticked the slider shows, greyed, the strength the weights chose for
        `target` (the general one for AUTO, whose target is known only after the diagnosis);
        unticked it is the user's, starting where it was."""
        if not own:
            return gr.Slider(interactive=True)
        # AUTO is no diagnosis, so it has no strength of its own: the general one.
        return gr.Slider(value=self.sampling.counterfactual_strength_for(target),
                         interactive=False)

    def counterfactual(self, image: str | None, target: str = AUTO,
                       strength: float | None = None, own_strength: bool = False,
                       last: str | None = None,
                       progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
        """What the uploaded lesion would have to look like to be called `target` (AUTO:
        the most likely malignant class for a benign prediction, nv for a malignant one):
        original, counterfactual (stamped SYNTHETIC) and the change, with the model's
        probability of the target before and after. `own_strength`: the strength the weights
        chose for the target on validation instead of `strength`."""
        data = self.read_image(str(image) if image else last)
        self.holder.get(progress)
        try:
            cf = run_counterfactual(data, None if target == AUTO else target,
                                    None if own_strength else strength)
        except user_errors() as error:
            raise gr.Error(str(error), title="No counterfactual for this image") from None
        if cf.reason:
            return [], counterfactual_markdown(cf)
        settings = {**cf.settings, "weights": public_source(cf.settings.get("weights"))}
        save = self.temp.save_png
        gallery = [
            (save(cf.original.resize((DISPLAY_SIZE, DISPLAY_SIZE), Image.Resampling.LANCZOS)),
             "original"),
            (save(stamp_synthetic(cf.image), png_metadata(settings)),
             f"as {cf.target} (SYNTHETIC)"),
            (save(cf.difference.resize((DISPLAY_SIZE, DISPLAY_SIZE), Image.Resampling.NEAREST)),
             "change"),
        ]
        return gallery, counterfactual_markdown(cf)

    # ------------------------------------------------------------------ layout
    def build(self, last_image: gr.State) -> None:
        """The tab's components and events (inside a `gr.Tab`)."""
        with gr.Row():
            with gr.Column(scale=1):
                inputs = self._settings_column()
            with gr.Column(scale=2):
                outputs, cf = self._results_column()
        outputs = [*outputs, last_image]
        inputs = [*inputs, last_image]
        upload, *_ = inputs
        diagnose_button = self.diagnose_button
        # Clear the previous result first, so that a failed upload never leaves another
        # image's result on screen.
        gr.on([upload.upload, diagnose_button.click], self.clear_results, None, outputs[:4],
              queue=False, api_name="clear", api_visibility="private",
              show_progress="hidden").then(
            self.diagnose, inputs, outputs, api_name="diagnose", concurrency_id="diagnose",
            validator=self.validate)
        upload.clear(self.clear_results, None, outputs[:4], queue=False,
                     api_name="clear_upload", api_visibility="private")
        settings = inputs[1:5]
        gr.on([s.change if s is not settings[2] else s.release for s in settings], self.redraw,
              inputs, outputs, api_name="redraw", api_visibility="private",
              concurrency_id="diagnose", show_progress="minimal", trigger_mode="always_last")
        if self.example_gallery is not None:
            self.example_gallery.select(self.diagnose_example, settings, [upload, *outputs],
                                        api_name="diagnose_example", api_visibility="private",
                                        concurrency_id="diagnose")
        cf_target, cf_strength, cf_own, cf_button, cf_gallery, cf_summary = cf
        gr.on([cf_own.change, cf_target.change], self.strength_slider, [cf_target, cf_own],
              cf_strength, queue=False, api_visibility="private", show_progress="hidden")
        cf_button.click(self.counterfactual, [upload, cf_target, cf_strength, cf_own, last_image],
                        [cf_gallery, cf_summary], api_name="counterfactual",
                        concurrency_id="counterfactual")

    def _settings_column(self) -> list:
        upload = gr.File(label="Dermoscopic image (JPEG, PNG, TIFF, BMP, WebP)",
                         type="filepath", elem_id="diagnose-upload", height=150)
        self.diagnose_button = gr.Button("Diagnose", variant="primary",
                                         elem_id="diagnose-button")
        predict_anyway = gr.Checkbox(
            False, label="Predict even if the image looks unusual",
            info="Off: the model declines images unlike its training data (e.g. other "
            "cameras, non-dermoscopic photos). On: its guess, with a warning.",
            elem_id="predict-anyway")
        with gr.Accordion("Saliency settings", open=False):
            cam_method = gr.Dropdown([(CAM_LABELS[m], m) for m in CAM_METHODS],
                                     value=CAM_METHODS[0], label="Method", elem_id="cam-method")
            cam_target = gr.Dropdown(
                [("predicted class", PREDICTED),
                 ("malignant (mel+bcc+akiec vs benign)", MALIGNANT),
                 *((dx_label(c), c) for c in DX_CODES)],
                value=PREDICTED, label="Explain", elem_id="cam-target")
            opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity",
                                elem_id="cam-opacity")
        # The order of `diagnose`'s parameters (the API's too).
        return [upload, cam_method, cam_target, opacity, predict_anyway]

    def _results_column(self) -> tuple[list, tuple]:
        summary = gr.Markdown(EMPTY_SUMMARY, label="summary", elem_id="diagnose-summary")
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
                cf_strength = gr.Slider(0.2, 1.0, value=self.sampling.counterfactual_strength,
                                        step=0.05, label="Strength (how much may change)",
                                        info=strength_note(self.sampling),
                                        interactive=False, elem_id="cf-strength")
            # The weights may carry a strength per target (turning a melanoma into a naevus
            # needs less change than the reverse): used unless the user sets their own.
            cf_own = gr.Checkbox(True, label="Strength chosen for the target on validation "
                                 "(untick to set your own)", elem_id="cf-own-strength")
            cf_button = gr.Button("Show counterfactual", elem_id="cf-button")
            cf_gallery = gr.Gallery(label="Original · counterfactual · change", columns=3,
                                    format="png", interactive=False, allow_preview=False,
                                    elem_id="cf-gallery", height="auto")
            cf_summary = gr.Markdown("", elem_id="cf-summary")
        self.example_gallery = None
        if self.examples:  # below the results: on a phone the answer comes first
            # The caption as text above, not as Gradio's label badge: the badge covered the
            # SYNTHETIC stamp of the first thumbnails.
            gr.Markdown("**Synthetic examples** (made by the model, stamped SYNTHETIC): "
                        "click one to diagnose it", elem_id="examples-caption")
            self.example_gallery = gr.Gallery(
                [(self.temp.save_png(stamp_synthetic(Image.open(p))), p.stem)
                 for p in self.examples], label="Synthetic examples "
                "(made by the model): click one", show_label=False, columns=7, height=160,
                allow_preview=False, interactive=False, elem_id="examples")
        return ([probabilities, summary, overlay, details],
                (cf_target, cf_strength, cf_own, cf_button, cf_gallery, cf_summary))


def strength_note(sampling: SamplingConfig) -> str:
    """The strengths the weights chose, in words: "0.5 towards melanocytic nevus (nv), 0.9
    towards the others"."""
    general = f"{sampling.counterfactual_strength:g}"
    own = [f"{v:g} towards {dx_label(t)}"
           for t, v in sorted(sampling.counterfactual_strength_by_target.items())
           if v != sampling.counterfactual_strength]
    if not own:
        return f"Chosen on validation: {general} for every target"
    return f"Chosen on validation: {', '.join(own)}, {general} towards the others"
