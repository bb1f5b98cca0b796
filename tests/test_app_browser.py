"""End-to-end in headless Chromium (Debian's `chromium` package, driven by Playwright for
Python — never `playwright install`): the app as a user sees it. Gradio renders with
JavaScript, so every step waits for an element, not for the page load.

Screenshots go to screenshots/ (git-ignored; CLASSNDIFF_APP_SCREENSHOTS overrides); run with
CLASSNDIFF_APP_TEST_WEIGHTS=<folder> to take them on a real model."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app_server import ROOT

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SHOTS = Path(os.environ.get("CLASSNDIFF_APP_SCREENSHOTS", ROOT / "screenshots"))
WAIT_MS = 90_000  # the first request also waits for the model to load


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver "
                    "(or set CHROMIUM_PATH)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_server) -> Iterator:  # noqa: ANN001
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(app_server.url)
    page.wait_for_selector("#diagnose-upload", timeout=WAIT_MS)
    yield page
    context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"


def shot(page, name: str) -> Path:  # noqa: ANN001
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def lesion(tmp_path: Path) -> Path:
    import numpy as np
    from PIL import Image

    from tests.conftest import make_lesion

    path = tmp_path / "lesion.png"
    Image.fromarray(make_lesion(np.random.default_rng(3), 1, size=128)).save(path)
    return path


def wait_for_diagnosis(page) -> str:  # noqa: ANN001
    summary = page.locator("#diagnose-summary")
    summary.get_by_text(re.compile("Prediction:|No prediction")).first.wait_for(timeout=WAIT_MS)
    return summary.inner_text()


def test_diagnose_an_upload(page, tmp_path: Path) -> None:  # noqa: ANN001
    page.set_input_files("#diagnose-upload input[type=file]", str(lesion(tmp_path)))
    text = wait_for_diagnosis(page)
    assert re.search(r"Prediction: .+ — \d+\.\d %|No prediction", text)
    assert "not a medical device" in text
    assert "Skin-tone estimate" in text
    bars = page.locator("#probabilities [data-testid$='-confidence-set']")
    abstained = "No prediction" in text  # then no class numbers at all
    assert bars.count() == (0 if abstained else 7)
    assert abstained == ("Malignant probability" not in text)
    overlay = page.locator("#saliency img")
    overlay.wait_for(timeout=WAIT_MS)
    assert overlay.evaluate("img => img.complete && img.naturalWidth") >= 256
    if "No prediction" not in text:
        assert "Saliency: Grad-CAM of" in text
    shot(page, "diagnose")

    # New saliency settings re-run on the same image (the upload itself is already deleted).
    page.get_by_text("Saliency settings").click()  # folded by default (phones)
    page.locator("#cam-method input").click()
    page.get_by_role("option", name="Grad-CAM++").click()
    if not abstained:
        page.locator("#diagnose-summary").get_by_text("Grad-CAM++").wait_for(timeout=WAIT_MS)
        assert page.locator("#probabilities [data-testid$='-confidence-set']").count() == 7
    assert page.get_by_text("expired").count() == 0


def test_counterfactual_panel(page, tmp_path: Path, request) -> None:  # noqa: ANN001
    """Diagnose, then 'Show as …': original, counterfactual stamped SYNTHETIC, the change;
    the greyed strength slider follows the target."""
    from classndiff.config import ClassNDiffConfig
    from demo.settings import dx_label
    from tests.test_counterfactual import lesion_photo

    weights = Path(os.environ.get("CLASSNDIFF_APP_TEST_WEIGHTS")
                   or request.getfixturevalue("tiny_weights"))
    sampling = ClassNDiffConfig.from_json(weights / "config.json").sampling

    path = tmp_path / "lesion.png"
    lesion_photo(128).save(path)
    page.set_input_files("#diagnose-upload input[type=file]", str(path))
    wait_for_diagnosis(page)
    page.locator("#cf").get_by_text("What would it have to look like").first.click()
    # The weights' strength for the target by default; unticked, the slider is the user's.
    slider = page.locator("#cf-strength input[type=range]")
    assert page.locator("#cf-own-strength input[type=checkbox]").is_checked()
    assert slider.is_disabled()
    assert float(slider.input_value()) == sampling.counterfactual_strength
    page.locator("#cf-target input").click()
    page.get_by_role("option", name=dx_label("nv")).click()
    page.wait_for_function("v => document.querySelector('#cf-strength input[type=range]')"
                           ".value == v", arg=str(sampling.counterfactual_strength_for("nv")),
                           timeout=WAIT_MS)
    page.locator("#cf-own-strength input[type=checkbox]").uncheck()
    page.wait_for_function("() => !document.querySelector('#cf-strength input[type=range]')"
                           ".disabled", timeout=WAIT_MS)
    page.locator("#cf-own-strength input[type=checkbox]").check()
    page.locator("#cf-button").click()
    summary = page.locator("#cf-summary")
    summary.get_by_text(re.compile("SYNTHETIC|abstains")).first.wait_for(timeout=WAIT_MS)
    text = summary.inner_text()
    if "abstains" not in text:
        images = page.locator("#cf-gallery img")
        images.nth(2).wait_for(timeout=WAIT_MS)
        assert images.count() == 3 and "How to read it" in text
    assert "not a medical device" in text
    shot(page, "counterfactual")


AXE = os.environ.get("AXE_CORE_JS", str(ROOT / ".ci" / "node_modules" / "axe-core" /
                                        "axe.min.js"))


@pytest.mark.parametrize("tab", ["Diagnose", "Generate", "Model"])
def test_no_serious_accessibility_violations(page, tab: str) -> None:  # noqa: ANN001
    """axe-core (npm) on every tab: no serious or critical WCAG 2 A/AA violation."""
    if not Path(AXE).is_file():
        pytest.fail(f"axe-core not found at {AXE}: npm install axe-core (see .ci/run)")
    page.get_by_role("tab", name=tab).click()
    page.wait_for_timeout(500)
    page.add_script_tag(path=AXE)
    result = page.evaluate("""async () => await axe.run(document, {runOnly: {type: 'tag',
        values: ['wcag2a', 'wcag2aa']}})""")
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
           for v in result["violations"] if v["impact"] in ("serious", "critical")]
    assert bad == [], bad


def test_result_is_near_the_top_on_a_phone(browser, app_server) -> None:  # noqa: ANN001
    """On a 390 × 844 phone the result starts within the first screen: the settings are
    folded away, nothing long sits between the upload and the answer."""
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        page.goto(app_server.url)
        page.wait_for_selector("#diagnose-summary", timeout=WAIT_MS)
        box = page.locator("#diagnose-summary").bounding_box()
        shot(page, "phone")
        assert box is not None and box["y"] < 844, box
    finally:
        context.close()


def test_pick_an_example(page) -> None:  # noqa: ANN001
    # The app_server fixture always provides two stand-in examples: wait for the gallery to
    # render them (counting at once raced with Gradio's rendering and skipped the test).
    examples = page.locator("#examples img")
    examples.first.wait_for(timeout=WAIT_MS)
    examples.first.click()
    text = wait_for_diagnosis(page)
    assert "not a medical device" in text


def test_a_non_image_gets_a_clear_message(page, tmp_path: Path) -> None:  # noqa: ANN001
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a dermoscopic image")
    page.set_input_files("#diagnose-upload input[type=file]", str(notes))
    # The message sits on the upload box itself.
    message = page.locator("#diagnose-upload").get_by_text(re.compile("not an image", re.I))
    message.wait_for(timeout=WAIT_MS)
    assert message.is_visible()
    shot(page, "diagnose_non_image")
    # No result is shown for it.
    assert "Malignant probability" not in page.locator("#diagnose-summary").inner_text()


def test_generate_two_images(page) -> None:  # noqa: ANN001
    page.get_by_role("tab", name="Generate").click()
    assert page.locator("#gen-seed input[type=number]").input_value() == "-1"  # random
    for field, value in (("#gen-num", "2"), ("#gen-steps", "3"), ("#gen-seed", "42")):
        box = page.locator(f"{field} input[type=number]")
        box.fill(value)
        box.press("Enter")
    page.locator("#generate-button").click()
    images = page.locator("#gen-gallery img")
    page.wait_for_function("document.querySelectorAll('#gen-gallery img').length >= 2",
                           timeout=WAIT_MS)
    assert images.count() == 2
    summary = page.locator("#gen-summary")
    summary.get_by_text("synthetic image(s)").wait_for(timeout=WAIT_MS)
    text = summary.inner_text()
    assert "2 synthetic image(s)" in text and "seed 42" in text
    assert "not a medical device" in text
    captions = page.locator("#gen-gallery").inner_text()
    assert captions.count("P(mel)") == 2
    page.locator("#gen-zip").get_by_text(".zip").wait_for(timeout=WAIT_MS)
    shot(page, "generate")


def test_model_tab_shows_the_card_and_the_source(page, app_server) -> None:  # noqa: ANN001
    page.get_by_role("tab", name="Model").click()
    card = page.locator("#model-card")
    card.get_by_text("Weights in use").wait_for(timeout=WAIT_MS)
    text = card.inner_text()
    assert "CC BY-NC 4.0" in text and "2510.16887" in text and "Tschandl" in text
    assert "local folder" in text
    shot(page, "model")


# --------------------------------------------------------------------------- README screenshots
README_SHOTS = os.environ.get("CLASSNDIFF_README_SCREENSHOTS")  # e.g. docs
README_SHOT_BYTES = 400_000


def save_small(png: bytes, path: Path, max_height: int = 1500) -> Path:
    """A screenshot cropped to `max_height` and stored as a 256-colour PNG (< 400 KB)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.crop((0, 0, image.width, min(image.height, max_height)))
    colours = 256
    while True:
        image.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            path, optimize=True)
        if path.stat().st_size < README_SHOT_BYTES or colours <= 32:
            return path
        colours //= 2


def readme_upload(weights: str, folder: Path) -> Path:
    """An image made by the model itself (never a dataset image): an examples/ file, else one
    generated now."""
    from classndiff import ClassNDiffPipeline

    folder = ROOT / "examples"
    examples = sorted(folder.glob("nv_*.png")) + sorted(folder.glob("*.png"))
    if examples:  # a nevus first: the most common class, so the likeliest clean result
        return examples[0]
    from PIL import Image

    pipe = ClassNDiffPipeline.from_pretrained(weights or None, device="cpu")
    path = folder / "synthetic_nv.png"
    image = pipe.generate(dx="nv", num_images=1, seed=0).images[0]
    image.resize((256, 256), Image.Resampling.LANCZOS).save(path)
    return path


@pytest.mark.skipif(not README_SHOTS, reason="set CLASSNDIFF_README_SCREENSHOTS=docs (and "
                    "CLASSNDIFF_APP_TEST_WEIGHTS=<real weights>) to take the README screenshots")
def test_readme_screenshots(browser, tmp_path: Path) -> None:  # noqa: ANN001
    """docs/screenshot-{diagnose,generate,model}.png on the real model and the real examples/
    (this test starts its own server: no stand-in examples)."""
    from tests.app_server import running_app

    weights = os.environ.get("CLASSNDIFF_APP_TEST_WEIGHTS") or ""  # "": the app's default
    out = Path(README_SHOTS)
    out.mkdir(parents=True, exist_ok=True)
    upload = readme_upload(weights, tmp_path)
    with running_app(weights, tmp_path / "app") as server:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(server.url)
        page.wait_for_selector("#diagnose-upload", timeout=WAIT_MS)
        page.get_by_text("Model ready").wait_for(timeout=WAIT_MS)

        page.set_input_files("#diagnose-upload input[type=file]", str(upload))
        if "No prediction" in wait_for_diagnosis(page):
            # The model abstains on its own synthetic images when they look unlike the
            # training photos: show its guess with the warning, as a user can.
            page.locator("#predict-anyway input").check()
            page.locator("#diagnose-summary").get_by_text("Saliency:").wait_for(timeout=WAIT_MS)
        page.locator("#saliency img").wait_for(timeout=WAIT_MS)
        page.wait_for_function("document.querySelector('#saliency img').complete")
        shots = [save_small(page.screenshot(full_page=True), out / "screenshot-diagnose.png")]

        page.get_by_role("tab", name="Generate").click()
        page.locator("#generate-button").click()
        page.wait_for_function("document.querySelectorAll('#gen-gallery img').length >= 4",
                               timeout=WAIT_MS)
        page.locator("#gen-summary").get_by_text("synthetic image(s)").wait_for(timeout=WAIT_MS)
        page.wait_for_function("[...document.querySelectorAll('#gen-gallery img')]"
                               ".every(img => img.complete)")
        shots.append(save_small(page.screenshot(full_page=True), out / "screenshot-generate.png"))

        page.get_by_role("tab", name="Model").click()
        page.locator("#model-card").get_by_text("Weights in use").wait_for(timeout=WAIT_MS)
        shots.append(save_small(page.screenshot(full_page=True), out / "screenshot-model.png",
                                max_height=1400))
        context.close()
    for path in shots:
        assert path.stat().st_size < README_SHOT_BYTES, (path, path.stat().st_size)
