"""How results are shown: the SYNTHETIC stamp and PNG metadata, the saliency panel with
its colour scale, the skin-tone line, and the Markdown of a diagnosis or a counterfactual."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from classndiff.labels import DX_CODES, DX_NAMES, MALIGNANT_DX
from demo.settings import CAM_LABELS, DISCLAIMER, DISPLAY_SIZE, MALIGNANT, dx_label


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


def skin_tone_caution_markdown(check: dict[str, Any] | None) -> str | None:
    """The weights' whole-field re-tint figures for skin of the estimated group, said
    beside the answer they qualify (`Diagnosis.extras["skin_tone_check"]`)."""
    if not check:
        return None
    band = check.get("band")
    sure = ""
    if band and check.get("band_flip_rate") is not None:
        low, high = (f"{100 * v:.0f}" for v in band)
        sure = (f" overall and {percent(check['band_flip_rate'])} of the answers it was as "
                f"sure of as this one (top class {low}–{high} %)")
    before, after = check.get("sensitivity_before"), check.get("sensitivity_after")
    said = "it called {after} of the malignant lesions malignant, against {before}"
    if check.get("call_threshold") is not None:  # the model's own call, as shown above
        before, after = check.get("call_sensitivity_before"), check.get("call_sensitivity_after")
        said = (f"its malignant call (P(malignant) ≥ {percent(check['call_threshold'])}) "
                "flagged {after} of the malignant lesions, against {before}")
    sensitivity = ("; " + said.format(after=percent(after), before=percent(before))
                   + " on the originals" if all(
                       isinstance(v, (int, float)) and math.isfinite(v)
                       for v in (before, after)) else "")
    return (f"⚠ **Skin like this ({check['group']}) is rare in the training data.** In a proxy "
            f"test ({check['n']:,} {check['split']} images darkened over the whole field to "
            f"{check['group']} skin) the model changed {percent(check['flip_rate'])} of its "
            f"answers{sure}{sensitivity}. A low malignant probability reassures less here.")


def percent(p: float) -> str:
    return f"{100 * p:.1f} %"


def malignant_call_markdown(d: Any) -> str | None:
    """The thresholded call and what its threshold means; None without a fitted threshold."""
    call, threshold = getattr(d, "malignant_call", None), getattr(d, "malignant_threshold", None)
    if call is None or threshold is None:
        return None
    fit = (getattr(d, "extras", None) or {}).get("malignant_call") or {}
    verdict = ("**suspicious for malignancy**" if call else
               "**not flagged** (below the threshold; not a reassurance)")
    line = f"**Malignant call:** {verdict} — threshold {percent(threshold)}"
    if fit.get("sensitivity") is not None and fit.get("specificity") is not None:
        split = {"val": "validation"}.get(fit.get("split"), fit.get("split") or "validation")
        line += (f", fitted on the {split} split to catch at least "
                 f"{percent(fit['target_sensitivity'])} of malignant lesions (there it caught "
                 f"{percent(fit['sensitivity'])} and cleared {percent(fit['specificity'])} of "
                 "benign ones)")
    return line + "."


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
        call = malignant_call_markdown(d)
        if call:
            lines.append(call)
    tone = describe_skin_tone(getattr(d, "skin_tone", None))
    lines.append(f"**Skin-tone estimate:** {tone} — from the skin around the lesion (ITA), an "
                 "imaging proxy, not a measurement of the patient" if tone else
                 "**Skin-tone estimate:** not estimated (the model abstained)"
                 if d.prediction is None else
                 "**Skin-tone estimate:** not available for this model version")
    caution = skin_tone_caution_markdown((getattr(d, "extras", None) or {}).get(
        "skin_tone_check")) if d.prediction is not None else None
    if caution:
        lines.append(caution)
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
        "pictures this diagnosis"
        + (f" (of {cf.settings['candidates']} redraws, the one the model's own classifier "
           "finds most like it: the P after is the best of those, not a typical redraw)"
           if cf.settings.get("candidates", 1) > 1 else "")
        + "; the skin "
        + (f"more than {cf.settings['margin']} pixels from the lesion "
           + ("(fewer around a large lesion) " if cf.settings.get("margin_share") else "")
           if cf.settings.get("margin") else "around it ")
        + "is the upload's own"
        + ("; inside, the upload's own fine detail (hairs, skin lines) is laid over the redraw"
           if cf.settings.get("detail") else "")
        + ". The right image shows what changed (bright = more); at high "
        "strength the lesion is drawn almost anew, so read the overall look, not the detail. "
        "It is the model's idea of the class, not a prediction of how this lesion will evolve.",
        f"> {DISCLAIMER}"])
