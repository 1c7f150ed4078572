"""The trial-event protocol has one definition (trainables/tune/listener.py) that the callback,
the fan-out and the study's listeners follow, and the driver's listener reaches a restored Tuner."""
from __future__ import annotations

import ast
import inspect
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from trainables.tune.listener import EVENTS, Fanout, TrialListener, ended_state

ROOT = Path(__file__).resolve().parents[2]
ARGS = {  # one call per event, arguments as TrialEvents passes them
    "trial_started": ("t1", {"kind": "smoothed"}, False), "trial_result": ("t1", {"epoch": 1.0}),
    "trial_hardware": ("t1", "cpu"), "trial_tags": ("t1", {"extractor_sha": "0123456789abcdef"}),
    "trial_checkpoint": ("t1", "/tmp/ckpt"), "trial_retrying": ("t1", 1),
    "trial_ended": ("t1", "completed", None, None, {"epoch": 1.0}), "optuna_history": ([],), "study_ended": ([],),
}


def test_events_are_the_base_class_methods_and_the_callback_calls_only_them():
    assert set(EVENTS) == set(ARGS)
    tree = ast.parse((ROOT / "trainables/tune/events.py").read_text())
    called = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
              and isinstance(node.value, ast.Attribute) and node.value.attr == "listener"}
    assert called == set(EVENTS)


def test_defaults_are_no_ops_and_fanout_forwards_every_event_in_order():
    calls = []

    class Recorder(TrialListener):
        def __init__(self, tag):
            self.tag = tag

        def __getattribute__(self, name):
            if name in EVENTS:
                return lambda *args: calls.append((object.__getattribute__(self, "tag"), name, args))
            return object.__getattribute__(self, name)

    silent = TrialListener()
    fan = Fanout(Recorder("a"), silent, Recorder("b"))
    for event, args in ARGS.items():
        assert getattr(silent, event)(*args) is None
        getattr(fan, event)(*args)
    assert calls == [(tag, event, args) for event, args in ARGS.items() for tag in ("a", "b")]
    assert inspect.signature(Fanout.trial_ended) == inspect.signature(TrialListener.trial_ended)


@pytest.mark.parametrize("path, cls", [("study.tracking", "MlflowTracker"), ("study.progress", "ProgressPrinter")])
def test_study_listeners_override_events_with_their_signatures(path, cls):
    listener = getattr(__import__(path, fromlist=[cls]), cls)
    assert issubclass(listener, TrialListener)
    own = [name for name in vars(listener) if name.startswith(("trial_", "optuna_", "study_"))]
    assert own and set(own) <= set(EVENTS), set(own) - set(EVENTS)
    for name in own:
        base = list(inspect.signature(getattr(TrialListener, name)).parameters)
        assert list(inspect.signature(getattr(listener, name)).parameters) == base, name


def test_ended_state():
    assert ended_state(3, 3) == "completed" and ended_state(4, 3) == "completed" and ended_state(2, 3) == "pruned"


def test_listener_module_imports_neither_ray_nor_torch():
    code = "import sys, trainables.tune.listener; print(sorted(m for m in ('ray', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_restored_tuner_gets_the_new_listener_and_tuner_pkl_holds_none(tmp_path):
    import optuna.distributions as od

    from trainables.tune.events import TrialEvents
    from trainables.tune.tuner import TuneSpec, build_tuner, restore_tuner

    spec = TuneSpec(name="s", storage_path=str(tmp_path), param_space={"max_epochs": 1},
                    distributions={"noise_std": od.FloatDistribution(0.1, 0.8)}, fixed_trials=(),
                    num_samples=1, objective=("fd_digits_cnn",), mode=("min",), scheduler="fifo", grace_period=1,
                    max_epochs=1, seed=0, n_startup_trials=2, cpus_per_trial=1, gpus_per_trial=0,
                    max_concurrent=0, max_failures=0, num_to_keep=1)
    first, second = TrialListener(), TrialListener()
    build_tuner(spec, first)
    saved = pickle.loads((tmp_path / "s" / "tuner.pkl").read_bytes())
    stored = [cb for cb in saved["_run_config"].callbacks if isinstance(cb, TrialEvents)]
    assert len(stored) == 1 and stored[0]._listener is None
    with pytest.raises(RuntimeError, match="no listener"):
        stored[0].listener
    stored[0].setup()  # Tune's public hook at the start of a fit: the driver's listener of this study
    assert stored[0].listener is first
    restore_tuner(spec, str(tmp_path / "s"), second)
    events = [cb for cb in pickle.loads((tmp_path / "s" / "tuner.pkl").read_bytes())["_run_config"].callbacks
              if isinstance(cb, TrialEvents)]
    events[0].setup()  # the callback Tune restores from tuner.pkl
    assert len(events) == 1 and events[0].listener is second


def test_on_checkpoint_hands_over_the_grids_only(tmp_path):
    """The callback copies a checkpoint's sample grids, not its models' weights (Tune registers the
    checkpoint only after its callbacks return)."""
    from ray import tune

    from trainables.tune.events import TrialEvents

    saved = tmp_path / "checkpoint_000000"
    (saved / "nested").mkdir(parents=True)
    for name, body in (("one_step_e2.png", b"png-1"), ("two_step_e2.png", b"png-2"), ("model.pt", b"w" * 4096),
                       ("nested/other.png", b"png-3")):
        (saved / name).write_bytes(body)
    seen = {}

    class Grids(TrialListener):
        def trial_checkpoint(self, trial_id, directory):
            seen[trial_id] = {p.name: p.read_bytes() for p in Path(directory).iterdir()}

    events = TrialEvents(searcher=None)
    events.attach(Grids())
    trial = type("T", (), {"trial_id": "t1"})()
    events.on_checkpoint(0, [], trial, tune.Checkpoint.from_directory(str(saved)))
    assert seen == {"t1": {"one_step_e2.png": b"png-1", "two_step_e2.png": b"png-2"}}
