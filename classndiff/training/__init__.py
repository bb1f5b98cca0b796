"""Training: the joint loss (losses.py), augmentations (augment.py), the one training loop
(loop.py, with checkpoint.py and lr.py), the joint trainer (trainer.py) and the independent
evaluator (evaluator.py)."""
