"""MLflow bookkeeping of a study: one experiment, the study as the parent run, one child run per Tune trial.

`MlflowTracker` is a `TrialListener` (trainables/tune/listener.py). The layout is MLflow's
own for hyperparameter searches: the study's run (tag run_role=summary; it holds the study's
settings and, at the end, its summary) is the parent, every trial run a child of it
(`mlflow.parentRunId`), so the UI nests the trials under the study. Studies from before this
layout have a summary run beside the trial runs; resuming one makes that run the parent and
adopts the trial runs (they get the tag), and analysis reads both layouts the same way
(by run_role).

Ray's stock MLflowLoggerCallback keeps its run ids in memory, so a resumed study opens a
second run per trial; here a trial's run is found again by its `ray_trial_id` tag, and a
resumed trial, which repeats the epochs after its latest checkpoint, logs only epochs past
the last one the run holds (metric steps are epochs: no step is logged twice).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from study.config import StudyConfig
from study.groups import GROUP_TAG, LABEL_TAG, config_group, config_label
from study.storage import MLFLOW_ARTIFACTS, StudyDir
from trainables.tune.listener import TrialListener

EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # else MLflow 3 opens the GenAI view
TRIAL_ID_TAG = "ray_trial_id"
ROLE_TAG = "run_role"           # "trial" | "summary": how analysis tells the summary run apart
STATE_TAG = "state"             # running | completed | pruned | errored | interrupted
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under this run
NUMBER_TAG = "trial_number"     # 1, 2, ...: the order the study started its trials in (unique per study)
OPTUNA_FILE = "optuna_trials.json"
# MLflow 3's UI opens a "shared view" of the runs table from the experiment tag
# mlflow.sharedViewState.<key> (JSON: columns, sort) when the URL says viewStateShareKey=<key>
# (read from mlflow/server/js, 3.17). Runs sorted by a metric are listed flat (nested under their
# parent only when sorted by start time), so this view shows every trial with its parameters.
VIEW_KEY = "trials"
VIEW_TAG = "mlflow.sharedViewState." + VIEW_KEY


def run_name(config: dict[str, Any], searched: list[str], study_seed: int, number: Optional[int] = None) -> str:
    """What a run is, for people: `#3 smoothed s=0.30 K=5`, plus other searched keys and a non-default seed.

    The number makes names unique (two TPE proposals 0.4814 and 0.4842 both read s=0.48)."""
    parts = [f"#{number}"] if number is not None else []
    parts += [config["kind"], f"s={_fmt(config['noise_std'], 2)}", f"K={config['num_mixtures']}"]
    parts += [f"{k}={_fmt(config[k], 3)}" for k in searched if k not in ("noise_std", "num_mixtures", "kind")]
    if config.get("seed", study_seed) != study_seed:
        parts.append(f"seed={config['seed']}")
    return " ".join(parts)


def trials_view(cfg: StudyConfig) -> dict:
    """The shared runs-table view of a study: state, the hyperparameters, the objective and the bound as
    columns, sorted by the first objective, best first."""
    params = dict.fromkeys(("noise_std", "num_mixtures", *cfg.searched))
    metrics = dict.fromkeys((*cfg.objective, "bpd_bound"))
    return {"selectedColumns": [f"tags.`{STATE_TAG}`", *(f"params.`{k}`" for k in params),
                                *(f"metrics.`{m}`" for m in metrics)],
            "orderByKey": f"metrics.`{cfg.objective[0]}`", "orderByAsc": cfg.mode[0] == "min"}


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.{digits}f}" if 1e-2 <= abs(value) < 1e3 else f"{value:.{digits - 1}e}"
    return str(value)


def steps_to_log(last_logged: Optional[int], epoch: int) -> bool:
    """A result is logged only past the run's last logged epoch (a resumed trial repeats epochs)."""
    return last_logged is None or epoch > last_logged


@dataclass
class _Run:
    run_id: str
    last_step: Optional[int]    # highest epoch logged (None: nothing yet)
    name: str = ""              # the run's name (`#3 smoothed s=0.48 K=5`)


class MlflowTracker(TrialListener):
    def __init__(self, cfg: StudyConfig, study_dir: StudyDir):
        self.cfg, self.study_dir = cfg, study_dir
        self.experiment_id: Optional[str] = None
        self._parent: Optional[str] = None  # the study's run id
        self._client = None
        self._runs: dict[str, _Run] = {}
        self._hardware: dict[str, str] = {}  # trial id -> hardware tag already set
        self._tags: dict[str, dict[str, str]] = {}  # trial id -> trial_tags already set

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            # MLflow prints "View run ... / View experiment ..." at each run's end on a server; the
            # study prints its own line per trial and the UI link once (public switch, mlflow >= 2.x)
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

            self._client = MlflowClient(tracking_uri=self.cfg.mlflow_uri)
        return self._client

    # ------------------------------------------------------------ experiment

    def setup(self, gpus_per_trial: Optional[float] = None) -> str:
        """Get or create the study's experiment (tagged as model development) and its parent run; returns the
        experiment id. `gpus_per_trial` (resolved on the cluster) goes with the study's params."""
        exp = self.client.get_experiment_by_name(self.cfg.name)
        if exp is None:
            location = None
            if self.cfg.mlflow_uri.startswith("sqlite:") and self.study_dir.is_local:
                location = Path(self.study_dir.path, MLFLOW_ARTIFACTS).as_uri()
            self.experiment_id = self.client.create_experiment(self.cfg.name, artifact_location=location)
        elif exp.lifecycle_stage == "deleted":
            raise RuntimeError(f"MLflow experiment {self.cfg.name!r} is deleted; restore it or choose a new --name")
        else:
            self.experiment_id = exp.experiment_id
        self.client.set_experiment_tag(self.experiment_id, *EXPERIMENT_KIND)
        self.client.set_experiment_tag(self.experiment_id, VIEW_TAG, json.dumps(trials_view(self.cfg)))
        for key, value in (("space", self.cfg.space), ("objective", ",".join(self.cfg.objective)),
                           ("dataset", self.cfg.trial["dataset"]), ("extractor", self.cfg.extractor)):
            self.client.set_experiment_tag(self.experiment_id, key, value)
        self._parent = self.find_run("summary") or self._create_parent(gpus_per_trial)
        self.client.update_run(self._parent, status="RUNNING")
        self._adopt_orphans()
        return self.experiment_id

    @property
    def parent_run_id(self) -> str:
        """The study's run (found or created on first use: a tracker unpickled from an older study has none)."""
        if self._parent is None:
            self._parent = self.find_run("summary") or self._create_parent(None)
            self._adopt_orphans()
        return self._parent

    def _create_parent(self, gpus_per_trial: Optional[float]) -> str:
        from mlflow.entities import Param

        cfg = self.cfg
        run = self.client.create_run(self.experiment_id, run_name=cfg.name,
                                     tags={ROLE_TAG: "summary", "study": cfg.name, "space": cfg.space})
        params = {"space": cfg.space, "num_samples": cfg.num_samples, "objective": ",".join(cfg.objective),
                  "mode": ",".join(cfg.mode), "scheduler": cfg.scheduler, "extractor": cfg.extractor,
                  "seed": cfg.seed, "storage_path": cfg.storage_path, "gpus_per_trial": gpus_per_trial,
                  "cpus_per_trial": cfg.cpus_per_trial, "repeats": cfg.repeats}
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def _adopt_orphans(self) -> None:
        """Trial runs of an older study (a summary run beside them) become children of the study's run."""
        for run in self._trial_runs():
            if PARENT_TAG not in run.data.tags:
                self.client.set_tag(run.info.run_id, PARENT_TAG, self._parent)

    def _trial_runs(self, extra: str = "") -> list:
        return list(self.client.search_runs([self.experiment_id], filter_string=f"tags.{ROLE_TAG} = 'trial'" + extra,
                                            max_results=5000))

    def find_run(self, role: str, trial_id: Optional[str] = None) -> Optional[str]:
        """Id of the study's first run of `role` ("trial" | "summary"), of trial `trial_id` if given; None if none."""
        query = f"tags.{ROLE_TAG} = '{role}'" + (f" and tags.{TRIAL_ID_TAG} = '{trial_id}'" if trial_id else "")
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=10,
                                       order_by=["attributes.start_time ASC"])
        return runs[0].info.run_id if runs else None

    # ------------------------------------------------------------ TrialListener events

    def trial_started(self, trial_id: str, config: dict[str, Any], fixed: bool) -> None:
        run = self._run(trial_id)
        if run is None:
            from mlflow.entities import Param

            number = len(self._trial_runs()) + 1  # the driver starts trials one at a time
            tags = {ROLE_TAG: "trial", TRIAL_ID_TAG: trial_id, "study": self.cfg.name, "space": self.cfg.space,
                    "kind": config["kind"], "dataset": config["dataset"], "extractor": self.cfg.extractor,
                    "trial_origin": "fixed" if fixed else "optuna", STATE_TAG: "running",
                    PARENT_TAG: self.parent_run_id, NUMBER_TAG: str(number),
                    GROUP_TAG: config_group(config), LABEL_TAG: config_label(config, list(self.cfg.searched))}
            name = run_name(config, list(self.cfg.searched), self.cfg.seed, number)
            created = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
            params = [Param(k, str(v)) for k, v in sorted(config.items())]
            self.client.log_batch(created.info.run_id, params=params)
            self._runs[trial_id] = _Run(created.info.run_id, None, name)
        else:
            self.client.update_run(run.run_id, status="RUNNING")
            self.client.set_tag(run.run_id, STATE_TAG, "running")

    def _run(self, trial_id: str) -> Optional[_Run]:
        """The trial's run from the cache or, after a resume, from MLflow by the trial id tag."""
        if trial_id not in self._runs:
            run_id = self.find_run("trial", trial_id)
            if run_id is None:
                return None
            history = self.client.get_metric_history(run_id, "epoch")
            name = self.client.get_run(run_id).info.run_name
            self._runs[trial_id] = _Run(run_id, max((m.step for m in history), default=None), name)
        return self._runs[trial_id]

    def name(self, trial_id: str) -> Optional[str]:
        """The trial's run name (for the progress lines), None before its run exists."""
        run = self._run(trial_id)
        return run.name if run else None

    def trial_result(self, trial_id: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        run = self._run(trial_id)
        epoch = int(metrics["epoch"])
        if run is None or not steps_to_log(run.last_step, epoch):
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in sorted(metrics.items())]
        self.client.log_batch(run.run_id, metrics=batch)  # one call: the epoch lands whole or not at all
        run.last_step = epoch

    def trial_hardware(self, trial_id: str, description: str) -> None:
        """Tag the run with the hardware its latest epoch ran on (a retry may land elsewhere)."""
        run = self._run(trial_id)
        if run is not None and self._hardware.get(trial_id) != description:
            self.client.set_tag(run.run_id, "hardware", description)
            self._hardware[trial_id] = description

    def trial_tags(self, trial_id: str, tags: dict[str, str]) -> None:
        """Tag the run with the exact extractor of its distances (set again only when it changes)."""
        run = self._run(trial_id)
        if run is not None and self._tags.get(trial_id) != tags:
            for key, value in sorted(tags.items()):
                self.client.set_tag(run.run_id, key, value)
            self._tags[trial_id] = dict(tags)

    def trial_checkpoint(self, trial_id: str, directory: str) -> None:
        """Sample grids of the evaluation (PNG files named by sampler and epoch) as run artifacts."""
        run = self._run(trial_id)
        for png in sorted(Path(directory).glob("*.png")):
            self.client.log_artifact(run.run_id, str(png), artifact_path="samples")

    def trial_retrying(self, trial_id: str, failures: int) -> None:
        run = self._run(trial_id)
        if run is not None:
            self.client.set_tag(run.run_id, "num_failures", str(failures))

    def trial_ended(self, trial_id: str, state: str, error: Optional[str], optuna: Optional[dict],
                    metrics: dict[str, float]) -> None:
        run = self._run(trial_id)
        if run is None:  # failed before it started
            return
        self.client.set_tag(run.run_id, STATE_TAG, state)
        if error:
            self.client.set_tag(run.run_id, "error", error)
        if optuna:
            self.client.set_tag(run.run_id, "optuna_number", str(optuna["number"]))
            self.client.set_tag(run.run_id, "optuna_state", optuna["state"])
        self.client.set_terminated(run.run_id, status="FAILED" if state == "errored" else "FINISHED")

    def optuna_history(self, history: list[dict]) -> None:
        self.study_dir.write_text(OPTUNA_FILE, json.dumps(history, indent=1, default=str))
        if self.cfg.repeats > 1:
            self._update_optuna_states(history)

    def _update_optuna_states(self, history: list[dict]) -> None:
        """With --repeats, Optuna is told once every seed of a configuration has ended: the repeats that
        ended before the last one were tagged optuna_state RUNNING; they get the state Optuna has now."""
        states = {str(t["number"]): t["state"] for t in history}
        for run in self._trial_runs(" and tags.optuna_state = 'RUNNING'"):
            state = states.get(run.data.tags.get("optuna_number", ""))
            if state and state != "RUNNING":
                self.client.set_tag(run.info.run_id, "optuna_state", state)

    def study_ended(self, history: list[dict]) -> None:
        self.optuna_history(history)

    # ------------------------------------------------------------ after the Tuner

    def mark_interrupted(self) -> None:
        """Runs still RUNNING when the driver stops (Ctrl-C) become KILLED until a resume reopens them."""
        for run in self._trial_runs(" and attributes.status = 'RUNNING'"):
            self.client.set_tag(run.info.run_id, STATE_TAG, "interrupted")
            self.client.set_terminated(run.info.run_id, status="KILLED")

    def log_checkpoint(self, trial_id: str, directory: str) -> None:
        run = self._run(trial_id)
        if run is not None:
            self.client.log_artifacts(run.run_id, directory, artifact_path="checkpoint")

    def run_id(self, trial_id: str) -> Optional[str]:
        run = self._run(trial_id)
        return run.run_id if run else None

    def states(self) -> dict[str, str]:
        """Trial id -> state tag of every trial run of the study (MLflow is the source of truth)."""
        return {r.data.tags[TRIAL_ID_TAG]: r.data.tags.get(STATE_TAG, "") for r in self._trial_runs()}

    def names(self) -> dict[str, str]:
        """Trial id -> run name of every trial run of the study."""
        return {r.data.tags[TRIAL_ID_TAG]: r.info.run_name for r in self._trial_runs()}
