"""Ctrl-C at several moments of a study: each time exit 130 and the documented line, never a
traceback; the same command then resumes and finishes the study with one run per trial.

Ctrl-C in a terminal signals the whole foreground process group (the driver and the local
Ray it started): so does this test."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading

import pytest

from tests.study.helpers import REPO, study_cmd
from tests.study import study_state as st

pytestmark = pytest.mark.slow

NAME = "ctrl-c"
ARGS = ("--space", "noise_sweep", "--smoke-test", "--num-samples", "1", "--max-epochs", "2", "--set", "eval_every=1")
# (what the driver printed last, in its own words) -> Ctrl-C right then
MOMENTS = ("starting study",        # Ray up, Tuner built, no trial started: Tune returns PENDING trials
           "started (trial",        # a trial started, none has reported
           "epoch 1/2")             # mid-training, a checkpoint saved


def _signal_state(pid: int) -> str:
    """The driver's SIGINT disposition as the kernel sees it (blocked/ignored/caught masks), for a failure's message."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return " ".join(ln.strip() for ln in f if ln.startswith(("SigBlk", "SigIgn", "SigCgt")))
    except OSError as err:
        return f"unreadable ({err})"


def _interrupt_at(cmd, env, moment: str, timeout: float = 600) -> tuple[int, str]:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    lines: list[str] = []
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        sent = False
        for line in proc.stdout:
            lines.append(line)
            if not sent and moment in line:
                state = _signal_state(proc.pid)
                os.killpg(proc.pid, signal.SIGINT)
                lines.append(f"[test: SIGINT sent to the process group; the driver had {state}]\n")
                sent = True
        proc.wait()
    finally:
        timer.cancel()
    return proc.returncode, "".join(lines)


@pytest.mark.timeout(1500)
def test_ctrl_c_at_several_moments_then_resume(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="ri", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}  # lines arrive as printed
    cmd = study_cmd(tmp_path, NAME, *ARGS)
    try:
        for moment in MOMENTS:
            code, out = _interrupt_at(cmd, env, moment)
            assert moment in out, out[-3000:]
            assert code == 130, (moment, out[-3000:])
            assert "interrupted; re-run the same command to resume" in "".join(out.splitlines()[-5:]), (moment, out[-3000:])
            assert "Traceback" not in out and "KeyError" not in out, (moment, out[-3000:])
            assert not (tmp_path / NAME / "study.lock").exists(), "the lock goes with the driver"
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs = st.trial_runs(tmp_path / NAME)
        assert len(runs) == 2 and set(runs) == set(st.tune_trials(tmp_path / NAME))
        assert all(r["state"] == "completed" and r["status"] == "FINISHED" and r["epochs"] == [1, 2]
                   for r in runs.values()), runs
        assert st.duplicated_metric_points(tmp_path / NAME) == 0
        assert st.study_processes(ray_tmp) == []
    finally:
        for pid in st.study_processes(ray_tmp):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
