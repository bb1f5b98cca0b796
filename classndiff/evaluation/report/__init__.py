"""The evaluation report: `classndiff evaluate WEIGHTS --report DIR` (build.py). Statistics,
figures, the measured sections and report.md each have their module."""

from classndiff.evaluation.report.build import build_report, rerender

__all__ = ["build_report", "rerender"]
