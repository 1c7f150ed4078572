"""Preflight: warn when the storage path has less free space than the study's checkpoints need.

Every trial keeps `num_to_keep` checkpoints (trainables/footprint.py sizes one) after it
ends, plus, with --checkpoint-artifact best, a copy in MLflow's artifact store (the study
directory by default). Sample grids and Tune's files are small beside them.
"""
from __future__ import annotations

import os
import shutil
from typing import Callable

from study.config import StudyConfig
from study.storage import is_uri
from trainables.footprint import checkpoint_bytes

MODEL_KEYS = ("nr_filters", "nr_resnet", "num_mixtures", "dropout")


def _largest_trial(cfg: StudyConfig) -> dict:
    """The shared values with every searched model size at the top of its range."""
    trial = dict(cfg.trial)
    for key, domain in cfg.searched.items():
        if key in MODEL_KEYS:
            trial[key] = domain["high"] if "high" in domain else max(domain["values"])
    return trial


def checkpoint_bytes_needed(cfg: StudyConfig) -> tuple[int, int, int]:
    """(bytes in all, trials, bytes per checkpoint) the study's checkpoints take at the end."""
    trials = cfg.num_samples * bool(cfg.searched) + len(cfg.fixed_trials)
    models = 1 if cfg.trial.get("kind") == "baseline" and not cfg.searched else 2
    per_checkpoint = checkpoint_bytes(_largest_trial(cfg), models)
    copies = cfg.num_to_keep + (cfg.checkpoint_artifact == "best")
    return trials * copies * per_checkpoint, trials, per_checkpoint


def free_bytes(path: str) -> int:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def warn_if_short(cfg: StudyConfig, log: Callable[[str], None]) -> None:
    if is_uri(cfg.storage_path):
        return  # object stores: no free space to ask for
    need, trials, per = checkpoint_bytes_needed(cfg)
    free = free_bytes(cfg.storage_path)
    if free < need:
        log(f"warning: {_mb(free)} free under {cfg.storage_path}, but the study's checkpoints need about "
            f"{_mb(need)} ({trials} trials x {cfg.num_to_keep + (cfg.checkpoint_artifact == 'best')} checkpoints "
            f"x {_mb(per)}); a full disk stops the study (free space, then re-run the same command to resume)")


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"
