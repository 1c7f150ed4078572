"""A study whose storage path is a small tmpfs that fills mid-study: the driver ends in one line,
and after space is freed the same command resumes and finishes the study. Needs root to
mount the tmpfs (skipped where mount is not allowed)."""
from __future__ import annotations

import os
import subprocess
import tempfile

import pytest

from tests.study import study_state as st
from tests.study.helpers import REPO, study_cmd

pytestmark = pytest.mark.slow

NAME = "full"
ARGS = ("--space", "noise_sweep", "--smoke-test", "--num-samples", "1", "--max-epochs", "3", "--set", "eval_every=1")
SMALL, LARGE = "5m", "300m"  # 5 MB: the MLflow database (~1 MB) and two checkpoints (~1.8 MB each)


@pytest.fixture
def tmpfs(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL},mode=0755", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.timeout(1500)
def test_full_disk_ends_in_one_line_and_resumes(tmpfs):
    ray_tmp = tempfile.mkdtemp(prefix="rf", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    cmd = study_cmd(tmpfs, NAME, *ARGS)
    study_dir = tmpfs / NAME
    try:
        full = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
        (tmpfs.parent / "full.log").write_text(full.stdout + full.stderr)
        errors = [ln for ln in full.stderr.splitlines() if "study.run: error:" in ln]
        assert full.returncode == 1, full.stdout[-2000:] + full.stderr[-4000:]
        assert len(errors) == 1 and errors[0].startswith("python -m study.run: error: the disk is full ("), errors
        # It ends in that line; Tune's own log of the trials that failed to save a checkpoint may come before
        # it, but no traceback of the driver's.
        assert full.stderr.strip().splitlines()[-1] == errors[0]
        assert 'study/run.py", line' not in full.stderr, full.stderr[-4000:]
        assert not [p for p in study_dir.rglob("*.tmp")], "no temporary file is left"

        subprocess.run(["mount", "-o", f"remount,size={LARGE}", str(tmpfs)], check=True)  # space freed
        resumed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        runs = st.trial_runs(study_dir)
        assert len(runs) == 2 and set(runs) == set(st.tune_trials(study_dir))
        assert all(r["state"] == "completed" and r["status"] == "FINISHED" and r["epochs"] == [1, 2, 3]
                   for r in runs.values()), runs
        assert st.duplicated_metric_points(study_dir) == 0
        print("full disk:", errors[0])
        print("resume said:", [ln for ln in resumed.stdout.splitlines()
                               if ln.startswith(("Ray Tune's saved state", "stopped ", "warning:"))])
    finally:
        subprocess.run(["rm", "-rf", ray_tmp], check=False)
