"""Bytes a trial's checkpoint takes on disk, from its flat config, without building its models.

A checkpoint (trainables/checkpoint.py, Experiment.save) holds per model float32 weights,
Adam's two moments and the EMA copy: 4 tensors x 4 bytes per parameter. A smoothed trial
trains two models (p(x~) and the denoiser p(x | x~), which adds the encoder of x~), a baseline one. Measured beside it:
~0.4 KB per tensor entry, the RNG states and the config (tests/study/test_full_disk.py).
"""
from __future__ import annotations

from typing import Any

BYTES_PER_PARAM = 4 * 4     # float32 x (weights, Adam m, Adam v, EMA)


def parameter_count(trial: dict[str, Any], conditional: bool) -> int:
    """Parameters of one PixelCNN++ of these flat trial values (the denoiser, `conditional`, adds
    the encoder of x~ unless it is stacked; a study.json from before denoiser_conditioning lacks it:
    TrialConfig's default), counted on the meta device: no memory, no compute."""
    import torch

    from trainables.data import image_shape
    from trainables.pixelcnnpp import PixelCNNpp

    channels = image_shape(trial["dataset"], int(trial.get("image_size", 0) or 0))[0]
    with torch.device("meta"):
        net = PixelCNNpp(channels, int(trial["nr_filters"]), int(trial["nr_resnet"]), int(trial["num_mixtures"]),
                         float(trial["dropout"]), conditional, trial.get("denoiser_conditioning", "encoder"))
    return sum(p.numel() for p in net.parameters())


def checkpoint_bytes(trial: dict[str, Any], models: int) -> int:
    """Bytes of a checkpoint of `models` networks: the smoothed model (or the baseline), then the denoiser."""
    counts = [parameter_count(trial, conditional=False), parameter_count(trial, conditional=True)][:models]
    return BYTES_PER_PARAM * sum(counts)
