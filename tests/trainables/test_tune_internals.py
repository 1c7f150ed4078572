"""The private internals of Ray that trainables/tune/internals.py still reaches (extending a study,
repairing checkpoint bookkeeping), exercised on the installed versions; and the two behaviours that
now stand on public APIs (PRUNED trials through Optuna's ask/tell, ASHA's rungs through its own
save/restore), without a Ray cluster."""
from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

from trainables.tune import internals


def test_internals_fit_the_installed_versions():
    internals.check_internals()  # raises InternalsChanged naming both version sets


def test_a_changed_internal_fails_loudly_with_versions(monkeypatch):
    monkeypatch.setattr(internals, "search_total", lambda generator: None)  # as if _total_samples were renamed
    with pytest.raises(internals.InternalsChanged) as err:
        internals.check_internals()
    message = str(err.value)
    assert "SearchGenerator._total_samples" in message and "'ray': '" in message and "'optuna': '" in message


def test_upper_bounds_are_below_the_next_minor_of_the_tested_versions():
    """pyproject.toml caps ray/optuna/mlflow below the next minor release of the newest version tested."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    for name, version in internals.TESTED_WITH.items():
        major, minor = version.split(".")[:2]
        assert re.search(rf'"{name}(\[\w+\])?>=[\d.]+,<{major}\.{int(minor) + 1}"', text), (name, version)


def _trial(trial_id: str):
    return SimpleNamespace(trial_id=trial_id)  # ASHA's brackets read only the id


def test_early_stopped_trial_is_pruned_in_optuna():
    import optuna
    from optuna.distributions import FloatDistribution

    from trainables.tune.search import OptunaSearcher

    search = OptunaSearcher(space={"noise_std": FloatDistribution(0.1, 0.8)}, metric="fd", mode="min",
                                    sampler=optuna.samplers.RandomSampler(seed=0))
    for tid in ("a", "b"):
        search.suggest(tid)
    for epoch, value in ((2, 5.0), (2, 5.0), (4, 4.0)):  # epoch 2 twice: a resumed trial repeats it
        search.on_trial_result("a", {"epoch": epoch, "fd": value})
    search.on_trial_complete("a", {"epoch": 4, "fd": 4.0, "config/max_epochs": 8})   # stopped by ASHA
    search.on_trial_complete("b", {"epoch": 8, "fd": 3.0, "config/max_epochs": 8})   # ran to the end
    history = {t["number"]: t["state"] for t in search.optuna_history()}
    assert history == {0: "PRUNED", 1: "COMPLETE"}
    frozen = search.study.get_trials()[0]
    assert frozen.intermediate_values == {2: 5.0, 4: 4.0}


def test_asha_rungs_survive_a_save_and_restore():
    from ray.tune.schedulers import TrialScheduler

    from trainables.tune.scheduler import FixedTrialsExemptASHA, SchedulerState
    from trainables.tune.search import FixedTrialsFirst, _NothingToSearch

    def build():
        searcher = FixedTrialsFirst([{"kind": "baseline"}], _NothingToSearch())
        searcher.suggest("base")  # the fixed trial
        return FixedTrialsExemptASHA(searcher, time_attr="epoch", metric="fd", mode="min", max_t=8,
                                     grace_period=2, reduction_factor=2)

    asha = build()
    for tid in ("base", "t1", "t2"):
        asha.on_trial_add(None, _trial(tid))
    assert asha.on_trial_result(None, _trial("t1"), {"epoch": 2, "fd": 1.0}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, _trial("base"), {"epoch": 2, "fd": 9.0}) == TrialScheduler.CONTINUE
    # t2 is worse than the rung's cutoff (t1's 1.0 alone): stopped
    assert asha.on_trial_result(None, _trial("t2"), {"epoch": 2, "fd": 2.0}) == TrialScheduler.STOP
    saved = pickle.dumps(SchedulerState(asha).get_state())  # what Tune writes with the experiment

    restored = build()
    SchedulerState(restored).set_state(pickle.loads(saved))
    assert restored.searcher is not None and restored.searcher.is_fixed("base")  # the live searcher kept
    restored.on_trial_add(None, _trial("t3"))
    assert restored.on_trial_result(None, _trial("t3"), {"epoch": 2, "fd": 3.0}) == TrialScheduler.STOP
    fresh = build()  # without the saved rungs the same result would pass
    fresh.on_trial_add(None, _trial("t3"))
    assert fresh.on_trial_result(None, _trial("t3"), {"epoch": 2, "fd": 3.0}) == TrialScheduler.CONTINUE


def test_a_fixed_trial_never_enters_a_rung():
    """The baseline's 0.1 would raise the rung's cutoff (median of -1, -2, -0.1 = -1) and stop a trial
    at 1.5; exempt, the cutoff stays -1.5 (median of -1, -2) and the trial goes on."""
    from ray.tune.schedulers import TrialScheduler

    from trainables.tune.scheduler import FixedTrialsExemptASHA
    from trainables.tune.search import FixedTrialsFirst, _NothingToSearch

    searcher = FixedTrialsFirst([{"kind": "baseline"}], _NothingToSearch())
    searcher.suggest("base")
    asha = FixedTrialsExemptASHA(searcher, time_attr="epoch", metric="fd", mode="min", max_t=8, grace_period=2,
                                 reduction_factor=2)
    for tid in ("base", "t1", "t2", "t3"):
        asha.on_trial_add(None, _trial(tid))
    for tid, value in (("t1", 1.0), ("t2", 2.0), ("base", 0.1)):
        asha.on_trial_result(None, _trial(tid), {"epoch": 2, "fd": value})
    assert asha.on_trial_result(None, _trial("t3"), {"epoch": 2, "fd": 1.5}) == TrialScheduler.CONTINUE
    asha.on_trial_complete(None, _trial("base"), {"epoch": 8, "fd": 0.1})  # nothing of base to forget: no KeyError


def test_state_file_patterns_are_tunes():
    """study/recovery/state_backup.py backs up Tune's state files by name: the names must still be Ray's."""
    import fnmatch

    from ray.tune.callback import CallbackList
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.impl.tuner_internal import _TUNER_PKL
    from ray.tune.search import Searcher

    from study.recovery.state_backup import STATE_PATTERNS

    for template in (TuneController.CKPT_FILE_TMPL, Searcher.CKPT_FILE_TMPL, CallbackList.CKPT_FILE_TMPL):
        name = template.format("2026-11-29_08-00-00")
        assert any(fnmatch.fnmatch(name, p) for p in STATE_PATTERNS), (name, internals.installed_versions())
    assert _TUNER_PKL in STATE_PATTERNS
