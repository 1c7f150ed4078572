"""ExtendedSearch reads the state a plain Tune SearchGenerator saved (same wrapper names) and
raises only the trial total; extend_restored rebuilds Tune's wrappers around the restored searcher."""
from types import SimpleNamespace

from ray import tune
from ray.tune.search import ConcurrencyLimiter, SearchGenerator

from trainables.tune.extend import ExtendedSearch, extend_restored
from trainables.tune.search import FixedTrialsFirst, _NothingToSearch

FIXED = [{"kind": "baseline", "noise_std": 0.0}]


def _saved_by_tune(tmp_path, total: int, counter: int) -> None:
    """The files a study's SearchGenerator(ConcurrencyLimiter(FixedTrialsFirst)) leaves in the experiment dir."""
    inner = FixedTrialsFirst(FIXED, _NothingToSearch())
    inner.suggest("t0")  # the baseline got its trial id
    plain = SearchGenerator(ConcurrencyLimiter(inner, max_concurrent=2))
    plain._total_samples, plain._counter = total, counter
    plain.save_to_dir(str(tmp_path), session_str="s1")


def test_restored_total_is_raised_and_the_rest_restored(tmp_path):
    _saved_by_tune(tmp_path, total=3, counter=3)
    fresh = FixedTrialsFirst(FIXED, _NothingToSearch())
    grown = ExtendedSearch(ConcurrencyLimiter(fresh, max_concurrent=2), total=5)
    grown._finished = True
    grown.restore_from_dir(str(tmp_path))
    assert grown.total_samples == 5 and grown._counter == 3 and not grown.is_finished()
    assert fresh.fixed_ids == {"t0": 0}, "the fixed trials' state comes back by its wrapper name"


def test_never_lowered(tmp_path):
    _saved_by_tune(tmp_path, total=7, counter=4)
    kept = ExtendedSearch(ConcurrencyLimiter(FixedTrialsFirst(FIXED, _NothingToSearch()), max_concurrent=2), total=5)
    kept.restore_from_dir(str(tmp_path))
    assert kept.total_samples == 7 and kept._counter == 4


def test_extend_restored_builds_tunes_wrappers_once():
    searcher = FixedTrialsFirst(FIXED, _NothingToSearch())
    config = tune.TuneConfig(search_alg=searcher, max_concurrent_trials=2, num_samples=3)
    tuner = SimpleNamespace(_local_tuner=SimpleNamespace(_tune_config=config))
    extend_restored(tuner, 6)
    alg = config.search_alg
    assert isinstance(alg, ExtendedSearch) and alg.total == 6 and config.max_concurrent_trials is None
    assert isinstance(alg.searcher, ConcurrencyLimiter) and alg.searcher.max_concurrent == 2
    assert alg.searcher.searcher is searcher, "ASHA and the events callback hold this very searcher"
    config = tune.TuneConfig(search_alg=searcher, num_samples=3)  # no concurrency limit: no limiter
    extend_restored(SimpleNamespace(_local_tuner=SimpleNamespace(_tune_config=config)), 4)
    assert config.search_alg.searcher is searcher
