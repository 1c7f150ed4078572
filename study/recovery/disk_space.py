"""A full disk: the preflight's warning when the storage path has less free space than the study's
checkpoints need, and `disk_full_reason`, which tells the driver's one line that a disk filled.

Every trial keeps `num_to_keep` checkpoints (trainables/footprint.py sizes one) after it
ends, plus, with --checkpoint-artifact best, a copy in MLflow's artifact store (the study
directory by default). Sample grids and Tune's files are small beside them.
"""
from __future__ import annotations

import errno
import os
import shutil
from typing import Callable, Optional

from study.config import StudyConfig
from study.storage import is_uri
from trainables.footprint import checkpoint_bytes

MODEL_KEYS = ("nr_filters", "nr_resnet", "num_mixtures", "dropout")
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_MESSAGES = ("no space left on device", "database or disk is full", "disk quota exceeded")


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


def disk_full_reason(err: BaseException) -> Optional[str]:
    """'<file>: No space left on device' if `err` or an exception it was raised from is a full
    disk (OSError ENOSPC/EDQUOT, SQLite's 'database or disk is full', also wrapped by
    SQLAlchemy, MLflow or Ray); None otherwise."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in FULL_ERRNOS:
            where = f"{err.filename}: " if err.filename else ""
            return f"{where}{os.strerror(err.errno)}"
        text = str(err)
        lowered = text.lower()
        for message in FULL_MESSAGES:
            if message in lowered:
                start = lowered.index(message)
                return text[start:start + len(message)]
        err = err.__cause__ or err.__context__
    return None
