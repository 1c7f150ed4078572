"""A study's trials out of MLflow (the source of truth) into two tidy pandas tables.

`load_trials("noise_sweep-digits")` -> StudyData with
- `trials`: one row per trial: identity, how it ended (MLflow `status` and the study's
  `state` tag, `pruned`), its configuration group (`config_group`: the same for the seeds
  of one configuration, recomputed from the params for runs of studies that did not tag
  it; `config_label`), its typed params, and the last value of every metric;
- `epochs`: one row per trial and epoch (metric step = epoch), every metric a column.

It works while a study runs: each trial's table is cut at the last epoch whose batch
(logged in one call by the study's tracker) was complete when its `epoch` history was read.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from analysis.conventions import (
    DEFAULT_STORAGE_PATH, GROUP_TAG, LABEL_TAG, MLFLOW_DB, ROLE_TAG, STATE_TAG, STUDY_FILE, SUMMARY_ROLE,
    TRIAL_ID_TAG, TRIAL_ROLE, config_group, extractors, metric_order,
)
from search_spaces.metric_names import EXTRACTOR_SHA_TAG, EXTRACTOR_TAGS
from search_spaces.study_paths import is_uri, join_storage

HTTP_PROBE_TIMEOUT_S = 5.0
# MLflow status of a trial run -> the study's state, for runs that carry no state tag
_STATE_OF_STATUS = {"RUNNING": "running", "FINISHED": "completed", "FAILED": "errored", "KILLED": "interrupted",
                    "SCHEDULED": "running"}
TRIAL_TAGS = ("kind", "dataset", "extractor", "space", "trial_origin", "error", "num_failures",
               "optuna_number", "optuna_state", "hardware", *EXTRACTOR_TAGS)  # the last three: reported per trial
GROUP_TAGS = (GROUP_TAG, LABEL_TAG)  # the trial's configuration group (study/groups.py)
EPOCH_ID_COLUMNS = ("trial_id", "run_name", "kind", "state", "noise_std", "num_mixtures", "seed", GROUP_TAG)


class AnalysisError(ValueError):
    """A bad input (unknown study, unreachable store): the CLI prints its one line and exits non-zero."""


@dataclass
class StudyData:
    study: str                      # the study name = MLflow experiment name
    mlflow_uri: str                 # where it was read from
    experiment_id: str
    experiment_tags: dict[str, str]  # space, objective, dataset, extractor (set by the study)
    trials: pd.DataFrame            # one row per trial (see module docstring)
    epochs: pd.DataFrame            # one row per trial and epoch
    summary_run_id: Optional[str]   # the study's summary run (None while the first session runs)
    summary_params: dict[str, str] = field(default_factory=dict)  # cpus_per_trial, gpus_per_trial, ...
    study_config: dict[str, Any] = field(default_factory=dict)    # study.json's config, where readable

    @property
    def extractor(self) -> Optional[str]:
        """The study's feature extractor id (experiment tag), else the first one in the metric names."""
        found = extractors(self.trials.columns)
        return self.experiment_tags.get("extractor") or (found[0] if found else None)

    @property
    def metric_names(self) -> list[str]:
        return [c for c in self.epochs.columns if c not in EPOCH_ID_COLUMNS and c != "epoch"]


# ---------------------------------------------------------------- where the study is

def study_dir(study: str, storage_path: Optional[str] = None) -> str:
    """`<storage_path>/<study>` as the study CLI spells it (~ expanded, file:// stripped, absolute)."""
    path = storage_path or DEFAULT_STORAGE_PATH
    if path.startswith("file://"):
        path = path[len("file://"):]
    if not is_uri(path):
        path = str(Path(os.path.expanduser(path)).resolve())
    return join_storage(path, study)


def read_study_file(directory: str) -> Optional[dict]:
    """study.json of a study directory (local or a pyarrow URI); None where there is none."""
    try:
        if not is_uri(directory):
            file = Path(directory, STUDY_FILE)
            return json.loads(file.read_text()) if file.is_file() else None
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(directory)
        with fs.open_input_stream(f"{root}/{STUDY_FILE}") as f:
            return json.loads(f.read().decode())
    except (OSError, ValueError):
        return None


def resolve_mlflow_uri(study: str, storage_path: Optional[str] = None, mlflow_uri: Optional[str] = None) -> str:
    """--mlflow-uri, else the --mlflow-uri the study recorded in study.json, else the study CLI's default:
    the sqlite file in the study directory (also when the directory has moved since)."""
    if mlflow_uri:
        return mlflow_uri
    directory = study_dir(study, storage_path)
    config = (read_study_file(directory) or {}).get("config", {})
    recorded = config.get("mlflow_uri")
    default_then = f"sqlite:///{config.get('storage_path', '').rstrip('/')}/{config.get('name')}/{MLFLOW_DB}"
    if recorded and recorded != default_then:
        return recorded  # a server or a store of its own: the study's --mlflow-uri
    # The default store lives in the study directory: found here even if the directory was moved.
    if is_uri(directory):
        raise AnalysisError(f"no {STUDY_FILE} in {directory}; a remote --storage-path needs --mlflow-uri")
    return f"sqlite:///{directory}/{MLFLOW_DB}"


def check_reachable(uri: str) -> None:
    """One clear line instead of MLflow creating an empty sqlite file or retrying a dead server for minutes."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_file():
            raise AnalysisError(f"no MLflow store at {path} (wrong --study or --storage-path? "
                                "a study run with --mlflow-uri needs the same --mlflow-uri here)")
    elif uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HTTP_PROBE_TIMEOUT_S).close()
        except urllib.error.HTTPError:
            return  # it answers; MLflow's own calls report auth or API errors
        except (urllib.error.URLError, OSError) as err:
            raise AnalysisError(f"MLflow server {uri} is unreachable ({getattr(err, 'reason', err)})") from None


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    check_reachable(uri)
    return MlflowClient(tracking_uri=uri)


# ---------------------------------------------------------------- loading

def load_trials(study: str, storage_path: Optional[str] = None, mlflow_uri: Optional[str] = None,
                client=None) -> StudyData:
    """Every trial of `study` from MLflow; see the module docstring. Raises AnalysisError for an unknown study."""
    from mlflow.exceptions import MlflowException

    uri = resolve_mlflow_uri(study, storage_path, mlflow_uri)
    client = client or client_for(uri)
    try:
        experiment = client.get_experiment_by_name(study)
        if experiment is None or experiment.lifecycle_stage == "deleted":
            names = [e.name for e in client.search_experiments() if e.name != "Default"]
            raise AnalysisError(f"no study {study!r} in MLflow at {uri}"
                                + (f"; studies there: {', '.join(sorted(names))}" if names else ""))
        runs = _all_runs(client, experiment.experiment_id)
        trial_runs = [r for r in runs if r.data.tags.get(ROLE_TAG) == TRIAL_ROLE]
        summaries = sorted((r for r in runs if r.data.tags.get(ROLE_TAG) == SUMMARY_ROLE),
                           key=lambda r: r.info.start_time)
        histories = {r.info.run_id: _history(client, r) for r in trial_runs}
    except MlflowException as err:
        raise AnalysisError(f"MLflow at {uri}: {str(err).splitlines()[0]}") from None
    trials = trials_table(trial_runs, histories)
    check_one_extractor(study, trials)
    epochs = epochs_table(trials, histories)
    doc = read_study_file(study_dir(study, storage_path)) or {}
    return StudyData(study=study, mlflow_uri=uri, experiment_id=experiment.experiment_id,
                     experiment_tags=dict(experiment.tags), trials=trials, epochs=epochs,
                     summary_run_id=summaries[0].info.run_id if summaries else None,
                     summary_params=dict(summaries[0].data.params) if summaries else {},
                     study_config=doc.get("config", {}))


def _all_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _history(client, run) -> pd.DataFrame:
    """(step, key, value, timestamp) of every metric of a run, cut at the last complete epoch.

    `epoch` is read first: the tracker logs an epoch's metrics in one batch, so every
    metric holds every step up to the last `epoch` step read; later steps are dropped
    (they landed while this run was being read and may be partial).
    """
    keys = sorted(run.data.metrics, key=lambda k: k != "epoch")
    rows = []
    for key in keys:
        rows += [(m.step, key, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, key)]
    frame = pd.DataFrame(rows, columns=["step", "key", "value", "timestamp"])
    if "epoch" in run.data.metrics and len(frame):
        last = frame.loc[frame.key == "epoch", "step"].max()
        frame = frame[frame.step <= last]
    # A step logged twice (not by the study's tracker) keeps its latest value.
    return frame.sort_values(["key", "step", "timestamp"]).drop_duplicates(["key", "step"], keep="last")


def typed(values: pd.Series) -> pd.Series:
    """MLflow params are strings: ints, floats, bools, None and strings back (one type per column)."""
    clean = values.map(lambda v: None if v is None or v is pd.NA or v != v or v == "None" else str(v))
    present = clean.dropna()
    if len(present) and present.isin(["True", "False"]).all():
        return clean.map({"True": True, "False": False, None: None}).astype("boolean" if len(present) < len(clean)
                                                                           else bool)
    if len(present) and pd.to_numeric(present, errors="coerce").notna().all():
        numbers = pd.to_numeric(clean, errors="coerce")
        if present.str.fullmatch(r"[+-]?\d+").all():
            return numbers.astype("Int64" if len(present) < len(clean) else "int64")
        return numbers.astype(float)
    return pd.Series(clean.tolist(), index=clean.index, dtype=None)  # pandas' own string dtype


def trials_table(runs: list, histories: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per trial run: identity, state, typed params, last value of every metric."""
    rows = []
    for run in runs:
        info, tags = run.info, run.data.tags
        history = histories[info.run_id]
        last = history.sort_values("step").groupby("key").last()
        epochs = int(last.loc["epoch", "value"]) if "epoch" in last.index else 0
        last_update = history.timestamp.max() if len(history) else info.start_time
        state = tags.get(STATE_TAG) or _STATE_OF_STATUS.get(info.status, info.status.lower())
        row = {"trial_id": tags.get(TRIAL_ID_TAG, info.run_id), "run_id": info.run_id,
               "run_name": info.run_name, "status": info.status, "state": state, "pruned": state == "pruned",
               "epochs": epochs, **{t: tags.get(t) for t in TRIAL_TAGS},
               GROUP_TAG: tags.get(GROUP_TAG) or config_group(run.data.params), LABEL_TAG: tags.get(LABEL_TAG),
               "start_time": _time(info.start_time), "end_time": _time(info.end_time),
               "last_update": _time(last_update)}
        row.update({f"param:{k}": v for k, v in run.data.params.items()})
        row.update({f"metric:{k}": v for k, v in last["value"].items() if k != "epoch"})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["trial_id", "run_id", "run_name", "status", "state", "pruned", "epochs",
                                     *TRIAL_TAGS, *GROUP_TAGS, "start_time", "end_time", "last_update"])
    params = [c for c in table.columns if c.startswith("param:")]
    for column in params:  # params win over the tags of the same name (kind, dataset, extractor)
        table[column[6:]] = typed(table.pop(column))
    metrics = [c for c in table.columns if c.startswith("metric:")]
    renamed = table[metrics].rename(columns=lambda c: c[7:])
    table = pd.concat([table.drop(columns=metrics), renamed[metric_order(renamed.columns)]], axis=1)
    table["num_failures"] = pd.to_numeric(table["num_failures"]).fillna(0).astype(int)
    table["optuna_number"] = pd.to_numeric(table["optuna_number"]).astype("Int64")
    table = table.sort_values(_sort_keys(table), kind="stable").reset_index(drop=True)
    table.attrs["params"] = [c[6:] for c in params]  # the hyperparameter columns (tables.repeat_keys)
    return table


def extractor_shas(trials: pd.DataFrame) -> list[str]:
    """The distinct extractor_sha tags of the trials, first seen first (runs from before the tag have none)."""
    return list(dict.fromkeys(trials[EXTRACTOR_SHA_TAG].dropna())) if EXTRACTOR_SHA_TAG in trials else []


def check_one_extractor(study: str, trials: pd.DataFrame) -> None:
    """Refuse a study whose distances come from different networks under one extractor id (a classifier
    trained on other data, or by a cluster node with its own cache): its tables would compare them."""
    shas = extractor_shas(trials)
    if len(shas) > 1:
        counts = trials[EXTRACTOR_SHA_TAG].value_counts()
        raise AnalysisError(f"study {study!r}: its trials' distances come from {len(shas)} different feature "
                            f"extractors (" + ", ".join(f"{EXTRACTOR_SHA_TAG} {s} in {counts[s]} trials" for s in shas)
                            + "), which are not comparable; give every node one classifier cache "
                            "($SMOOTHING_STUDY_CACHE on shared storage) and rerun the trials of the odd one out")


def _sort_keys(table: pd.DataFrame) -> list[str]:
    return [c for c in ("kind", "noise_std", "num_mixtures", "seed", "start_time") if c in table.columns]


def _time(millis: Optional[int]) -> Optional[pd.Timestamp]:
    return pd.Timestamp(millis, unit="ms", tz="UTC") if millis else None


def epochs_table(trials: pd.DataFrame, histories: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per trial and epoch: the trial's identity columns, `epoch`, then every metric."""
    frames = []
    for _, trial in trials.iterrows():
        history = histories[trial["run_id"]]
        if history.empty:
            continue
        wide = history.pivot(index="step", columns="key", values="value").drop(columns="epoch", errors="ignore")
        wide = wide.rename_axis(index="epoch", columns=None).reset_index()
        for column in reversed(EPOCH_ID_COLUMNS):
            if column in trial.index:
                wide.insert(0, column, trial[column])
        frames.append(wide)
    ids = [c for c in EPOCH_ID_COLUMNS if c in trials.columns]
    if not frames:
        return pd.DataFrame(columns=[*ids, "epoch"])
    table = pd.concat(frames, ignore_index=True)
    metrics = metric_order(c for c in table.columns if c not in ids and c != "epoch")
    table = table[[*ids, "epoch", *metrics]]
    table["epoch"] = table["epoch"].astype(int)
    return table
