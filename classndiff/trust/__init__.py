"""Whether to trust an answer, as pure functions over tensors: calibration and abstention
(abstention.py), the validation-fitted malignant threshold (threshold.py), skin tone by ITA
and the skin re-tint (skintone.py), and the skin-tone counterfactual measure (fairness.py)."""
