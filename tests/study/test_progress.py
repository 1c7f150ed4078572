"""The study-wide progress line: counts, best so far, time left (against hand-computed numbers)."""
import io

from study.progress import StudyLine, format_status
from trainables.tune.progress import TrialView, study_status

MAX_EPOCHS = 8
TRIALS = [TrialView("a", "TERMINATED", 8, 150.0),   # completed
          TrialView("b", "TERMINATED", 2, 300.0),   # pruned by ASHA
          TrialView("c", "ERROR", 3, None),
          TrialView("d", "RUNNING", 4, 120.0),
          TrialView("e", "PENDING", 0, None)]


def test_counts_best_and_time_left():
    s = study_status(TRIALS, total=7, max_epochs=MAX_EPOCHS, mode="min", epochs_done=20, elapsed_s=100.0)
    assert (s.completed, s.pruned, s.errored, s.running, s.pending) == (1, 1, 1, 1, 3)  # 1 + 2 not proposed yet
    assert s.finished == 3
    assert (s.best_value, s.best_trial) == (120.0, "d"), "the best value any trial reported so far"
    # epochs left: d 8-4, e 8, two not proposed 2*8 = 28; rate 20 epochs / 100 s -> 140 s
    assert s.eta_s == 28 * 100.0 / 20
    assert study_status(TRIALS, 7, MAX_EPOCHS, "max", 20, 100.0).best_trial == "b"


def test_before_any_epoch_and_at_the_end():
    start = study_status([], total=3, max_epochs=4, mode="min", epochs_done=0, elapsed_s=5.0)
    assert start.pending == 3 and start.eta_s is None and start.best_value is None
    done = [TrialView(i, "TERMINATED", 4, 1.0) for i in "xyz"]
    end = study_status(done, total=3, max_epochs=4, mode="min", epochs_done=12, elapsed_s=60.0)
    assert end.finished == 3 and end.eta_s == 0.0


def test_the_line_reads_in_a_plain_log():
    s = study_status(TRIALS, total=7, max_epochs=MAX_EPOCHS, mode="min", epochs_done=20, elapsed_s=100.0)
    names = {"d": "#4 smoothed s=0.48 K=5"}
    text = format_status(s, "fd_digits_cnn", names.get)
    assert text == ("study: 3/7 done (1 completed, 1 pruned, 1 errored), 1 running, 3 pending | "
                    "best fd_digits_cnn=120 (#4 smoothed s=0.48 K=5) | elapsed 1.7 min, at most ~2.3 min left")
    out = io.StringIO()
    StudyLine("fd_digits_cnn", out=out).study_progress(s)
    assert out.getvalue().count("\n") == 1 and "best fd_digits_cnn=120 (d)" in out.getvalue()
    first = format_status(study_status([], 3, 4, "min", 0, 5.0), "fd_digits_cnn")
    assert first.endswith("elapsed 5 s, time left: after the first epoch")


class _Trial:
    def __init__(self, trial_id, status, epoch=0, best=None):
        self.trial_id, self.status = trial_id, status
        self.last_result = {"epoch": epoch} if epoch else {}
        self.metric_analysis = {"fd": {"min": best, "max": best}} if best is not None else {}


def test_the_tune_callback_reports_at_events_and_every_minute(monkeypatch):
    import trainables.tune.progress as progress

    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    seen = []
    listener = type("L", (), {"study_progress": lambda self, status: seen.append(status)})()
    callback = progress.StudyProgress(total=3, max_epochs=4, metric="fd", mode="min")
    callback.attach(listener, 3)
    callback.setup()
    starting = _Trial("a", "PENDING")
    callback.on_trial_start(0, [starting], starting)   # Tune may set RUNNING after the hook
    assert (seen[-1].running, seen[-1].pending) == (1, 2)
    running = _Trial("a", "RUNNING", epoch=2, best=5.0)
    for _ in range(2):
        callback.on_trial_result(0, [running], running, {})
    clock[0] += 59.0
    callback.on_step_end(0, [running])
    assert len(seen) == 1, "no line before a minute without events"
    clock[0] += 1.0
    callback.on_step_end(0, [running])
    status = seen[-1]
    assert len(seen) == 2 and status.best_value == 5.0 and status.elapsed_s == 60.0
    assert status.eta_s == (2 + 4 + 4) * 60.0 / 2, "(4-2) + two trials not proposed, at 2 epochs per 60 s"
    callback.on_trial_complete(0, [running], running)
    assert seen[-1].completed == 0 and seen[-1].pruned == 1, "ended before max_epochs: pruned"
