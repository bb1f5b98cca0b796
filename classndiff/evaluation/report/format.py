"""Number and table formatting for report.md."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def fmt(ci: dict[str, Any] | None, digits: int = 3) -> str:
    """0.812 [0.790, 0.833]; n/a when undefined."""
    if not ci or ci.get("value") is None:
        return "n/a"
    text = f"{ci['value']:.{digits}f}"
    if ci.get("lo") is not None and ci.get("hi") is not None:
        text += f" [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"
    return text


def num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
