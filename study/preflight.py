"""Checks that run before anything is written: a bad input fails in one line, touching nothing."""
from __future__ import annotations

import base64
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from study.config import GPUS_PER_TRIAL_BY_DATASET, GPUS_PER_TRIAL_OTHERWISE, StudyConfig, StudyError
from study.storage import check_writable

MLFLOW_TIMEOUT_S = 5.0


def check_storage(cfg: StudyConfig) -> None:
    try:
        check_writable(cfg.storage_path)
    except Exception as err:  # PermissionError, NotADirectoryError, pyarrow's for bad URIs
        raise StudyError(f"storage path {cfg.storage_path} is not writable ({type(err).__name__}: {err})") from None


def check_mlflow(uri: str) -> None:
    """HTTP(S): the server answers an authenticated search within MLFLOW_TIMEOUT_S;
    sqlite: the database's directory can be created and written. Other schemes pass."""
    if uri.startswith(("http://", "https://")):
        _check_http(uri.rstrip("/"))
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        try:
            check_writable(str(path.parent))
        except Exception as err:
            raise StudyError(f"MLflow store {uri} is not writable ({type(err).__name__}: {err})") from None
    elif "://" not in uri or uri.startswith("file:"):
        raise StudyError(f"MLflow 3 refuses file stores ({uri}); use a sqlite:/// URI or an http(s) server")


def check_optuna_storage(url) -> None:
    """--optuna-storage: the database answers a connection (nothing is created in it here)."""
    if not url:
        return
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as err:  # sqlalchemy's ArgumentError, OperationalError, a missing driver (ModuleNotFoundError)
        reason = " ".join(str(getattr(err, "orig", None) or err).split())[:200]
        raise StudyError(f"Optuna storage {redact_url(url)} is unreachable ({type(err).__name__}: {reason})") from None


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def _check_http(base: str) -> None:
    url = f"{base}/api/2.0/mlflow/experiments/search"
    request = urllib.request.Request(url, data=json.dumps({"max_results": 1}).encode(),
                                     headers={"Content-Type": "application/json", **_auth_headers()})
    try:
        with urllib.request.urlopen(request, timeout=MLFLOW_TIMEOUT_S):
            return
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise StudyError(f"MLflow server {base} refused the credentials (HTTP {err.code}); "
                             "set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN") from None
        raise StudyError(f"MLflow server {base} answered HTTP {err.code} to {url}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise StudyError(f"MLflow server {base} is unreachable ({reason})") from None


def _auth_headers() -> dict[str, str]:
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    if token:
        return {"Authorization": f"Bearer {token}"}
    return {}


def resolve_gpus(cfg: StudyConfig, cluster: dict[str, float]) -> float:
    """GPUs per trial (per worker of a data-parallel trial) on this cluster; a GPU request the
    cluster can never place fails at once (Tune would otherwise leave the trials PENDING forever)."""
    available = cluster.get("GPU", 0.0)
    workers = int(cfg.trial.get("workers_per_trial", 1))
    asked: Optional[float] = cfg.gpus_per_trial
    if asked is None:
        if available == 0:
            return 0.0
        asked = GPUS_PER_TRIAL_BY_DATASET.get(cfg.trial["dataset"], GPUS_PER_TRIAL_OTHERWISE) if workers == 1 else 1.0
    if asked > 0 and available < asked * workers:
        need = f"--workers-per-trial {workers} x --gpus-per-trial {asked:g}" if workers > 1 else f"--gpus-per-trial {asked:g}"
        raise StudyError(f"{need} but the Ray cluster has {available:g} GPUs "
                         "(trials would stay pending); use --gpus-per-trial 0 or join a GPU cluster with --address")
    if workers > 1 and 0 < asked < 1:
        raise StudyError(f"--gpus-per-trial {asked:g} with --workers-per-trial {workers}: each data-parallel worker "
                         "needs a whole GPU (NCCL runs one rank per GPU)")
    return asked


def check_cpus(cfg: StudyConfig, cluster: dict[str, float]) -> None:
    workers = int(cfg.trial.get("workers_per_trial", 1))
    need = cfg.cpus_per_trial * workers
    if cluster.get("CPU", 0.0) < need:
        asked = (f"--workers-per-trial {workers} x --cpus-per-trial {cfg.cpus_per_trial:g}" if workers > 1
                 else f"--cpus-per-trial {cfg.cpus_per_trial:g}")
        raise StudyError(f"{asked} but the Ray cluster has {cluster.get('CPU', 0.0):g} CPUs (trials would stay pending)")


def max_concurrent(cfg: StudyConfig, cluster: dict[str, float], gpus_per_trial: float) -> int:
    """Trials at once: the flag's value, or for data-parallel trials as many as the cluster
    holds all workers of (their Tune trials hold no CPU, so Tune alone would start them all
    and leave the Train runs waiting for workers, as Ray's Train-in-Tune guide warns)."""
    workers = int(cfg.trial.get("workers_per_trial", 1))
    if cfg.max_concurrent or workers == 1:
        return cfg.max_concurrent
    fits = cluster.get("CPU", 0.0) // (cfg.cpus_per_trial * workers)
    if gpus_per_trial > 0:
        fits = min(fits, cluster.get("GPU", 0.0) // (gpus_per_trial * workers))
    return max(1, int(fits))
