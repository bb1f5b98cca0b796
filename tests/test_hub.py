"""Weights sources: a local folder, a Hub repo served by a stand-in server on 127.0.0.1 via
HF_ENDPOINT (with a pinned revision), and the offline fallback to the embedded weights."""

from __future__ import annotations

import hashlib
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from classndiff import ClassNDiffPipeline
from classndiff.hub import WeightsNotFoundError, resolve, split_revision

COMMIT = "a" * 40


def make_handler(files: dict[str, bytes], repo_id: str, revisions: set[str], seen: list[str]):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _lookup(self) -> bytes | None:
            seen.append(f"{self.command} {self.path}")
            prefix = f"/{repo_id}/resolve/"
            if not self.path.startswith(prefix):
                return None
            revision, _, name = self.path[len(prefix):].partition("/")
            if revision not in revisions:
                return None
            return files.get(name)

        def _headers(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()

        def do_HEAD(self) -> None:  # noqa: N802
            body = self._lookup()
            if body is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return
            self._headers(body)

        def do_GET(self) -> None:  # noqa: N802
            body = self._lookup()
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self._headers(body)
            self.wfile.write(body)

    return Handler


@pytest.fixture()
def hub_server(tiny_weights: Path, tmp_path, monkeypatch):
    files = {p.name: p.read_bytes() for p in tiny_weights.iterdir() if p.is_file()}
    seen: list[str] = []
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), make_handler(files, "org/tiny", {"main", "v1", COMMIT}, seen))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield seen
    server.shutdown()


def test_split_revision():
    assert split_revision("org/name@v1") == ("org/name", "v1")
    assert split_revision("org/name") == ("org/name", None)


def test_local_folder_loads(tiny_weights):
    pipe = ClassNDiffPipeline.from_pretrained(tiny_weights, device="cpu")
    assert "local folder" in pipe.source


def test_a_folder_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="config.json"):
        resolve(tmp_path)


def test_hub_download_at_a_pinned_revision_via_the_stand_in_server(hub_server, tiny_weights):
    pipe = ClassNDiffPipeline.from_pretrained("org/tiny@v1", device="cpu")
    assert pipe.source == "Hugging Face Hub org/tiny@v1"
    assert any("/org/tiny/resolve/v1/model.safetensors" in line for line in hub_server)
    local = ClassNDiffPipeline.from_pretrained(tiny_weights, device="cpu")
    import torch

    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(pipe.predict_proba(x), local.predict_proba(x))


def test_unknown_revision_falls_back_to_embedded_with_a_warning(
        hub_server, tiny_weights, monkeypatch, caplog):
    monkeypatch.setenv("CLASSNDIFF_EMBEDDED", str(tiny_weights))
    with caplog.at_level(logging.WARNING, logger="classndiff.hub"):
        resolved = resolve("org/tiny@no-such-revision")
    assert resolved.fell_back and resolved.path == tiny_weights
    assert "embedded" in caplog.text


def test_unreachable_hub_falls_back_offline(tiny_weights, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CLASSNDIFF_EMBEDDED", str(tiny_weights))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    with caplog.at_level(logging.WARNING, logger="classndiff.hub"):
        pipe = ClassNDiffPipeline.from_pretrained("org/absent", device="cpu")
    assert "embedded default" in pipe.source and "not reachable" in pipe.source
    assert "could not load org/absent" in caplog.text


def test_offline_mode_falls_back(tiny_weights, monkeypatch, tmp_path):
    monkeypatch.setenv("CLASSNDIFF_EMBEDDED", str(tiny_weights))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    assert resolve("org/whatever").fell_back


def test_no_fallback_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsNotFoundError, match="could not get weights"):
        resolve("org/absent", fallback=False)


def test_graft_keeps_the_classifier_and_takes_the_runs_denoiser(tiny_weights, tmp_path) -> None:
    """`classndiff graft`: the target's classifier, extras and files stay bit for bit; the
    denoiser is the fine-tuned run's; the record gains the run's stage; a run that did not
    start from the target is refused."""
    import shutil

    from safetensors.torch import load_file, save_file

    from classndiff.config import ClassNDiffConfig
    from classndiff.hub import graft_denoiser
    from classndiff.training.trainer import Trainer

    target = tmp_path / "target"
    shutil.copytree(tiny_weights, target)
    tensors = load_file(str(target / "model.safetensors"))
    tensors["trust.example"] = torch.arange(3.0)  # an extra, as calibrate writes them
    save_file(tensors, str(target / "model.safetensors"))
    (target / "metrics.json").write_text('{"kept": true}\n')
    start = ClassNDiffConfig.from_json(target / "config.json")
    run = tmp_path / "run"
    Trainer(start.override({"train.max_steps": 2, "train.classifier_learning_rate": 0.0,
                            "train.joint_updates_classifier": False}), run,
            init_from=target).train()
    out = graft_denoiser(target, run, tmp_path / "out")
    grafted, trained = load_file(str(out / "model.safetensors")), load_file(
        str(run / "model.safetensors"))
    assert set(grafted) == set(tensors)
    for key, value in grafted.items():
        expected = trained[key] if key.startswith("denoiser.") else tensors[key]
        assert torch.equal(value, expected.to(value.dtype)), key
    assert (out / "metrics.json").read_text() == '{"kept": true}\n'
    record = ClassNDiffConfig.from_json(out / "config.json").training
    assert len(record.stages) == len(start.training.stages) + 1
    assert record.classifier_step == start.training.classifier_step
    with pytest.raises(ValueError, match="not a run fine-tuned"):
        graft_denoiser(run, target, tmp_path / "wrong")


def test_graft_keeps_the_classifier_stages_settings(tiny_weights, tmp_path) -> None:
    """After a graft, config.json's `train` is still the stage that made the classifier
    (the run's settings are in its recorded command), and the record says which stage; the
    classifier's test-time views are the target's."""
    import shutil

    from classndiff.config import ClassNDiffConfig
    from classndiff.hub import graft_denoiser
    from classndiff.training.trainer import Trainer

    target = tmp_path / "target"
    shutil.copytree(tiny_weights, target)
    start = ClassNDiffConfig.from_json(target / "config.json")
    Trainer(start.override({"train.max_steps": 2, "train.classifier_learning_rate": 0.0,
                            "train.joint_updates_classifier": False,
                            "train.lambda_cls": 0.5}), tmp_path / "run",
            init_from=target).train()
    start.model.classifier_test_views = 8  # how the classifier is read: the target's is kept
    start.to_json(target / "config.json")
    out = ClassNDiffConfig.from_json(graft_denoiser(target, tmp_path / "run",
                                                    tmp_path / "out") / "config.json")
    assert out.train == start.train and out.model.classifier_test_views == 8
    assert out.training.settings_of == 1 and len(out.training.stages) == 2


def test_graft_of_a_new_denoiser_takes_its_architecture_and_appends_its_stages(
        tiny_weights, tiny_config, tmp_path) -> None:
    """`classndiff graft --new-denoiser`: a denoiser trained on its own, of another
    architecture, under the target's classifier: its model settings come along, the
    classifier's stay, the record is the target's stages then the run's; without the flag it
    is refused, and so is a run whose classifier settings differ; with it, such a run's
    denoiser goes under the target's classifier, whose settings stay."""
    from PIL import Image
    from safetensors.torch import load_file

    from classndiff import ClassNDiffPipeline
    from classndiff.config import ClassNDiffConfig
    from classndiff.hub import graft_denoiser
    from classndiff.training.trainer import Trainer

    other = tiny_config.override({"model.denoiser": "unet", "model.unet_channels": [8, 16],
                                  "model.unet_layers_per_block": 1,
                                  "model.unet_attention_levels": 1, "train.max_steps": 2})
    run = tmp_path / "unet"
    Trainer(other, run).train()
    with pytest.raises(ValueError, match="--new-denoiser"):
        graft_denoiser(tiny_weights, run, tmp_path / "refused")
    out = graft_denoiser(tiny_weights, run, tmp_path / "out", new_denoiser=True)
    config = ClassNDiffConfig.from_json(out / "config.json")
    start = ClassNDiffConfig.from_json(tiny_weights / "config.json")
    assert config.model.denoiser == "unet" and config.model.unet_channels == [8, 16]
    assert config.model.classifier_backbone == start.model.classifier_backbone
    assert len(config.training.stages) == len(start.training.stages) + 1
    assert config.training.classifier_stage == start.training.classifier_stage
    grafted, target = load_file(str(out / "model.safetensors")), load_file(
        str(tiny_weights / "model.safetensors"))
    for key in [k for k in target if k.startswith("classifier.")]:
        assert torch.equal(grafted[key], target[key]), key
    trained = load_file(str(run / "model.safetensors"))
    assert not set(grafted) & {k for k in target if k.startswith("denoiser.")} - set(trained)
    for key in [k for k in trained if k.startswith("denoiser.")]:  # the run's, as floats
        assert grafted[key].dtype == trained[key].dtype, key
        assert torch.equal(grafted[key], trained[key]), key
    assert ClassNDiffPipeline.from_pretrained(out).generate(dx="mel", num_images=1, steps=2).images
    wider = tmp_path / "wider"
    Trainer(tiny_config.override({"model.classifier_drop_rate": 0.3, "train.max_steps": 1}),
            wider).train()
    with pytest.raises(ValueError, match="classifier configuration"):
        graft_denoiser(tiny_weights, wider, tmp_path / "refused2")
    kept = ClassNDiffConfig.from_json(graft_denoiser(
        tiny_weights, wider, tmp_path / "under", new_denoiser=True) / "config.json")
    assert kept.model.classifier_drop_rate == start.model.classifier_drop_rate != 0.3
    assert ClassNDiffPipeline.from_pretrained(tmp_path / "under").diagnose(
        Image.new("RGB", (64, 64), (190, 120, 100)), abstain=False).prediction
