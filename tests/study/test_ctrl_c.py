"""A Ctrl-C whose KeyboardInterrupt some code swallows still ends the study (study/recovery/ctrl_c.py).

The end-to-end moments (exit 130, the documented line, resume) are tests/study/test_interrupt.py's."""
from __future__ import annotations

import os
import signal
import time

import pytest

from study.recovery import ctrl_c
from study.run import INTERRUPTED, main


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


@pytest.mark.slow
def test_a_study_whose_ctrl_c_is_swallowed_before_tune_starts_ends_with_130(capsys, tmp_path, monkeypatch):
    """Ray up, the Tuner built, a Ctrl-C swallowed on the way: no trial starts, exit 130 and the line."""
    from trainables.tune import tuner as tune_adapter

    real_build = tune_adapter.build_tuner
    fitted = []

    def build_then_swallow(*args, **kwargs):
        tuner = real_build(*args, **kwargs)
        _swallowed_ctrl_c()
        return tuner

    monkeypatch.setattr(tune_adapter, "build_tuner", build_then_swallow)
    monkeypatch.setattr(tune_adapter, "fit", lambda *a, **k: fitted.append(a) or [])
    code = main(["--space", "noise_sweep", "--smoke-test", "--num-samples", "1", "--storage-path", str(tmp_path),
                 "--name", "s"])
    err = capsys.readouterr().err
    assert (code, fitted) == (130, []), err[-2000:]
    assert err.strip().splitlines()[-1] == INTERRUPTED
    assert not (tmp_path / "s" / "study.lock").exists()
