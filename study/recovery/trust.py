"""The trust boundary of a study directory: only its owner may write there.

Ray Tune's experiment state (tuner.pkl, searcher-state-*.pkl, experiment_state-*.json with
cloudpickled fields) is unpickled on resume, so whoever can write into the study directory
can run code as the user who resumes it. A resume is refused when the directory, or
anything in it, is writable by group or others or belongs to another user. Object stores
(s3://, gs://) have no mode bits: there the bucket's policy is the boundary (docs/operations.md).
"""
from __future__ import annotations

import os
import stat

from study.config import StudyError
from study.storage import StudyDir

UNSAFE_BITS = stat.S_IWGRP | stat.S_IWOTH


def restrict_umask() -> None:
    """Everything this driver (and the local Ray it starts) creates is writable by the owner only:
    with a umask of 002 Tune's files would be group-writable and the next resume refused."""
    os.umask(os.umask(0) | 0o022)


def untrusted_reason(path: str) -> str | None:
    """Why `path` (followed through symlinks) is not the user's own, or None when it is."""
    info = os.stat(path)
    if info.st_uid != os.getuid():
        return f"{path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()})"
    if info.st_mode & UNSAFE_BITS:
        return f"{path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def check_trusted(study_dir: StudyDir) -> None:
    """Raise a one-line StudyError if a local study directory could hold someone else's code."""
    if not study_dir.is_local or not os.path.isdir(study_dir.path):
        return
    reason = untrusted_reason(study_dir.path)
    for root, dirs, files in os.walk(study_dir.path):
        if reason:
            break
        for name in dirs + files:
            full = os.path.join(root, name)
            if os.path.exists(full):  # a dangling link is nothing Tune can read
                reason = untrusted_reason(full)
            if reason:
                break
    if reason:
        raise StudyError(f"refusing to resume: {reason}; Tune unpickles the study's state, so whoever can "
                         f"write there can run code as you (docs/operations.md: Trust boundary). "
                         f"If you trust its contents: chmod -R go-w {study_dir.path}")
