"""What users call: the ClassNDiff pipeline (diagnose, generate, counterfactual) over the
model, with upload checks (inputs.py) and the counterfactual edit (counterfactual.py)."""
