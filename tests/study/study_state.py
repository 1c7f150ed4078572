"""Reading a study's three records side by side, independently of the product's code: Ray Tune's
saved experiment state, Optuna's trial history, MLflow's database (read with sqlite3)."""
from __future__ import annotations

import glob
import json
import os
import pickle
import sqlite3


def tune_trials(study_dir) -> dict[str, dict]:
    """Trial id -> {"status", "config", "last_result"} from the newest experiment_state-*.json."""
    newest = max(glob.glob(os.path.join(study_dir, "experiment_state-*.json")))
    with open(newest) as f:
        state = json.load(f)
    out = {}
    for trial_json, runtime in state["trial_data"]:
        trial = json.loads(trial_json)
        meta = runtime if isinstance(runtime, dict) else json.loads(runtime)
        out[trial["trial_id"]] = {"status": trial["status"], "config": trial["config"],
                                  "last_result": meta.get("last_result") or {}}
    return out


def optuna_trials(study_dir) -> list[dict]:
    with open(os.path.join(study_dir, "optuna_trials.json")) as f:
        return json.load(f)


def mlflow_rows(study_dir, query: str, *args) -> list[tuple]:
    with sqlite3.connect(f"file:{study_dir}/mlflow.db?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(query, args).fetchall()


def trial_runs(study_dir) -> dict[str, dict]:
    """ray_trial_id -> {"run", "status", "state", "optuna_number", "epochs"} of runs with run_role=trial."""
    runs = {}
    for run_uuid, status in mlflow_rows(study_dir, "select r.run_uuid, r.status from runs r join tags t on "
                                        "t.run_uuid = r.run_uuid where t.key = 'run_role' and t.value = 'trial' "
                                        "and r.lifecycle_stage = 'active'"):
        tags = dict(mlflow_rows(study_dir, "select key, value from tags where run_uuid = ?", run_uuid))
        epochs = [s for (s,) in mlflow_rows(study_dir, "select step from metrics where run_uuid = ? and "
                                            "key = 'epoch' order by step", run_uuid)]
        runs[tags["ray_trial_id"]] = {"run": run_uuid, "status": status, "state": tags.get("state"),
                                      "optuna_number": tags.get("optuna_number"), "epochs": epochs}
    return runs


def duplicated_metric_points(study_dir) -> int:
    """Metric points logged more than once for the same run, key and step (MLflow keeps both)."""
    rows = mlflow_rows(study_dir, "select count(*) from (select run_uuid, key, step from metrics "
                                  "group by run_uuid, key, step having count(*) > 1)")
    return rows[0][0]


def asha_rungs(study_dir) -> dict[int, set[str]]:
    """Milestone -> trial ids recorded in ASHA's rungs as Tune saved them (callback-states-*.pkl;
    a test's own study: trusted). Reads ASHA's private rungs to check them from outside: a test's
    independent look, not the product's."""
    newest = max(glob.glob(os.path.join(study_dir, "callback-states-*.pkl")))
    with open(newest, "rb") as f:
        states = pickle.load(f)
    saved = next(s["saved"] for s in states.values() if isinstance(s, dict) and "saved" in s)
    asha = pickle.loads(saved)  # what ASHA's own save() wrote (trainables/tune/scheduler.py: SchedulerState)
    return {milestone: set(recorded) for bracket in asha["_brackets"] for milestone, recorded in bracket._rungs}


def study_processes(ray_tmp: str) -> list[int]:
    """PIDs of live processes of the local Ray a test's driver started with RAY_TMPDIR=`ray_tmp`:
    the variable in their environment, or their working directory or an open file under `ray_tmp`.
    (A Ray process that renamed itself, ray::DashboardAgent say, may no longer show its environment.)"""
    marker, inside = f"RAY_TMPDIR={ray_tmp}".encode(), ray_tmp.rstrip("/") + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                marked = marker in f.read().split(b"\0")
            if marked or any(link.startswith(inside) for link in _links(int(entry))):
                found.append(int(entry))
        except OSError:  # gone, or not ours
            pass
    return found


def _links(pid: int) -> list[str]:
    """The working directory and open files of a process."""
    links = [os.readlink(f"/proc/{pid}/cwd")]
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed meanwhile
            pass
    return links
