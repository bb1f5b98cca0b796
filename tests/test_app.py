"""The Gradio app (app.py): its view helpers, its start-up rules, its two API endpoints through
gradio_client against a real server process, and a load test."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from tests.app_server import ROOT, http_status, python_lines, start_app, stop_app
from tests.test_counterfactual import lesion_photo

# The README's client example, verbatim but for the address (kept here so it is tested).
README_CLIENT_EXAMPLE = """\
from gradio_client import Client, handle_file
client = Client("http://127.0.0.1:7860/")  # or the Space id, e.g. "user/class-n-diff"
*_, details = client.predict(handle_file("lesion.jpg"), api_name="/diagnose")
gallery, zip_path, info, settings = client.predict(dx="mel", num_images=2, api_name="/generate")
images, text = client.predict(handle_file("lesion.jpg"), "mel", 0.6, False,
                              api_name="/counterfactual")  # True: the target's own strength
print(details["prediction"] or details["reason"], zip_path, len(images))
"""


def load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("classndiff_app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def app() -> ModuleType:
    return load_app()


def lesion_file(folder: Path, name: str | None = None) -> Path:
    """A synthetic lesion image with a unique name (so we can look for it on the server)."""
    from tests.conftest import make_lesion

    path = folder / (name or f"probe_{uuid.uuid4().hex}.png")
    Image.fromarray(make_lesion(np.random.default_rng(0), 4, size=96)).save(path)
    return path


def client_for(server):  # noqa: ANN001, ANN201
    from gradio_client import Client

    return Client(server.url, verbose=False, download_files=True)


# --------------------------------------------------------------------------- no server
def test_importing_the_app_does_not_import_torch() -> None:
    """What makes the start fast: importing app.py imports neither torch nor gradio, so its
    main() starts the model's worker process before gradio is imported; the page's modules
    never import torch (the worker does)."""
    code = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('a', "
            f"{str(ROOT / 'app.py')!r}); m = importlib.util.module_from_spec(s); "
            "s.loader.exec_module(m); heavy = ('torch', 'diffusers', 'timm', 'gradio'); "
            "print(sorted(k for k in heavy if k in sys.modules)); m.build_demo; "
            "print(sorted(k for k in heavy if k in sys.modules))")
    assert python_lines(code)[-2:] == ["[]", "['gradio']"]


def test_zerogpu_decorates_the_model_calls_when_spaces_is_importable(tmp_path: Path) -> None:
    """With the `spaces` package (Hugging Face ZeroGPU) the model calls get spaces.GPU; without
    it the decorator is a no-op (the other tests)."""
    fake = tmp_path / "spaces"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "CALLS = []\n"
        "def GPU(fn=None, **kwargs):\n"
        "    def wrap(f):\n"
        "        CALLS.append([f.__name__, kwargs])\n"
        "        return f\n"
        "    return wrap(fn) if fn is not None else wrap\n")
    code = ("import importlib.util, json, spaces; s = importlib.util.spec_from_file_location("
            f"'a', {str(ROOT / 'app.py')!r}); m = importlib.util.module_from_spec(s); "
            "s.loader.exec_module(m); m.build_demo; print(json.dumps(sorted(spaces.CALLS)))")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    calls = dict(json.loads(python_lines(code, env=env)[-1]))
    assert set(calls) == {"run_diagnose", "run_generate", "run_counterfactual"}
    assert all(kwargs.get("duration") for kwargs in calls.values())


def test_mirrored_vocabularies_match_the_package(app: ModuleType) -> None:
    from classndiff.explain.saliency import CAM_METHODS
    from classndiff.models.diffusion import SAMPLERS

    assert app.SAMPLERS == SAMPLERS
    # The app offers every package method but HiResCAM, which equals Grad-CAM for this head.
    assert app.CAM_METHODS == tuple(m for m in CAM_METHODS if m != "hirescam")
    assert set(app.CAM_METHODS) <= set(app.CAM_LABELS)


def test_stamp_synthetic_upscales_and_marks_the_corner(app: ModuleType) -> None:
    small = Image.new("RGB", (64, 64), (230, 200, 190))
    big = app.stamp_synthetic(small)
    assert big.size == (256, 256)
    pixels = np.asarray(big).astype(int)
    corner = pixels[:40, :140]  # top-left (the gallery's captions cover the bottom)
    assert (corner.sum(-1) < 250).mean() > 0.3
    assert (corner.min(-1) > 200).any()
    assert (pixels[-100:, -100:] == (230, 200, 190)).all()  # the rest untouched


def test_describe_skin_tone_handles_every_shape(app: ModuleType) -> None:
    """One scale (the model's groups, with the ITA behind them), no 90° from a colour cast."""
    d = {"ita": 47.3, "bin": "light", "group": "lighter", "reliable": True, "skin_b": 12.0}
    text = app.describe_skin_tone(d)
    assert text.startswith("**lighter** (ITA 47°") and "Del Bino" not in text
    low = app.describe_skin_tone({**d, "reliable": False})
    assert "low reliability" in low
    cast = app.describe_skin_tone({**d, "ita": 90.0, "skin_b": -2.0, "reliable": False})
    assert "not measurable" in cast and "90" not in cast
    assert app.describe_skin_tone(None) is None
    assert app.describe_skin_tone(12.0) == "ITA 12°"
    assert "not measurable" in app.describe_skin_tone({"ita": None, "group": "unknown"})


def test_check_weights_source_names_the_problem(app: ModuleType, tmp_path: Path,
                                                tiny_weights: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert app.check_weights_source(str(tiny_weights)) is None
    assert app.check_weights_source("org/model@v1") is None  # the loader checks the Hub
    assert "no config.json" in app.check_weights_source(str(tmp_path))
    assert "no such folder" in app.check_weights_source("/no/such/weights")
    monkeypatch.setenv("CLASSNDIFF_EMBEDDED", str(tmp_path))
    assert "No model weights found" in app.check_weights_source(None)


def test_weights_source_order(app: ModuleType, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """CLASSNDIFF_WEIGHTS, else the config's Hub default, else None (the embedded weights)."""
    embedded = tmp_path / "embedded"
    embedded.mkdir()
    monkeypatch.setenv("CLASSNDIFF_EMBEDDED", str(embedded))
    monkeypatch.delenv("CLASSNDIFF_WEIGHTS", raising=False)
    assert app.weights_source() is None
    (embedded / "config.json").write_text(json.dumps({"extra": {"hub_default": "org/cnd@v1"}}))
    assert app.weights_source() == "org/cnd@v1"
    assert app.check_weights_source("org/cnd@v1") is None
    monkeypatch.setenv("CLASSNDIFF_WEIGHTS", "/some/folder")
    assert app.weights_source() == "/some/folder"


def test_app_without_weights_exits_with_a_clear_message(tmp_path: Path) -> None:
    env = {**os.environ, "CLASSNDIFF_EMBEDDED": str(tmp_path), "GRADIO_SERVER_PORT": "1"}
    env.pop("CLASSNDIFF_WEIGHTS", None)
    out = subprocess.run([sys.executable, str(ROOT / "app.py")], env=env, capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode != 0
    assert "No model weights found" in out.stderr
    assert "CLASSNDIFF_WEIGHTS" in out.stderr
    assert "Traceback" not in out.stderr


def test_model_card_from_config_and_from_file(app: ModuleType, tiny_pipe,  # noqa: ANN001
                                              tmp_path: Path) -> None:
    card = app.model_card(tiny_pipe)
    for needed in ("Weights in use", tiny_pipe.source, "CC BY-NC 4.0", "2510.16887",
                   "Tschandl", "not a medical device", "Limitations"):
        assert needed in card, needed
    folder = tmp_path / "weights"
    shutil.copytree(tiny_pipe.weights_path, folder)
    (folder / "metrics.json").write_text(json.dumps(
        {"classification": {"accuracy": 0.812, "macro_auc": 0.9}, "split": "test"}))
    tiny_pipe.weights_path, saved = folder, tiny_pipe.weights_path
    try:
        assert "| classification.accuracy | 0.812 |" in app.model_card(tiny_pipe)
        assert "Per skin-tone results" in app.model_card(tiny_pipe)  # not measured yet
        (folder / "metrics.json").write_text(json.dumps(
            {"classification": {"accuracy": 0.812}, "by_skin_tone": {
                "lighter": {"n": 900, "accuracy": 0.83}, "darker": {"n": 4, "accuracy": 0.5}}}))
        card = app.model_card(tiny_pipe)
        assert "| group | n | accuracy |" in card and "| darker | 4 | 0.500 |" in card
        assert "| classification.accuracy | 0.812 |" in card
        (folder / "MODEL_CARD.md").write_text("---\nlicense: x\n---\n# The shipped card\n"
                                              "![curves](curves.png) ![gone](../../x.png)\n")
        Image.new("RGB", (1200, 600), (10, 20, 30)).save(folder / "curves.png")
        card = app.model_card(tiny_pipe)
        assert "# The shipped card" in card and "license: x" not in card
        # Images beside the card are inlined (the browser cannot reach the weights folder);
        # paths outside the folder are not read.
        assert "![curves](data:image/jpeg;base64," in card and "*(gone)*" in card
    finally:
        tiny_pipe.weights_path = saved


def test_diagnosis_never_queues_behind_generation(app: ModuleType, tiny_weights: Path) -> None:
    """Diagnosis, generation and counterfactuals each have their own queue (one run at a
    time in each), and Stop cancels a generation."""
    demo = app.build_demo(app.ModelHolder(str(tiny_weights)), app.TempFiles())
    demo.queue(default_concurrency_limit=1)
    fns = {fn.api_name: fn for fn in demo.fns.values()}
    assert {"diagnose", "generate", "counterfactual", "stop"} <= set(fns)
    for name in ("diagnose", "redraw", "diagnose_example"):
        assert fns[name].concurrency_id == "diagnose", name
    assert fns["generate"].concurrency_id == "generate"
    assert fns["counterfactual"].concurrency_id == "counterfactual"
    assert fns["generate"].concurrency_limit == 1
    generate_id = next(i for i, fn in demo.fns.items() if fn.api_name == "generate")
    assert any(generate_id in fn.cancels for fn in demo.fns.values())  # Stop's
    public = {n for n, fn in fns.items() if fn.api_visibility == "public"}
    assert public == {"diagnose", "generate", "counterfactual"}


def test_generation_is_cancelled_when_its_request_ends(app: ModuleType,
                                                       tiny_weights: Path) -> None:
    """Closing the handler's generator (Stop, or a client that left) stops the sampler at its
    next step instead of letting it run on for nobody."""
    import threading

    holder = app.ModelHolder(str(tiny_weights))
    holder.start()
    holder.wait()
    demo = app.build_demo(holder, app.TempFiles())
    generate = next(fn for fn in demo.fns.values() if fn.api_name == "generate").fn
    steps_seen = []
    original = holder.pipe.generate
    stopped = threading.Event()

    def slow_generate(progress=None, **kwargs):  # noqa: ANN001, ANN003, ANN202
        def slow_progress(step: int, total: int) -> None:
            steps_seen.append(step)
            time.sleep(0.2)
            progress(step, total)
        try:
            return original(progress=slow_progress, **kwargs)
        finally:
            stopped.set()

    holder.pipe.generate = slow_generate
    updates = generate("mel", "any", "any", 1, "ddpm", 100, 1.0, 1, False)  # ≥ 20 s
    messages = [next(updates)[2] for _ in range(4)]  # running, ~2 s
    assert "step" in messages[0] and "Stop" in messages[0]
    assert re.search(r"about \d+ s left", messages[-1]), messages  # an estimate once measurable
    updates.close()  # what gradio does on cancel
    assert stopped.wait(10), "the sampler kept running"
    assert len(steps_seen) < 20, len(steps_seen)


# --------------------------------------------------------------------------- README
def readme() -> str:
    path = ROOT / "README.md"
    if not path.is_file():
        pytest.skip("no README.md yet")
    return path.read_text()


def front_matter(text: str) -> dict[str, str]:
    """The README's YAML front matter (Hugging Face Spaces), top-level `key: value` lines;
    a list (`models:` followed by `- id` lines) is joined with commas."""
    match = re.match(r"\A---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md starts with no --- front matter --- block"
    data: dict[str, str] = {}
    key = None
    for line in match.group(1).splitlines():
        item = re.match(r"\s+-\s*(.+)", line)
        if item and key:
            data[key] = ",".join(filter(None, [data[key], item.group(1).strip()]))
        elif ":" in line and not line.startswith((" ", "#")):
            key, _, value = line.partition(":")
            value = value.strip().strip("\"'")
            if value.startswith("[") and value.endswith("]"):  # an inline list
                value = ",".join(v.strip().strip("\"'") for v in value[1:-1].split(",")
                                 if v.strip())
            key, data[key] = key.strip(), value
    return data


def test_readme_shows_the_tested_client_example() -> None:
    """The README's gradio_client example is README_CLIENT_EXAMPLE, verbatim (it is run
    against a live server by test_readme_client_example_runs)."""
    assert README_CLIENT_EXAMPLE.strip() in readme()


def test_readme_front_matter_for_spaces() -> None:
    meta = front_matter(readme())
    gradio_pin = re.search(r"^gradio==(\S+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert meta.get("title")
    assert meta.get("sdk") == "gradio"
    assert gradio_pin and meta.get("sdk_version") == gradio_pin.group(1)
    assert meta.get("app_file") == "app.py"
    assert re.fullmatch(r"3\.\d+", meta.get("python_version", "")), meta
    assert meta.get("license")
    assert "models" in meta and all(m.count("/") == 1 for m in meta["models"].split(",")
                                    if m), meta.get("models")
    assert meta["models"], "models: name the Hub repo of the weights (e.g. [you/class-n-diff])"


def test_readme_screenshots_exist_and_are_small() -> None:
    shots = re.findall(r"docs/screenshot-[\w-]+\.png", readme())
    assert {"docs/screenshot-diagnose.png", "docs/screenshot-generate.png",
            "docs/screenshot-model.png"} <= set(shots)
    for shot in shots:
        path = ROOT / shot
        assert path.is_file(), shot
        assert path.stat().st_size < 400_000, (shot, path.stat().st_size)
        assert Image.open(path).format == "PNG"


# --------------------------------------------------------------------------- real server
def test_server_starts_fast_and_privately(app_server) -> None:  # noqa: ANN001
    assert app_server.url.startswith("http://127.0.0.1:")
    assert app_server.cold_start_s < 10, app_server.cold_start_s  # the bar
    with urllib.request.urlopen(app_server.url + "config", timeout=30) as response:  # noqa: S310
        config = json.loads(response.read())
    assert config["analytics_enabled"] is False
    assert config["run_history"] is False
    assert config["max_file_size"] == 20 * 2**20
    assert config["enable_queue"] is True
    assert "flag" not in json.dumps(config["components"]).lower()
    assert app_server.temp_dirs(), "the app did not use its private temp folder"


def test_diagnose_api(app_server, tmp_path: Path) -> None:  # noqa: ANN001
    from gradio_client import handle_file

    client = client_for(app_server)
    image = lesion_file(tmp_path)
    started = time.perf_counter()
    probabilities, summary, overlay, details = client.predict(handle_file(str(image)),
                                                              api_name="/diagnose")
    assert time.perf_counter() - started < 30
    assert len(probabilities["confidences"]) == 7
    total = sum(c["confidence"] for c in probabilities["confidences"])
    assert total == pytest.approx(1, abs=1e-4)
    assert "not a medical device" in summary
    assert "Malignant probability" in summary
    assert ("Prediction:" in summary) == (details["prediction"] is not None)
    assert 0 <= details["malignant"] <= 1
    assert Path(overlay).is_file() and Image.open(overlay).size[0] >= 64
    # Nothing uploaded is kept after the request.
    leftovers = [p for d in app_server.temp_dirs() for p in d.rglob(image.name)]
    assert not leftovers, leftovers
    # Saliency settings are API arguments too.
    _, summary2, _, _ = client.predict(handle_file(str(image)), "gradcam++", "malignant", 0.8,
                                       api_name="/diagnose")
    assert "not a medical device" in summary2


def test_diagnose_api_abstains_and_can_predict_anyway(app_server, tmp_path: Path) -> None:  # noqa: ANN001
    """A blank image: the model abstains (with its reason, no saliency); with predict_anyway
    it gives its guess and says it would have abstained."""
    from gradio_client import handle_file

    client = client_for(app_server)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (96, 96), (128, 128, 128)).save(blank)
    probabilities, summary, _, details = client.predict(handle_file(str(blank)),
                                                        api_name="/diagnose")
    assert details["prediction"] is None and details["reason"]
    assert "No prediction" in summary and "Why:" in summary and ".." not in summary
    assert "not estimated (the model abstained)" in summary
    # No class or malignant percentage anywhere: a number beside an abstention reads as the
    # answer.
    assert not re.search(r"\d\s*%", summary) and "Malignant probability" not in summary
    assert not (probabilities or {}).get("confidences")
    assert not {"probabilities", "malignant", "confidence"} & set(details)
    _, summary, _, details = client.predict(handle_file(str(blank)), "gradcam", "predicted",
                                            0.5, True, api_name="/diagnose")
    assert details["prediction"] in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert "Prediction:" in summary and "would normally abstain" in summary


def test_diagnose_api_rejects_a_non_image_clearly(app_server, tmp_path: Path) -> None:  # noqa: ANN001
    from gradio_client import handle_file

    client = client_for(app_server)
    text = tmp_path / "notes.txt"
    text.write_text("not a lesion")
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(text)), api_name="/diagnose")
    leftovers = [p for d in app_server.temp_dirs() for p in d.rglob("notes.txt")]
    assert not leftovers, leftovers
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    with pytest.raises(Exception, match="pixels"):
        client.predict(handle_file(str(tiny)), api_name="/diagnose")


def read_zip(path: str) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_generate_api_gallery_zip_and_reproducibility(app_server) -> None:  # noqa: ANN001
    client = client_for(app_server)
    kwargs = dict(dx="nv", skin_tone="brown", sex="any", num_images=2, sampler="ddim", steps=3,
                  guidance_scale=1.5, seed=123, keep_only_agreeing=False, api_name="/generate")
    gallery, zip_path, info, settings = client.predict(**kwargs)
    assert len(gallery) == 2
    for item in gallery:
        assert "P(nv)" in item["caption"]
        assert Image.open(item["image"]).size[0] >= 256  # upscaled for display
    assert "seed **123**" in info and "not a medical device" in info
    files = read_zip(zip_path)
    assert sorted(files) == ["settings.json", "synthetic_nv_brown_any_seed123.png",
                             "synthetic_nv_brown_any_seed124.png"]
    sidecar = json.loads(files["settings.json"])
    assert sidecar == settings
    assert sidecar["seed"] == 123 and sidecar["dx"] == "nv" and sidecar["skin_tone"] == "brown"
    assert sidecar["sex"] is None and sidecar["sampler"] == "ddim" and sidecar["steps"] == 3
    assert sidecar["synthetic"] is True and len(sidecar["images"]) == 2
    # The seed in the sidecar reproduces the batch exactly.
    _, zip_again, _, _ = client.predict(**kwargs)
    again = read_zip(zip_again)
    name = "synthetic_nv_brown_any_seed123.png"  # the same pixels (metadata has timings)
    assert (Image.open(io.BytesIO(again[name])).tobytes()
            == Image.open(io.BytesIO(files[name])).tobytes())
    # A blank seed is random, and shown.
    _, _, _, random_settings = client.predict(**{**kwargs, "seed": None, "num_images": 1})
    assert isinstance(random_settings["seed"], int)


def test_generate_api_rejects_bad_settings_clearly(app_server) -> None:  # noqa: ANN001
    client = client_for(app_server)
    with pytest.raises(Exception, match="keep_only_agreeing needs a diagnosis"):
        client.predict(dx="any", num_images=1, steps=2, keep_only_agreeing=True,
                       api_name="/generate")
    with pytest.raises(Exception, match="greater than maximum value"):  # the slider says so
        client.predict(dx="mel", num_images=1000, steps=2, api_name="/generate")


def test_readme_client_example_runs(app_server, tmp_path: Path,  # noqa: ANN001
                                    monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    lesion_file(tmp_path, "lesion.jpg")
    monkeypatch.chdir(tmp_path)
    code = README_CLIENT_EXAMPLE.replace("http://127.0.0.1:7860/", app_server.url)
    assert len(README_CLIENT_EXAMPLE.strip().splitlines()) == 7  # kept short (one call wrapped)
    exec(compile(code, "README client example", "exec"), {})  # noqa: S102 - our own snippet
    printed = capsys.readouterr().out.split()
    assert printed[-2].endswith(".zip") and printed[-1] in ("0", "3")


@pytest.mark.slow
def test_load_20_concurrent_clients(app_server, tmp_path: Path) -> None:  # noqa: ANN001
    """20 clients at once, each a diagnose and a small generate: no errors, bounded time, and
    the server still answers afterwards."""
    from gradio_client import handle_file

    image = lesion_file(tmp_path, "load.png")
    errors: list[str] = []
    durations: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20, timeout=120)

    def one_client(i: int) -> None:
        try:
            client = client_for(app_server)
            barrier.wait()
            started = time.perf_counter()
            _, _, _, details = client.predict(handle_file(str(image)), api_name="/diagnose")
            assert len(details["probabilities"]) == 7
            gallery, _, _, _ = client.predict(dx="bcc", num_images=1, steps=2, seed=i,
                                              api_name="/generate")
            assert len(gallery) == 1
            with lock:
                durations.append(time.perf_counter() - started)
        except Exception as error:  # noqa: BLE001 - collected and reported below
            with lock:
                errors.append(f"client {i}: {type(error).__name__}: {error!r}")

    started = time.perf_counter()
    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    elapsed = time.perf_counter() - started
    assert not any(t.is_alive() for t in threads), "clients still running after 180 s"
    assert errors == []
    assert len(durations) == 20
    assert elapsed < 150, elapsed
    assert http_status(app_server.url) == 200
    _, summary, _, _ = client_for(app_server).predict(handle_file(str(image)),
                                                      api_name="/diagnose")
    assert "not a medical device" in summary


@pytest.mark.slow
def test_sigterm_stops_the_app_and_removes_its_temp_files(tiny_weights: Path,
                                                          tmp_path: Path) -> None:
    server = start_app(tiny_weights, tmp_path)
    try:
        assert server.temp_dirs()
        assert http_status(server.url) == 200
    finally:
        code = stop_app(server.process)
    assert code == 0, server.log_text()
    assert server.temp_dirs() == [], "the private temp folder outlived the app"


def test_generated_zip_images_are_plain_pngs(app_server) -> None:  # noqa: ANN001
    client = client_for(app_server)
    _, zip_path, _, settings = client.predict(dx="df", num_images=1, steps=2, seed=7,
                                              api_name="/generate")
    png = read_zip(zip_path)["synthetic_df_any_any_seed7.png"]
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size[0] >= 256  # stamped at display size
    assert image.text["synthetic"] == "true"
    saved = json.loads(image.text["classndiff_settings"])
    assert saved["seed"] == 7 and saved["dx"] == "df" and saved["synthetic"] is True
    assert "/" not in settings["weights"] and "/" not in image.text["classndiff_weights"]
    assert str(ROOT) not in json.dumps(settings) and "/tmp" not in json.dumps(settings)


def test_counterfactual_api(app_server, tmp_path: Path) -> None:  # noqa: ANN001
    """Original, counterfactual (SYNTHETIC) and change; an abstained upload gets its reason."""
    from gradio_client import handle_file

    client = client_for(app_server)
    image = tmp_path / "lesion.png"
    lesion_photo(96).save(image)
    gallery, summary = client.predict(handle_file(str(image)), "mel", 0.6, False,
                                      api_name="/counterfactual")
    assert "abstains" not in summary, summary
    assert [item["caption"] for item in gallery] == ["original", "as mel (SYNTHETIC)",
                                                     "change"]
    assert "SYNTHETIC" in summary and "P(mel)" in summary
    assert "strength 0.6," in summary  # the user's own, not the weights' default
    blank = tmp_path / "blank.png"
    Image.new("RGB", (96, 96), (128, 128, 128)).save(blank)
    gallery, summary = client.predict(handle_file(str(blank)), "auto", 0.6, True,
                                      api_name="/counterfactual")
    assert not gallery and "abstains" in summary and "Why:" in summary


def test_strength_slider_follows_the_target() -> None:
    """Ticked, the greyed slider shows the strength the weights chose for the target (the
    general one for AUTO), and its note names the targets' own; unticked it is the user's."""
    from types import SimpleNamespace

    from classndiff.config import SamplingConfig
    from demo.diagnose_tab import DiagnoseTab, strength_note
    from demo.settings import AUTO

    sampling = SamplingConfig(counterfactual_strength=0.9,
                              counterfactual_strength_by_target={"nv": 0.5})
    tab = DiagnoseTab(None, SimpleNamespace(ttl=60), [], sampling)
    assert (tab.strength_slider("nv", True).value, tab.strength_slider("nv", True).interactive) \
        == (0.5, False)
    assert tab.strength_slider("mel", True).value == tab.strength_slider(AUTO, True).value == 0.9
    assert tab.strength_slider("nv", False).interactive is True
    note = strength_note(sampling)
    assert "0.5 towards" in note and "0.9 towards the others" in note
    assert strength_note(SamplingConfig(counterfactual_strength=0.6)).endswith(
        "0.6 for every target")


def test_generate_summary_says_where_guidance_acted() -> None:
    """The Generate tab's summary names the guidance interval when the weights limit it, and
    says nothing extra when guidance acts at every step."""
    from types import SimpleNamespace

    from demo.generate_tab import GenerateTab

    settings = {"seconds": 1.0, "seed": 0, "sampler": "dpm++", "steps": 20,
                "guidance_scale": 6.0, "num_images": 1, "guidance_interval": [0.0, 10.0]}
    out = SimpleNamespace(images=[None])
    assert "σ in (0, 10] only" in GenerateTab.summary(out, settings)
    everywhere = GenerateTab.summary(out, {**settings, "guidance_interval": [0.0, None]})
    assert "σ" not in everywhere and "guidance 6" in everywhere
