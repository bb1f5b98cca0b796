"""The app's page: three tabs over one model holder (`build_demo`), and serving it (`serve`).
app.py calls `serve` after it has started the model worker."""

from __future__ import annotations

import os
import signal
import sys

import gradio as gr

from demo.diagnose_tab import DiagnoseTab
from demo.generate_tab import GenerateTab
from demo.model_card import display_source, model_card
from demo.runtime import ModelHolder, TempFiles, example_files
from demo.settings import CSS, DISCLAIMER, HEAD, ZERO_GPU
from demo.weights import local_config
from demo.worker import ModelWorker


def build_demo(holder: ModelHolder, temp: TempFiles | None = None) -> gr.Blocks:
    """The three tabs over one model holder; the Model tab and the status line fill in when
    the model is ready."""
    import demo.runtime

    demo.runtime.HOLDER = holder  # module-level, so spaces.GPU functions can reach it
    temp = temp or TempFiles()
    config = local_config(holder.source)
    max_steps = min(config.sampling.max_steps, config.model.num_train_timesteps)

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
                   delete_cache=(60, int(temp.ttl))) as blocks:
        gr.Markdown(
            "# Class-N-Diff · dermoscopy research demo\n"
            "One jointly trained model that **diagnoses** a dermoscopic image among 7 HAM10000 "
            "classes and **generates** synthetic lesions by diagnosis, skin tone and sex.\n\n"
            f"> {DISCLAIMER}")
        status = gr.Markdown("Model: loading in the background…", elem_id="model-status")
        last_image = gr.State(None, time_to_live=temp.ttl)  # a key of the uploads' memory
        with gr.Tab("Diagnose", id="diagnose"):
            DiagnoseTab(holder, temp, example_files(), config.sampling).build(last_image)
        with gr.Tab("Generate", id="generate"):
            GenerateTab(holder, temp, config.sampling, max_steps).build()
        with gr.Tab("Model", id="model"):
            card = gr.Markdown("Loading the model card…", elem_id="model-card")
        blocks.load(status_and_card, None, [status, card], api_name="status",
                    api_visibility="private", concurrency_limit=None, show_progress="hidden")
    return blocks


def serve(source: str | None, worker: ModelWorker | None = None) -> None:
    """Build the page over the model (loading in `worker`, else in a thread here), serve it
    and block until the process is stopped."""
    on_spaces = bool(os.environ.get("SPACE_ID"))
    server_name = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if on_spaces else "127.0.0.1")
    server_port = int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
    temp = TempFiles(ttl=float(os.environ.get("CLASSNDIFF_FILE_TTL", 300)))
    holder = ModelHolder(source, worker)
    holder.start()
    blocks = build_demo(holder, temp)
    if ZERO_GPU:  # `spaces` packs the model's tensors when the app launches
        holder.wait()  # a failure is shown in the UI, as elsewhere
    # SIGTERM (docker stop, Spaces) exits like Ctrl-C, so atexit removes the temp folder
    # (and stops the worker).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # One run per queue at a time (diagnose, generate, counterfactual each have their own),
    # a bounded queue for everyone else.
    blocks.queue(max_size=64, default_concurrency_limit=1)
    # Gradio's default font, with its bold face too (else bold text mixes in fallback glyphs).
    theme = gr.themes.Default(font=[gr.themes.LocalFont("Source Sans Pro",
                                                        weights=(400, 600, 700)),
                                    "ui-sans-serif", "system-ui", "sans-serif"])
    blocks.launch(
        theme=theme, css=CSS, head=HEAD, server_name=server_name, server_port=server_port,
        share=False,
        max_file_size=os.environ.get("CLASSNDIFF_MAX_UPLOAD", "20mb"),
        show_error=False, footer_links=["api"], run_history=False, ssr_mode=False,
        mcp_server=False, pwa=False, enable_monitoring=False, prevent_thread_lock=True,
    )
    temp.start()
    blocks.block_thread()
