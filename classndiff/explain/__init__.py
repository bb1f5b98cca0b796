"""Where the classifier looked: class-activation maps and overlays (saliency.py)."""
