"""After the Tuner: make MLflow's trial runs agree with Ray Tune's trials.

A driver killed (SIGKILL, a full disk) between two of Tune's state saves leaves MLflow
ahead of Tune: a run for a trial Tune never saved (Tune proposes and trains it again under
a new id on resume), or a run whose end was never recorded. Tune's state is what resumes,
so it is the truth: a run of a trial Tune does not know is set apart (run_role
`abandoned`, KILLED; analysis reads only `trial` runs), and when the study has ended,
every trial run gets the status of its trial.
"""
from __future__ import annotations

from study.tracking import ROLE_TAG, STATE_TAG, TRIAL_ID_TAG, MlflowTracker

ABANDONED = "abandoned"


def expected_end(record: dict) -> tuple[str, str]:
    """(state tag, MLflow status) of a trial of an ended study, from its Tune record."""
    if record["error"]:
        return "errored", "FAILED"
    finished = record["metrics"].get("epoch", 0) >= int(record["config"].get("max_epochs", 0))
    return ("completed" if finished else "pruned"), "FINISHED"  # not finished, no error: ASHA stopped it


def reconcile(tracker: MlflowTracker, records: list[dict], study_ended: bool) -> dict[str, int]:
    """Fix MLflow's trial runs in place; returns counts of what was changed."""
    client = tracker.client
    known = {r["trial_id"]: r for r in records}
    runs = client.search_runs([tracker.experiment_id], filter_string=f"tags.{ROLE_TAG} = 'trial'",
                              max_results=50000)
    changed = {"abandoned": 0, "ended": 0}
    for run in runs:
        run_id, tags = run.info.run_id, run.data.tags
        record = known.get(tags.get(TRIAL_ID_TAG))
        if record is None:
            client.set_tag(run_id, ROLE_TAG, ABANDONED)
            client.set_tag(run_id, STATE_TAG, ABANDONED)
            if run.info.status not in ("FINISHED", "FAILED", "KILLED"):
                client.set_terminated(run_id, status="KILLED")
            changed["abandoned"] += 1
        elif study_ended and record["config"]:
            state, status = expected_end(record)
            if tags.get(STATE_TAG) != state or run.info.status != status:
                client.set_tag(run_id, STATE_TAG, state)
                client.set_terminated(run_id, status=status)
                changed["ended"] += 1
    return changed
