"""The `classndiff` command: one sub-command per task (`main.py`) and the measurement
harnesses they run (`checks.py`)."""

from classndiff.cli.main import main

__all__ = ["main"]
