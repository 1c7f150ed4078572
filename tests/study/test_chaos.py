"""Chaos, counted: an ASHA study (5 searched trials + the baseline) whose driver is SIGKILLed at
seeded random moments, resumed by the same command each time, then counted against Tune's
saved state, Optuna's history and MLflow's database.

Only the driver is killed (its local Ray is left to die or linger, as after a real crash);
each driver gets its own RAY_TMPDIR, which isolates it from other Ray sessions on the machine
and marks every process its Ray starts (its environment, or its log files under that folder)."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from tests.study.helpers import REPO, study_cmd, wait_for
from tests.study import study_state as st

pytestmark = pytest.mark.slow

SEED = 20261129
EXIT_GRACE_S = 15  # processes still exiting when the last command returns; a leftover Ray idles forever
KILLS = 3
NAME = "chaos"
MAX_EPOCHS = 4
SEARCHED = 5  # >= ASHA_MIN_TRIALS: the default scheduler is ASHA, rungs at epochs 1, 2 and 4
# The default --num-to-keep (2): Tune prunes a trial's older checkpoint before it saves the experiment
# state that names the newer one; a kill in that window is repaired on resume (checkpoint_repair.py).
ARGS = ("--space", "noise_sweep", "--smoke-test", "--num-samples", str(SEARCHED), "--max-epochs", str(MAX_EPOCHS),
        "--set", "eval_every=1", "--max-concurrent", "2")


def _progress(study_dir) -> int:
    """Trial runs + logged epochs so far (0 while the database does not exist)."""
    try:
        runs = st.mlflow_rows(study_dir, "select count(*) from tags where key = 'run_role' and value = 'trial'")
        epochs = st.mlflow_rows(study_dir, "select count(*) from metrics where key = 'epoch'")
        return runs[0][0] + epochs[0][0]
    except Exception:  # not created yet, or locked mid-write
        return 0


def _ended_trials(study_dir) -> dict[str, list[int]]:
    try:
        return {tid: r["epochs"] for tid, r in st.trial_runs(study_dir).items() if r["state"] in ("completed", "pruned")}
    except Exception:
        return {}


@pytest.mark.timeout(1800)
def test_sigkill_chaos_counts(tmp_path):
    rng = random.Random(SEED)
    ray_tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    study_dir = tmp_path / NAME
    cmd = study_cmd(tmp_path, NAME, *ARGS)
    targets = sorted(rng.sample(range(1, 22), KILLS))  # progress (runs + epochs) at which to kill
    ended_before: dict[str, list[int]] = {}
    try:
        for i, target in enumerate(targets):
            with open(tmp_path / f"driver{i}.log", "w") as log:
                driver = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)
                wait_for(lambda: _progress(study_dir) >= target or driver.poll() is not None, timeout=600,
                         interval=0.3, what=f"progress {target}")
                time.sleep(rng.uniform(0.0, 3.0))
                assert driver.poll() is None, f"the study ended before kill {i}: {(tmp_path / f'driver{i}.log').read_text()[-3000:]}"
                driver.send_signal(signal.SIGKILL)
                driver.wait()
            ended_before = _ended_trials(study_dir)
        with open(tmp_path / "final.log", "w") as log:
            final = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=1200)
        out = (tmp_path / "final.log").read_text()
        assert final.returncode == 0, out[-4000:]
        exiting = _describe(st.study_processes(ray_tmp))  # the last command's own Ray may still be exiting
        wait_for(lambda: not st.study_processes(ray_tmp), timeout=EXIT_GRACE_S, interval=0.5,
                 what=f"the study's Ray processes to end; at the last command's end: {exiting}")
        _check_counts(study_dir, ended_before, out)
        logs = "".join((tmp_path / f"driver{i}.log").read_text() for i in range(KILLS)) + out
        said = [ln for ln in logs.splitlines() if ln.startswith(("stopped ", "Ray Tune's saved state"))
                or "(pruned by Tune just before a kill)" in ln]
        abandoned = st.mlflow_rows(study_dir, "select count(*) from tags where key = 'run_role' and value = 'abandoned'")
        print("chaos: processes still exiting as the last command returned:", exiting or "none")
        print("chaos: kills at progress", targets, "| by the next command:", said or "nothing to clean up",
              "| abandoned runs:", abandoned[0][0])
    finally:
        for pid in st.study_processes(ray_tmp):  # hygiene if an assertion failed above
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _describe(pids: list[int]) -> list[str]:
    """PID, parent and command line of each process, to tell which Ray process outlived the cleanup."""
    out = []
    for pid in pids:
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            parent = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]
            out.append(f"{pid} (parent {parent}): {cmdline[:200]}")
        except OSError:
            out.append(f"{pid} (gone)")
    return out


def _check_counts(study_dir, ended_before: dict[str, list[int]], out: str) -> None:
    tune = st.tune_trials(study_dir)
    # With Optuna's RDB storage a trial exists in Optuna from the moment it is asked; one asked after
    # Tune's last state save and then lost to a SIGKILL is set FAIL on resume (TPE ignores FAIL trials).
    asked = st.optuna_trials(study_dir)
    optuna = [t for t in asked if t["state"] != "FAIL"]
    runs = st.trial_runs(study_dir)
    searched = {tid: t for tid, t in tune.items() if t["config"].get("kind") != "baseline"}
    counts = {"tune": len(tune), "tune_searched": len(searched), "optuna": len(optuna), "mlflow_trial_runs": len(runs),
              "duplicated_metric_points": st.duplicated_metric_points(study_dir)}
    states = [r["state"] for r in runs.values()]
    print("chaos counts:", counts, "| completed", states.count("completed"), "pruned", states.count("pruned"),
          "| Optuna trials lost to kills (FAIL):", len(asked) - len(optuna))
    assert counts == {"tune": SEARCHED + 1, "tune_searched": SEARCHED, "optuna": SEARCHED,
                      "mlflow_trial_runs": SEARCHED + 1, "duplicated_metric_points": 0}, (counts, out[-3000:])
    assert set(runs) == set(tune), "one MLflow run per Tune trial, by trial id"
    by_number = {t["number"]: t for t in optuna}
    rungs = st.asha_rungs(study_dir)
    for tid, trial in tune.items():
        run, epochs = runs[tid], int(trial["last_result"].get("epoch", 0))
        assert trial["status"] == "TERMINATED", (tid, trial["status"])
        assert run["epochs"] == list(range(1, epochs + 1)), (tid, run["epochs"])  # every epoch once, in order
        state = "completed" if epochs == MAX_EPOCHS else "pruned"
        assert (run["state"], run["status"]) == (state, "FINISHED"), (tid, run)
        if tid in searched:
            assert by_number[int(run["optuna_number"])]["state"] == {"completed": "COMPLETE", "pruned": "PRUNED"}[state]
            for milestone in (1, 2, 4):  # ASHA's rungs hold every searched trial that reached them, across kills
                assert (tid in rungs[milestone]) == (epochs >= milestone), (tid, milestone, rungs)
        else:
            assert epochs == MAX_EPOCHS and all(tid not in r for r in rungs.values()), "the baseline is exempt"
    for tid, epochs in ended_before.items():  # no trial resurrected: an ended trial trained no further epoch
        assert runs[tid]["epochs"] == epochs, (tid, epochs, runs[tid]["epochs"])
    assert sum(r["state"] == "pruned" for r in runs.values()) >= 1, "ASHA pruned nothing: the test lost its point"
