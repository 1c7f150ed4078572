"""Resume on a fresh head (issue 22): the driver of an s3:// study is killed mid-study with its whole
local Ray, the head's local disk is discarded (its working directory and RAY_TMPDIR deleted), and
the same command on another "head" (a new working directory and RAY_TMPDIR) resumes from object
storage, the tracking server and the Optuna database alone: no trial lost or duplicated, one MLflow
run per trial, no metric point logged twice. The dead driver's lease is taken with --take-over."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.study import study_state as st
from tests.study.helpers import REPO, kill_session, wait_for
from tests.study.object_store import keys, mlflow_server, moto_s3, s3_client

pytestmark = pytest.mark.slow
NAME = "fresh-head"


def _head(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A head's working directory and its RAY_TMPDIR (short, under /tmp: Ray's socket paths have a limit)."""
    head = tmp_path / name
    head.mkdir()
    return head, Path(tempfile.mkdtemp(prefix=f"{name[-1]}h", dir="/tmp"))


def _tune_trials(port: int) -> list[str]:
    """Trial ids in Tune's newest saved experiment state on the bucket: the trials the study has."""
    import json

    states = sorted(k for k in keys(port, f"studies/{NAME}/experiment_state-") if k.endswith(".json"))
    body = s3_client(port).get_object(Bucket="lab", Key=states[-1])["Body"].read()
    return [json.loads(trial_json)["trial_id"] for trial_json, _ in json.loads(body)["trial_data"]]


@pytest.mark.timeout(1500)
def test_a_study_resumes_on_a_fresh_head_from_object_storage_and_the_tracking_server(tmp_path):
    tracking = tmp_path / "tracking"  # the tracking server's machine: survives the head
    tracking.mkdir()
    with moto_s3(tmp_path) as s3, mlflow_server(tracking) as mlflow_url:
        cmd = [sys.executable, "-m", "study.run", "--space", "noise_sweep", "--smoke-test", "--name", NAME,
               "--storage-path", s3["storage"], "--mlflow-uri", mlflow_url,
               "--optuna-storage", f"sqlite:///{tracking}/optuna.db", "--max-concurrent", "1"]
        head, ray_tmp = _head(tmp_path, "head-a")
        with open(tmp_path / "head-a.log", "w") as log:
            driver = subprocess.Popen(cmd, cwd=head, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                      env={**s3["env"], "RAY_TMPDIR": str(ray_tmp)})
            try:
                wait_for(lambda: sum(r["state"] == "completed" for r in st.trial_runs(tracking).values()) >= 1
                         or driver.poll() is not None, timeout=900, interval=0.5, what="a first trial's end")
                assert driver.poll() is None, (tmp_path / "head-a.log").read_text()[-3000:]
                before = st.trial_runs(tracking)
            finally:
                kill_session(driver.pid)
                driver.wait()
                for pid in st.study_processes(str(ray_tmp)):  # the head node vanishes: all of its Ray with it
                    subprocess.run(["kill", "-9", str(pid)], check=False)
        wait_for(lambda: not st.study_processes(str(ray_tmp)), timeout=60, interval=0.5, what="head A's Ray to end")
        shutil.rmtree(head)  # its local disk is gone
        shutil.rmtree(ray_tmp, ignore_errors=True)

        fresh, fresh_ray = _head(tmp_path, "head-b")
        started = time.monotonic()
        resumed = subprocess.run([*cmd, "--take-over"], cwd=fresh, capture_output=True, text=True, timeout=1200,
                                 env={**s3["env"], "RAY_TMPDIR": str(fresh_ray)}, start_new_session=True)
        print(f"fresh-head resume: {time.monotonic() - started:.0f} s")
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert "resuming study" in resumed.stdout and "taking over the study lease" in resumed.stderr

        runs = st.trial_runs(tracking)
        trials = _tune_trials(s3["port"])
        trial_dirs = {k.split("/")[2] for k in keys(s3["port"], f"studies/{NAME}/trial_")}
        orphans = trial_dirs - {f"trial_{t}" for t in trials}  # started by head A after Tune's last saved state
        print(f"fresh-head counts: tune {len(trials)}, mlflow trial runs {len(runs)} (before the kill {len(before)}), "
              f"duplicated metric points {st.duplicated_metric_points(tracking)}, orphaned trial dirs {len(orphans)}")
        assert len(trials) == 3 and set(runs) == set(trials), (trials, runs)
        assert set(before) <= set(runs), "a trial run of the first head was lost"
        assert all(r["state"] == "completed" and r["epochs"] == [1, 2] for r in runs.values()), runs
        assert st.duplicated_metric_points(tracking) == 0
        import optuna

        study = optuna.load_study(study_name=NAME, storage=f"sqlite:///{tracking}/optuna.db")
        states = [t.state.name for t in study.trials]
        print(f"fresh-head optuna: {[(t.number, t.state.name, t.user_attrs.get('tune_trial_id')) for t in study.trials]}")
        # one COMPLETE per searched Tune trial, even when Tune's saved trials are newer than its saved searcher
        # (the files of different moments: reconcile_search.py); a proposal Tune's saved trials lack (asked
        # after them, forgotten with the head) is closed FAIL at the restore, never RUNNING
        assert states.count("COMPLETE") == 2 and set(states) <= {"COMPLETE", "FAIL"}, states
        completed = {t.user_attrs.get("tune_trial_id") for t in study.trials if t.state.name == "COMPLETE"}
        assert len(completed) == 2 and completed <= set(trials), (completed, trials)
