"""The MLflow server restarted mid-study (issue 22): the driver waits out the outage (MLflow's client
retries its requests) and the study ends with every trial's run, every epoch logged once."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.study import study_state as st
from tests.study.helpers import REPO, free_port, kill_session, wait_for
from tests.study.object_store import start_mlflow_server, stop

pytestmark = pytest.mark.slow
OUTAGE_S = 20


@pytest.mark.timeout(900)
def test_a_study_survives_its_mlflow_server_restarting(tmp_path):
    tracking = tmp_path / "tracking"
    tracking.mkdir()
    port = free_port()
    server = start_mlflow_server(tracking, port)
    cmd = [sys.executable, "-m", "study.run", "--space", "noise_sweep", "--smoke-test", "--storage-path",
           str(tmp_path / "studies"), "--mlflow-uri", f"http://127.0.0.1:{port}"]
    driver = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        wait_for(lambda: len(st.trial_runs(tracking)) >= 1 or driver.poll() is not None, timeout=600, interval=0.5,
                 what="the first trial run")
        assert driver.poll() is None, driver.communicate()[0][-3000:]
        stop(server)  # the server goes away mid-study ...
        time.sleep(OUTAGE_S)
        server = start_mlflow_server(tracking, port)  # ... and comes back on its address
        out, _ = driver.communicate(timeout=600)
    finally:
        kill_session(driver.pid)
        stop(server)
    assert driver.returncode == 0, out[-4000:]
    runs = st.trial_runs(tracking)
    assert len(runs) == 3 and all(r["state"] == "completed" and r["epochs"] == [1, 2] for r in runs.values()), runs
    assert st.duplicated_metric_points(tracking) == 0
