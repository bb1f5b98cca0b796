"""The project's quality bars for the shipped weights (DESIGN.md, "Bars of the open work"):
the one table the model card and the evaluation report both hold their numbers against."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    threshold: float
    at_most: bool = False  # True where lower is better (ECE)

    def met(self, value: float) -> bool:
        return value <= self.threshold if self.at_most else value >= self.threshold

    def verdict(self, value: float) -> str:
        """The "met" cell of a markdown table of bars."""
        return "yes" if self.met(value) else "**no**"

    def __str__(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.threshold:.2f}"


BARS: dict[str, Bar] = {
    "accuracy": Bar(0.82),
    "balanced_accuracy": Bar(0.70),
    "macro_auc": Bar(0.95),
    "malignant_auc": Bar(0.93),
    "ece": Bar(0.05, at_most=True),
    "class_fidelity": Bar(0.70),  # generated images, independent evaluator, macro
    "energy_in_mask": Bar(0.60),  # Grad-CAM energy inside the expert lesion mask, mean
}
