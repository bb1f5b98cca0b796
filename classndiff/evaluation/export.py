"""A Hub-ready folder: weights, config, metrics and a model card."""

from __future__ import annotations

import shutil
from pathlib import Path

from classndiff.hub import CONFIG_NAME, WEIGHTS_NAME, resolve

CARD_TEMPLATE = """---
license: cc-by-nc-4.0
library_name: classndiff
tags: [dermoscopy, diffusion, image-classification, medical-imaging, class-n-diff]
datasets: [HAM10000]
---
# Class-N-Diff weights{name}

A jointly trained DiT denoiser and lesion classifier (Class-N-Diff, Imran & Munia, EMBC 2025,
arXiv 2510.16887), exported by `classndiff export`. Research demo, **not a medical device**.

Trained on HAM10000 (Tschandl, Rosendahl & Kittler, Scientific Data 5, 180161, 2018),
licensed CC BY-NC 4.0: these weights are for non-commercial use and must credit the authors.

```python
from classndiff import ClassNDiffPipeline
pipe = ClassNDiffPipeline.from_pretrained("{repo}")
```
See `metrics.json` (written by `classndiff evaluate`) for measured results.
"""


def export_folder(weights: str, output_dir: str | Path, repo_id: str | None = None) -> Path:
    source = resolve(weights, fallback=False).path
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME, "metrics.json", "temperature.json"):
        if (source / name).exists():
            shutil.copy2(source / name, output_dir / name)
    card = source / "MODEL_CARD.md"
    text = card.read_text() if card.exists() else CARD_TEMPLATE.format(
        name=f": {repo_id}" if repo_id else "", repo=repo_id or str(output_dir))
    (output_dir / "README.md").write_text(text)  # the Hub shows README.md as the card
    return output_dir
