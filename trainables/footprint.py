"""Bytes a trial's checkpoint takes on disk, from its flat config, without building its models.

A checkpoint (trainables/checkpoint.py, Experiment.save) holds per model float32 weights,
Adam's two moments and the EMA copy: 4 tensors x 4 bytes per parameter. A smoothed trial
trains two models (p(x~) and the denoiser p(x | x~)), a baseline one. Measured beside it:
~0.4 KB per tensor entry, the RNG states and the config (tests/study/test_full_disk.py).
"""
from __future__ import annotations

from typing import Any

BYTES_PER_PARAM = 4 * 4     # float32 x (weights, Adam m, Adam v, EMA)


def parameter_count(trial: dict[str, Any]) -> int:
    """Parameters of one PixelCNN++ (the conditional denoiser's, the larger) of these flat
    trial values, counted on the meta device: no memory, no compute."""
    import torch

    from trainables.data import IMAGE_SHAPES
    from trainables.pixelcnnpp import PixelCNNpp

    channels = IMAGE_SHAPES[trial["dataset"]][0]
    with torch.device("meta"):
        net = PixelCNNpp(channels, int(trial["nr_filters"]), int(trial["nr_resnet"]), int(trial["num_mixtures"]),
                         float(trial["dropout"]), True)
    return sum(p.numel() for p in net.parameters())


def checkpoint_bytes(trial: dict[str, Any], models: int) -> int:
    return models * BYTES_PER_PARAM * parameter_count(trial)
