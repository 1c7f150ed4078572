"""Before a resume: point every trial whose saved latest checkpoint is gone at its newest complete one.

Tune prunes a trial's checkpoints (num_to_keep) as soon as it registers a new one, but saves
its experiment state only every so often. A driver killed in between leaves a state whose
latest checkpoint no longer exists while a newer one does; Tune's restore then ends the trial
with "Could not recover from checkpoint as it does not exist on storage anymore". Since Tune
never deletes the checkpoint it registered last, a trial in that state always has a newer
checkpoint on storage: this module finds it and writes it into the state, before the Tuner
is restored. Nothing is deleted here; Tune prunes the surplus at the trial's next checkpoint.

Complete means: `checkpoint.pt` is a whole zip archive (torch's format: its central
directory is written last, so a copy cut by the kill is refused) and `metrics.json` (written
by the trainable beside it, the metrics reported with it) parses. The private layout of
Tune's state is read and written only through trainables/tune/internals.py.
"""
from __future__ import annotations

import json
import zipfile
from typing import Callable, Optional

import pyarrow.fs

from trainables.tune import internals

METRICS_FILE = "metrics.json"  # beside checkpoint.pt: the metrics reported with the checkpoint
CHECKPOINT_PREFIX = "checkpoint_"


def _exists(fs: pyarrow.fs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def checkpoint_metrics(fs: pyarrow.fs.FileSystem, directory: str, known: Optional[dict] = None) -> Optional[dict]:
    """The metrics of a complete checkpoint directory, or None when it is cut or partial.
    `known` (path -> metrics, from Tune's saved state) serves a checkpoint written before
    metrics.json existed."""
    from trainables.checkpoint import FILE_NAME as CHECKPOINT_FILE  # here: the driver imports this module without torch

    try:
        with fs.open_input_file(f"{directory}/{CHECKPOINT_FILE}") as f:
            with zipfile.ZipFile(f) as archive:  # reads the central directory, at the end of the file
                if not archive.namelist():
                    return None
        if directory in (known or {}):
            return known[directory]
        with fs.open_input_stream(f"{directory}/{METRICS_FILE}") as f:
            metrics = json.loads(f.read().decode())
    except (OSError, zipfile.BadZipFile, ValueError, UnicodeDecodeError):
        return None
    return metrics if isinstance(metrics, dict) else None


def newest_complete_checkpoint(fs: pyarrow.fs.FileSystem, trial_dir: str,
                               known: Optional[dict] = None) -> Optional[tuple[str, dict]]:
    """(path, metrics) of the newest complete checkpoint_* directory of a trial, or None."""
    selector = pyarrow.fs.FileSelector(trial_dir, allow_not_found=True)
    names = sorted((info.base_name for info in fs.get_file_info(selector)
                    if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith(CHECKPOINT_PREFIX)),
                   reverse=True)
    for name in names:
        metrics = checkpoint_metrics(fs, f"{trial_dir}/{name}", known)
        if metrics is not None:
            return f"{trial_dir}/{name}", metrics
    return None


def repair_run_metadata(run_metadata) -> Optional[str]:
    """Fix one trial's restored run metadata in place; a line saying what changed, or None.

    Missing checkpoints leave the manager's list; when the latest is missing, the newest
    complete checkpoint in its trial directory becomes the latest (and joins the list)."""
    manager = internals.checkpoint_manager(run_metadata)
    latest = internals.latest_checkpoint_result(manager) if manager else None
    if latest is None or latest.checkpoint is None:
        return None
    checkpoint = latest.checkpoint
    fs = checkpoint.filesystem
    if _exists(fs, checkpoint.path):
        return None
    kept = [r for r in internals.checkpoint_results(manager) if r.checkpoint and _exists(fs, r.checkpoint.path)]
    trial_dir = checkpoint.path.rstrip("/").rsplit("/", 1)[0]
    found = newest_complete_checkpoint(fs, trial_dir, {r.checkpoint.path: r.metrics for r in kept})
    gone = checkpoint.path.rsplit("/", 1)[1]
    if found is None:
        internals.set_checkpoint_results(manager, kept, latest=None)
        return f"{trial_dir}: its latest checkpoint {gone} is gone and no complete one is left: the trial restarts"
    path, metrics = found
    newest = next((r for r in kept if r.checkpoint.path == path), None)
    if newest is None:
        newest = internals.training_result(path, fs, metrics)
        kept = internals.insert_by_score(manager, kept, newest)
    internals.set_checkpoint_results(manager, kept, latest=newest)
    return f"{trial_dir}: its latest checkpoint {gone} is gone (pruned by Tune just before a kill); resuming from {path.rsplit('/', 1)[1]}"


def repair_experiment_state(experiment_path: str, log: Callable[[str], None] = print) -> list[str]:
    """Repair the newest experiment_state-*.json of the study at `experiment_path` (a local
    path or URI) in place, written whole (a temporary file, then a rename); the lines logged."""
    fs, root = pyarrow.fs.FileSystem.from_uri(experiment_path) if "://" in experiment_path else (
        pyarrow.fs.LocalFileSystem(), experiment_path)
    state_path = internals.newest_experiment_state(fs, root)
    if state_path is None:
        return []
    with fs.open_input_stream(state_path) as f:
        state = json.loads(f.read().decode())
    lines = []
    trial_data = internals.experiment_trial_data(state)
    for index, (trial_json, run_metadata_json) in enumerate(trial_data):
        run_metadata = internals.decode_run_metadata(run_metadata_json)
        line = repair_run_metadata(run_metadata)
        if line:
            trial_data[index] = [trial_json, internals.encode_run_metadata(run_metadata)]
            lines.append(line)
    if lines:
        tmp = f"{state_path}.repair.tmp"
        with fs.open_output_stream(tmp) as f:
            f.write(json.dumps(state, indent=2).encode())
        fs.move(tmp, state_path)
        for line in lines:
            log(line)
    return lines
