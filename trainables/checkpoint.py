"""A Ray-independent checkpoint: models, optimizers, schedulers, EMA, epoch, RNG, config.

One file, `checkpoint.pt`, holding only tensors, dicts, lists and primitives so that it
loads with `torch.load(weights_only=True)` (no pickled code runs on load). Written to a
temporary name, fsync'ed and renamed (trainables/atomic_write.py), so a crash or a full disk
mid-write never leaves a torn checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from trainables.atomic_write import atomic_write

FORMAT_VERSION = 1
FILE_NAME = "checkpoint.pt"
# Fields that change the tensors' shapes or meaning: a checkpoint must match them exactly.
ARCHITECTURE_KEYS = ("kind", "dataset", "nr_filters", "nr_resnet", "num_mixtures", "denoiser_conditioning")
DENOISER_KEYS = ("denoiser_conditioning",)  # a baseline has no denoiser: its checkpoints from before the key still load


class CheckpointMismatchError(ValueError):
    """The checkpoint belongs to another architecture or model kind."""


def save_checkpoint(directory: str | os.PathLike, *, config: dict[str, Any], epoch: int, units: dict[str, dict],
                    rng: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write directory/checkpoint.pt atomically; `units` maps model name -> TrainUnit.state_dict()."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": dict(config),
        "epoch": int(epoch),
        "units": units,
        "rng": rng,
        "extra": extra or {},
    }
    return atomic_write(directory / FILE_NAME, lambda handle: torch.save(payload, handle))


def load_checkpoint(directory: str | os.PathLike, *, config: dict[str, Any] | None, map_location="cpu") -> dict[str, Any]:
    """Load and check a checkpoint against the flat `config` it is meant to resume (None: read
    it as it is, e.g. to sample from it; its own config is payload["config"])."""
    path = Path(directory) / FILE_NAME
    if not path.exists():
        raise FileNotFoundError(f"no {FILE_NAME} in {directory}")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointMismatchError(
            f"{path}: checkpoint format {payload.get('format_version')} is not the supported {FORMAT_VERSION}"
        )
    saved = payload["config"]
    if config is None:
        return payload
    keys = [k for k in ARCHITECTURE_KEYS if not (k in DENOISER_KEYS and config.get("kind") == "baseline")]
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs config {config.get(k)!r}" for k in keys if saved.get(k) != config.get(k)]
    if diffs:
        raise CheckpointMismatchError(f"{path} is for another architecture ({'; '.join(diffs)})")
    return payload


def rng_state() -> dict[str, Any]:
    """The global RNG states that training consumes (dropout; CUDA where present)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
