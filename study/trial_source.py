"""A study's trials and their checkpoints after the search, without Ray: the study directory
(study.json, Tune's trial folders read as plain files) and the MLflow store.

Used by `python -m study.sample`. It works from the storage path, or from the MLflow store
alone (`--mlflow-uri` on a machine that sees only the server: trial runs log their best
checkpoint as the artifact folder `checkpoint/`, see study/tracking.py).
"""
from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from study import preflight
from study.config import StudyError
from study.storage import MLFLOW_DB, STUDY_FILE, StudyDir, normalize_storage_path
from study.tracking import ROLE_TAG, STATE_TAG, TRIAL_ID_TAG

CHECKPOINT_ARTIFACT = "checkpoint"   # trial runs' artifact folder of their best checkpoint
CHECKPOINT_FILE = "checkpoint.pt"    # trainables.checkpoint.FILE_NAME (study does not import torch)
RESULT_FILE = "result.json"          # Tune's per-trial results, one JSON object per reported epoch


def mode_of(metric: str) -> str:
    """min for distances and bits/dim, max for Inception-style scores (names: docs/architecture.md)."""
    return "max" if metric.startswith("is_") else "min"


@dataclass
class StudySource:
    name: str
    study_dir: StudyDir
    mlflow_uri: str
    objective: str                  # the metric that ranks trials (the study's first objective)
    mode: str                       # "min" | "max"
    extractor: str                  # feature extractor id of the study's sample metrics
    config: dict                    # study.json's config ({} when only MLflow is reachable)
    client: object                  # MlflowClient
    experiment_id: str


def open_study(name: str, storage_path: str, mlflow_uri: Optional[str]) -> StudySource:
    """The study `name` under storage_path, read from its study.json and MLflow store; StudyError if none."""
    study_dir = StudyDir(normalize_storage_path(storage_path), name)
    doc = _read_study_file(study_dir)
    config = doc.get("config", {})
    uri = mlflow_uri or config.get("mlflow_uri")
    if not uri:
        if not study_dir.is_local:
            raise StudyError(f"no {STUDY_FILE} in {study_dir.path}; give the study's --mlflow-uri")
        uri = f"sqlite:///{study_dir.path}/{MLFLOW_DB}"
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise StudyError(f"no study {name!r}: no MLflow store at {uri[len('sqlite:///'):]} "
                         "(wrong --study, --storage-path or --mlflow-uri?)")
    if uri.startswith(("http://", "https://")):
        preflight.check_mlflow(uri)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        raise StudyError(f"no study {name!r} in the MLflow store {uri}")
    tags = experiment.tags
    objective = (config.get("objective") or tags.get("objective", "").split(",") or [""])[0]
    if not objective:
        raise StudyError(f"study {name!r} records no objective (no {STUDY_FILE}, no objective tag)")
    mode = (config.get("mode") or [mode_of(objective)])[0]
    extractor = config.get("extractor") or tags.get("extractor", "")
    return StudySource(name, study_dir, uri, objective, mode, extractor, config, client, experiment.experiment_id)


def _read_study_file(study_dir: StudyDir) -> dict:
    try:
        return json.loads(study_dir.read_text(STUDY_FILE)) if study_dir.exists(STUDY_FILE) else {}
    except (OSError, ValueError):
        return {}


def trial_runs(source: StudySource) -> list:
    return source.client.search_runs([source.experiment_id], filter_string=f"tags.{ROLE_TAG} = 'trial'",
                                     max_results=5000, order_by=["attributes.start_time ASC"])


def choose_trial(source: StudySource, wanted: Optional[str]) -> object:
    """The run of --trial (run name, MLflow run id or Ray trial id), else the best completed trial."""
    runs = trial_runs(source)
    if wanted is None:
        return best_trial(source, runs)
    matches = [r for r in runs if wanted in (r.info.run_id, r.data.tags.get(TRIAL_ID_TAG))]
    matches = matches or [r for r in runs if r.info.run_name == wanted]
    if not matches:
        names = ", ".join(sorted({r.info.run_name for r in runs})[:8]) or "none"
        raise StudyError(f"no trial {wanted!r} in study {source.name!r} (trials: {names})")
    if len(matches) > 1:
        ids = ", ".join(r.data.tags.get(TRIAL_ID_TAG, r.info.run_id) for r in matches)
        raise StudyError(f"{len(matches)} trials are named {wanted!r}; choose one by its trial id: {ids}")
    return matches[0]


def best_trial(source: StudySource, runs: list) -> object:
    scored = [r for r in runs if r.data.tags.get(STATE_TAG) == "completed" and source.objective in r.data.metrics]
    if not scored:
        raise StudyError(f"study {source.name!r} has no completed trial with {source.objective} yet; "
                         "choose one with --trial")
    sign = 1.0 if source.mode == "min" else -1.0
    return min(scored, key=lambda r: sign * r.data.metrics[source.objective])


def _local_checkpoint(source: StudySource, trial_id: str) -> Optional[Path]:
    """The trial's best kept checkpoint folder by the objective, from Tune's result.json (plain files)."""
    if not source.study_dir.is_local or not trial_id:
        return None
    trial_dir = Path(source.study_dir.path, f"trial_{trial_id}")
    kept = {p.name: p for p in trial_dir.glob("checkpoint_*") if (p / CHECKPOINT_FILE).is_file()}
    if not kept:
        return None
    ranked = []
    results = trial_dir / RESULT_FILE
    for line in results.read_text().splitlines() if results.is_file() else []:
        result = json.loads(line)
        name = result.get("checkpoint_dir_name")
        if name in kept and isinstance(result.get(source.objective), (int, float)):
            ranked.append(((1.0 if source.mode == "min" else -1.0) * result[source.objective], name))
    return kept[min(ranked)[1]] if ranked else kept[max(kept)]  # unranked: the latest


@contextmanager
def checkpoint_dir(source: StudySource, run) -> Iterator[tuple[Path, str]]:
    """(a local folder holding checkpoint.pt, where it came from): the storage path, else MLflow."""
    local = _local_checkpoint(source, run.data.tags.get(TRIAL_ID_TAG, ""))
    if local is not None:
        yield local, str(local)
        return
    artifacts = source.client.list_artifacts(run.info.run_id, CHECKPOINT_ARTIFACT)
    if not any(a.path.endswith(CHECKPOINT_FILE) for a in artifacts):
        why = ("the study ran with --checkpoint-artifact none" if source.config.get("checkpoint_artifact") == "none"
               else "it logs one when the study ends")
        raise StudyError(f"trial {run.info.run_name!r} has no checkpoint: none under {source.study_dir.path} and "
                         f"no MLflow artifact {CHECKPOINT_ARTIFACT}/ ({why})")
    with tempfile.TemporaryDirectory(prefix="study-sample-") as tmp:
        path = source.client.download_artifacts(run.info.run_id, CHECKPOINT_ARTIFACT, tmp)
        yield Path(path), f"MLflow run {run.info.run_id} artifact {CHECKPOINT_ARTIFACT}/"
