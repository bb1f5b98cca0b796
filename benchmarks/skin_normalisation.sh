#!/usr/bin/env bash
# Skin-tone normalisation at inference, chosen on the VALIDATION split. Every training arm
# that lowered the proxy flip rate (re-tint, consistency, generated brown/darker lesions) left
# it above 10 % or paid in rare classes or melanoma sensitivity (README, fairness). This arm
# trains nothing: before the classifier reads an image, the skin around the lesion (segmented
# by colour contrast with the image's border, so a lesion paler than dark skin is found too)
# is re-tinted to one reference tone (`model.classifier_skin_reference`,
# trust/skintone.normalise_skin_tone), so the answer cannot lean on the surrounding skin's
# colour. The re-tint is the same CIELAB operation as the flip test's: a lower flip rate is
# partly by construction, and says nothing about how lesions look on darker skin.
#
# Rule, written before these numbers were seen (session 20): the reference is the training
# split's median skin (per image the median L* and b* outside the expert mask at the model's
# pixel size, then the median over images; ITA from them). On validation, the weights as
# shipped (their test-time views) read every image with an expert mask without (A) and with
# (B) the normalisation. B is written into the weights only if, on the unshifted images, its
# accuracy and malignant AUC are each ≥ A's − 0.01 and its malignant sensitivity
# (P(malignant) ≥ 0.5) ≥ A's − 0.02, and its flip rate to darker skin is at least 2 points
# below A's. Then the test split once (benchmarks/skin_tone_counterfactual.py) and the
# shipped model's reports refreshed.
#
#   bash benchmarks/skin_normalisation.sh [WEIGHTS] [OUT]      # WRITE=1: into WEIGHTS
set -euo pipefail
WEIGHTS=${1:-weights/embedded}
OUT=${2:-reports/embedded/skin_normalisation}
mkdir -p "$OUT"
[ -f "$OUT/reference.json" ] || python - "$WEIGHTS" "$OUT/reference.json" <<'PY'
import json, sys
from pathlib import Path

import numpy as np
import torch
from kornia.color import rgb_to_lab

from classndiff.config import ClassNDiffConfig
from classndiff.data import LesionDataset

size = ClassNDiffConfig.from_json(Path(sys.argv[1]) / "config.json").model.pixel_size
data = LesionDataset(None, "train", image_size=size, masks=True)
keep = np.flatnonzero(data.has_mask.numpy())
medians = []
for start in range(0, len(keep), 256):
    chunk = keep[start:start + 256]
    lab = rgb_to_lab(data.images[chunk].double() / 255).numpy()
    skin = ~data.masks[chunk, 0].numpy().astype(bool)
    medians += [np.median(im[:, s], axis=1) for im, s in zip(lab, skin) if s.sum() >= 16]
lightness, _, b_star = np.median(np.array(medians), axis=0)
ita = float(np.degrees(np.arctan((lightness - 50) / b_star)))
record = {"ita": round(ita, 2), "b_star": round(float(b_star), 2),
          "lightness": round(float(lightness), 2), "images": len(medians), "split": "train"}
Path(sys.argv[2]).write_text(json.dumps(record, indent=2) + "\n")
print(record)
PY
read -r ITA B <<< "$(python -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['ita'], r['b_star'])" "$OUT/reference.json")"
[ -f "$OUT/val_off.json" ] || python benchmarks/skin_tone_counterfactual.py --weights "$WEIGHTS" \
    --split val --no-skin-reference --output "$OUT/val_off.json" > "$OUT/val_off.log" 2>&1
[ -f "$OUT/val_on.json" ] || python benchmarks/skin_tone_counterfactual.py --weights "$WEIGHTS" \
    --split val --skin-reference "$ITA" "$B" --output "$OUT/val_on.json" \
    --figure "$OUT/val_on.png" > "$OUT/val_on.log" 2>&1
python - "$OUT" "$WEIGHTS" "${WRITE:-0}" <<'PY'
import json, sys
from pathlib import Path
out, weights, write = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
off, on = (json.loads((out / f"val_{arm}.json").read_text()) for arm in ("off", "on"))
a, b = off["targets"]["darker"], on["targets"]["darker"]
for name, arm, r in (("A off", off, a), ("B on", on, b)):
    print(f"{name}: accuracy {r['accuracy_before']:.3f}, malignant AUC "
          f"{r['malignant_auc_before']:.3f}, malignant sensitivity "
          f"{r['malignant_sensitivity_before']:.3f}, flips → brown "
          f"{arm['targets']['brown']['flip_rate']:.3f}, → darker {r['flip_rate']:.3f}")
checks = {
    "accuracy ≥ A − 0.01": b["accuracy_before"] >= a["accuracy_before"] - 0.01,
    "malignant AUC ≥ A − 0.01": b["malignant_auc_before"] >= a["malignant_auc_before"] - 0.01,
    "malignant sensitivity ≥ A − 0.02":
        b["malignant_sensitivity_before"] >= a["malignant_sensitivity_before"] - 0.02,
    "flips → darker ≥ 2 points below A": b["flip_rate"] <= a["flip_rate"] - 0.02,
}
for check, ok in checks.items():
    print(f"  {'met' if ok else 'MISSED'}: {check}")
chosen = all(checks.values())
print(json.dumps({"normalise": chosen, "skin_reference": on["skin_reference"]}))
if chosen and write == "1":  # through the project's config type: an unknown key fails loudly
    from classndiff.config import ClassNDiffConfig

    path = weights / "config.json"
    ClassNDiffConfig.from_json(path).override(
        {"model.classifier_skin_reference": on["skin_reference"]}).to_json(path)
    print(f"written into {path}")
PY
