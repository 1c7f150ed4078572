"""Autoregressive sampling of PixelCNN++ and the denoising steps.

- `naive.py`: the reference samplers (one full forward pass per pixel), one-step
  gradient denoising (Tweedie) and two-step sampling.
- `fast.py`: the exact fast sampler (each activation computed once), a drop-in for
  `naive.sample`; `fast_ops.py`: its layer kernels over activation caches.
"""
