"""The learning-rate schedule every training loop shares."""

from __future__ import annotations

import math


def lr_factor(step: int, warmup: int, total: int, time_progress: float = 0.0,
              floor: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to `floor`. With a time budget, the decay follows
    whichever runs out first: steps or seconds."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_progress))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
