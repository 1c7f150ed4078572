"""A study whose storage path is a small tmpfs that fills mid-study: the driver ends in one line,
and after space is freed the same command resumes and finishes the study.

Mounting the tmpfs needs root, or else a user namespace (`unshare --user --map-root-user
--mount`, allowed to ordinary users on most Linux machines): the scenario (mount, the study,
remount larger, the same command again) runs as one shell script in either, and copies the
study directory out before the mount goes. Skipped only where neither may mount."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from tests.study import study_state as st
from tests.required import skip_unless_required
from tests.study.helpers import REPO, study_cmd

pytestmark = pytest.mark.slow

NAME = "full"
ARGS = ("--space", "noise_sweep", "--smoke-test", "--num-samples", "1", "--max-epochs", "3", "--set", "eval_every=1")
SMALL, LARGE = "5m", "300m"  # 5 MB: the MLflow database (~1 MB) and two checkpoints (~1.8 MB each)
MOUNT_REFUSED = 97
SCENARIO = f"""
set -u
disk=$1 out=$2
shift 2
mount -t tmpfs -o size={SMALL},mode=0755 tmpfs "$disk" 2> "$out/mount.err" || exit {MOUNT_REFUSED}
"$@" > "$out/full.out" 2> "$out/full.err"; echo $? > "$out/full.rc"
find "$disk" -name '*.tmp' > "$out/full.tmpfiles"
cp "$disk/{NAME}/driver.log" "$out/driver.log" 2> /dev/null
mount -o remount,size={LARGE} "$disk"
"$@" > "$out/resumed.out" 2> "$out/resumed.err"; echo $? > "$out/resumed.rc"
cp -a "$disk/{NAME}" "$out/study"
umount -l "$disk"
"""
WAYS = {"as this user": [], "in a user namespace": ["unshare", "--user", "--map-root-user", "--mount"]}


def _run_scenario(tmp_path, env) -> tuple[str, dict]:
    """Run SCENARIO the first way that may mount; (the way, {name: text of each file it wrote})."""
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    refusals = []
    for way, prefix in WAYS.items():
        if prefix and shutil.which(prefix[0]) is None:
            refusals.append(f"{way}: no {prefix[0]}")
            continue
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        done = subprocess.run([*prefix, "sh", "-c", SCENARIO, "sh", str(disk), str(out), *study_cmd(disk, NAME, *ARGS)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
        if done.returncode != MOUNT_REFUSED:
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            return way, {p.name: p.read_text() for p in out.iterdir() if p.is_file()}
        refusals.append(f"{way}: {(out / 'mount.err').read_text().strip()}")
    skip_unless_required("tmpfs", "cannot mount a tmpfs here (" + "; ".join(refusals) + ")")


@pytest.mark.timeout(1600)
def test_full_disk_ends_in_one_line_and_resumes(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="rf", dir="/tmp")
    try:
        way, files = _run_scenario(tmp_path, {**os.environ, "RAY_TMPDIR": ray_tmp})
    finally:
        subprocess.run(["rm", "-rf", ray_tmp], check=False)
    full_out, full_err = files["full.out"], files["full.err"]
    disk = tmp_path / "disk"
    errors = [ln for ln in full_err.splitlines() if "study.run: error:" in ln]
    assert files["full.rc"].strip() == "1", full_out[-2000:] + full_err[-4000:]
    assert len(errors) == 1 and errors[0].startswith("python -m study.run: error: the disk is full ("), errors
    # That line alone: Tune's log of the failed trial and MLflow's database error, tracebacks and all,
    # went to the driver log the line names.
    assert "Traceback" not in full_err and full_err.strip().splitlines() == errors, full_err[-4000:]
    named = errors[0].rpartition(" (Ray's and MLflow's messages: ")[2].rstrip(")")
    if named == f"{disk}/{NAME}/driver.log":
        log = files["driver.log"]
    else:  # the full disk refused the log: it moved to the local cache directory (study/recovery/driver_log.py)
        assert named.endswith(".log") and os.path.exists(named), errors[0]
        moved = open(named).read()
        os.remove(named)
        assert f"{disk}/{NAME}/driver.log could not be written; the driver log continues here" in moved, moved[:2000]
        log = files.get("driver.log", "") + moved  # what the study's log took before the disk filled, then the rest
    assert "Trial task failed" in log and "Traceback" in log, log[-2000:]
    assert files["full.tmpfiles"].strip() == "", "no temporary file is left"

    assert files["resumed.rc"].strip() == "0", files["resumed.out"][-3000:] + files["resumed.err"][-3000:]
    study_dir = tmp_path / "out" / "study"  # copied off the tmpfs after the resume
    runs = st.trial_runs(study_dir)
    assert len(runs) == 2 and set(runs) == set(st.tune_trials(study_dir))
    assert all(r["state"] == "completed" and r["status"] == "FINISHED" and r["epochs"] == [1, 2, 3]
               for r in runs.values()), runs
    assert st.duplicated_metric_points(study_dir) == 0
    print("full disk (mounted " + way + "):", errors[0])
    print("resume said:", [ln for ln in files["resumed.out"].splitlines()
                           if ln.startswith(("Ray Tune's saved state", "stopped ", "warning:"))])
