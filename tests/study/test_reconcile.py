"""After a kill, MLflow may be ahead of Tune's saved state: reconcile makes the trial runs agree."""
from __future__ import annotations

from study.cli import resolve
from study.recovery.reconcile import reconcile
from study.storage import StudyDir
from study.tracking import MlflowTracker


def _record(trial_id, epoch, max_epochs=2, error=None):
    config = {"kind": "smoothed", "noise_std": 0.3, "num_mixtures": 3, "max_epochs": max_epochs, "dataset": "digits"}
    return {"trial_id": trial_id, "config": config, "metrics": {"epoch": float(epoch)}, "error": error}


def test_runs_follow_tunes_trials(tmp_path):
    cfg = resolve({"space": "noise_sweep", "smoke_test": True, "storage_path": str(tmp_path), "name": "r"})
    tracker = MlflowTracker(cfg, StudyDir(cfg.storage_path, cfg.name))
    tracker.setup()
    records = [_record("done", 2), _record("stopped", 1), _record("broken", 1, error="DivergenceError: nan")]
    for rec in records + [_record("lost", 1)]:  # "lost": started, but Tune's saved state never had it
        tracker.trial_started(rec["trial_id"], rec["config"], False)
    tracker.mark_interrupted()  # what the next session does first: every RUNNING run -> KILLED
    counts = reconcile(tracker, records, study_ended=False)
    assert counts == {"abandoned": 1, "ended": 0}
    assert set(tracker.states()) == {"done", "stopped", "broken"}, "abandoned runs are no trial runs"

    counts = reconcile(tracker, records, study_ended=True)
    assert counts == {"abandoned": 0, "ended": 3}
    runs = {r.data.tags["ray_trial_id"]: r for r in tracker.client.search_runs([tracker.experiment_id])
            if "ray_trial_id" in r.data.tags}  # not the study's (parent) run
    got = {tid: (r.data.tags["state"], r.info.status, r.data.tags["run_role"]) for tid, r in runs.items()}
    assert got == {"done": ("completed", "FINISHED", "trial"), "stopped": ("pruned", "FINISHED", "trial"),
                   "broken": ("errored", "FAILED", "trial"), "lost": ("abandoned", "KILLED", "abandoned")}
    assert reconcile(tracker, records, study_ended=True) == {"abandoned": 0, "ended": 0}
