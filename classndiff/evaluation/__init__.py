"""Measurements and what they are written into: evaluation runs, bootstrap intervals,
generation metrics, camera shifts, saliency measures, the report and the model card."""
