"""Extending a restored study: more searched trials than the experiment was started with.

Tune restores its search algorithm's state (`SearchGenerator.get_state`: counter,
total_samples, finished) from the experiment checkpoint, so a restored Tuner keeps the
num_samples of the first run, whatever the new TuneConfig says; Ray has no API to raise
it (ray-project/ray#42221, open). Tune builds that SearchGenerator around the searcher
pickled in tuner.pkl, then `TuneController.resume` calls `restore_from_dir` on it, which
calls `set_state`. `ExtendedSearch` is that SearchGenerator with one change: after
`set_state`, the total is raised to the study's new size. Everything else that resumes
a study resumes unchanged: the wrapped searchers' states (Optuna's whole history, the
fixed trials' ids) by the same names, ASHA's rungs by the SchedulerState callback.

After the extended run saves its experiment state, the saved total is the new one, so
a later plain restore (an interrupted extension) keeps it without this module.
"""
from __future__ import annotations

from typing import Optional

from ray import tune
from ray.tune.search import ConcurrencyLimiter, SearchGenerator

from trainables.tune.internals import local_tuner, raise_search_total, search_total, tuner_tune_config
from trainables.tune.reconcile_search import generator_state, reconcile


class ExtendedSearch(SearchGenerator):
    """A SearchGenerator whose restored total of trials is raised to `total` (never lowered), and whose
    restored searchers are lined up with `trials`, the trials Tune restored (reconcile_search.py)."""

    def __init__(self, searcher, total: int, trials: Optional[dict] = None):
        super().__init__(searcher)
        self.total = int(total)
        self.trials = trials
        self.lined_up = trials is None

    def set_state(self, state: dict) -> None:  # the last step of Tune's restore_from_dir
        if self.trials is not None:
            state = generator_state(state, self.trials)
        super().set_state(state)
        if search_total(self) < self.total:
            raise_search_total(self, self.total)
        if self.trials is not None:
            reconcile(self.searcher, self.trials)
            self.lined_up = True

    def _line_up_unrestored(self) -> None:
        """Tune found no searcher state to restore (a driver killed before its first upload of it), so
        set_state never ran: line the fresh searchers up with Tune's trials before the first new trial."""
        if not self.lined_up:
            self.set_state(self.get_state())

    def is_finished(self) -> bool:
        self._line_up_unrestored()
        return super().is_finished()

    def next_trial(self):
        self._line_up_unrestored()
        return super().next_trial()


def extend_restored(tuner: tune.Tuner, total: int, trials: Optional[dict] = None) -> None:
    """Make a Tuner from `Tuner.restore` create trials until `total` (fixed + searched) exist, its
    searchers lined up with `trials` (reconcile_search.restored_trials) when given.

    Reads and replaces the restored TuneConfig's search_alg: Tuner has no public accessor
    for it. Tune wraps a Searcher as SearchGenerator(ConcurrencyLimiter(searcher)) when
    max_concurrent_trials is set; the same wrappers are built here (their saved states
    are found by class name), and max_concurrent_trials is cleared so Tune does not wrap twice.
    """
    if local_tuner(tuner) is None:
        raise RuntimeError("extending a study is not supported through a Ray client (ray://) connection")
    config = tuner_tune_config(tuner)
    searcher = config.search_alg
    if isinstance(searcher, SearchGenerator):  # tuner.pkl of a run that was itself extended
        searcher = searcher.searcher
    limit = config.max_concurrent_trials
    if limit and not isinstance(searcher, ConcurrencyLimiter):
        searcher = ConcurrencyLimiter(searcher, max_concurrent=limit)
    config.max_concurrent_trials = None
    config.search_alg = ExtendedSearch(searcher, total, trials)
