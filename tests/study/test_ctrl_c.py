"""A Ctrl-C whose KeyboardInterrupt some code swallows still ends the study (study/recovery/ctrl_c.py).

The end-to-end moments (exit 130, the documented line, resume) are tests/study/test_interrupt.py's."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from study.recovery import ctrl_c
from study.run import INTERRUPTED
from tests.study import study_state as st
from tests.study.helpers import REPO


def _swallowed_ctrl_c() -> None:
    """What a finalizer or a library's `except BaseException` does to the KeyboardInterrupt of a Ctrl-C."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the Python handler runs here at the latest
    except BaseException:  # noqa: BLE001  the point of the test
        pass


def test_a_swallowed_ctrl_c_is_recorded_and_raised_again():
    before = signal.getsignal(signal.SIGINT)
    with ctrl_c.recorded():
        assert not ctrl_c.received()
        ctrl_c.raise_if_received()  # nothing received: nothing raised
        _swallowed_ctrl_c()
        assert ctrl_c.received()
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.raise_if_received()
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back


def test_an_ignored_sigint_stays_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with ctrl_c.recorded():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert not ctrl_c.received()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


# The driver, with a library that swallows the KeyboardInterrupt of a Ctrl-C arriving as the Tuner is built
# (in a process of its own: Ray, its environment and the signal handlers stay out of pytest's).
SWALLOWING_DRIVER = """
import sys
from tests.study.test_ctrl_c import _swallowed_ctrl_c
from trainables.tune import tuner as tune_adapter

real_build = tune_adapter.build_tuner

def build_then_swallow(*args, **kwargs):
    tuner = real_build(*args, **kwargs)
    _swallowed_ctrl_c()
    return tuner

def fit(*args, **kwargs):
    print("[test: Tuner.fit called]", flush=True)
    return []

tune_adapter.build_tuner, tune_adapter.fit = build_then_swallow, fit
from study.run import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_study_whose_ctrl_c_is_swallowed_before_tune_starts_ends_with_130(tmp_path):
    """Ray up, the Tuner built, a Ctrl-C swallowed on the way: no trial starts, exit 130 and the line."""
    ray_tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    cmd = [sys.executable, "-c", SWALLOWING_DRIVER, "--space", "noise_sweep", "--smoke-test", "--num-samples", "1",
           "--storage-path", str(tmp_path), "--name", "s"]
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, start_new_session=True,
                              env={**os.environ, "RAY_TMPDIR": ray_tmp})
        out = done.stdout + done.stderr
        assert done.returncode == 130 and "Tuner.fit called" not in out, out[-3000:]
        assert done.stderr.strip().splitlines()[-1] == INTERRUPTED, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        assert not (tmp_path / "s" / "study.lock").exists()
        assert st.study_processes(ray_tmp) == []
    finally:
        for pid in st.study_processes(ray_tmp):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
