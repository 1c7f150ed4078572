"""The extractor gate and identity (issue 21): a classifier below its sanity floor is refused in one
line naming its accuracy, floor and dataset; above it, it is served with its test accuracy; its
weights' sha names it, so two training splits are two extractors, each trial's run carries the
tags, and analysis refuses to compare distances across them."""
from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from search_spaces.metric_names import EXTRACTOR_TAGS
from tests.idx_files import write_split
from trainables.cache_files import CACHE_ENV_VAR
from trainables.data import load_dataset
from trainables.quality import classifiers as clf
from trainables.quality import extractors as fx


def _independent_accuracy(state_dict: dict, spec: clf.ClassifierSpec, test) -> float:
    """Test accuracy recomputed from the cached weights: a fresh network, one forward pass, argmax."""
    model = clf.SmallCNN(test[0].shape[1], spec.widths, spec.feature_dim)
    model.load_state_dict(state_dict)
    with torch.no_grad():
        return float((model(test[0]).argmax(dim=1) == test[1]).double().mean())


def test_a_classifier_below_its_sanity_floor_is_refused_naming_accuracy_floor_and_dataset(tmp_path, monkeypatch):
    untrained = dataclasses.replace(clf.CLASSIFIER_SPECS["digits"], max_steps=0, min_accuracy=0.6)  # chance: ~0.1
    monkeypatch.setitem(clf.CLASSIFIER_SPECS, "digits", untrained)
    with pytest.raises(clf.ClassifierAccuracyError) as refused:
        fx.build_extractor("digits_cnn", "digits", cache_dir=tmp_path, log=lambda _: None)  # the study's path
    message = str(refused.value)
    [cached] = (tmp_path / "classifiers").glob("digits_cnn-*.pt")
    payload = torch.load(cached, weights_only=True)
    measured = _independent_accuracy(payload["state_dict"], untrained, load_dataset("digits", "test", with_labels=True))
    assert payload["test_accuracy"] == pytest.approx(measured, abs=1e-12) and measured < 0.6
    assert "\n" not in message and message.startswith("digits_cnn ")
    assert f"test accuracy {measured:.4f} on 359 test images" in message
    assert re.search(r"below its floor 0\.60 for digits", message), message


@pytest.mark.slow  # trains a classifier for 150 steps (~2.3 CPU-s); the refusal below the floor runs fast
def test_a_classifier_above_the_floor_is_served_with_its_accuracy_and_identity(tmp_path, monkeypatch):
    brief = dataclasses.replace(clf.CLASSIFIER_SPECS["digits"], max_steps=150, eval_every=50, min_accuracy=0.5)
    monkeypatch.setitem(clf.CLASSIFIER_SPECS, "digits", brief)
    lines = []
    extractor = fx.build_extractor("digits_cnn", "digits", cache_dir=tmp_path, log=lines.append)
    [cached] = (tmp_path / "classifiers").glob("digits_cnn-*.pt")
    payload = torch.load(cached, weights_only=True)
    measured = _independent_accuracy(payload["state_dict"], brief, load_dataset("digits", "test", with_labels=True))
    assert extractor.accuracy == payload["test_accuracy"] == pytest.approx(measured, abs=1e-12) and measured > 0.5
    assert extractor.fingerprint == payload["weights_sha256"] == clf.weights_sha256(payload["state_dict"])
    assert fx.extractor_tags(extractor) == {"extractor_sha": payload["weights_sha256"][:16],
                                            "extractor_accuracy": f"{measured:.4f}"}
    assert any(f"test accuracy {measured:.4f} (sanity floor 0.50)" in line for line in lines), lines
    lines.clear()  # served again from the cache: the same accuracy and weights, said again
    again = fx.build_extractor("digits_cnn", "digits", cache_dir=tmp_path, log=lines.append)
    assert (again.accuracy, again.fingerprint) == (extractor.accuracy, extractor.fingerprint)
    assert any(f"test accuracy {measured:.4f}, sanity floor 0.50, weights {extractor.fingerprint[:12]}" in line
               for line in lines), lines


def test_weights_sha_depends_on_every_value_and_not_on_the_dict_order():
    weights = clf.SmallCNN(1, (4, 8), 6).state_dict()
    digest = clf.weights_sha256(weights)
    assert clf.weights_sha256(dict(reversed(list(weights.items())))) == digest
    nudged = {k: v.clone() for k, v in weights.items()}
    last = nudged["head.1.bias"]
    last[-1] = torch.nextafter(last[-1], torch.tensor(np.inf))  # one ulp in one value
    assert clf.weights_sha256(nudged) != digest and len(digest) == 64


def _mnist_like(folder, seed: int):
    """A 28x28 dataset folder: 256 training images of its own seed, the same 64 test images always."""
    rng, fixed = np.random.default_rng(seed), np.random.default_rng(1234)
    write_split(folder, "train", rng.integers(0, 256, (256, 28, 28)), rng.integers(0, 10, 256))
    write_split(folder, "t10k", fixed.integers(0, 256, (64, 28, 28)), fixed.integers(0, 10, 64))
    return str(folder)


def test_two_training_splits_are_two_extractors_and_one_split_is_one(tmp_path, monkeypatch):
    tiny = dataclasses.replace(clf.CLASSIFIER_SPECS["mnist"], max_steps=4, eval_every=2, batch_size=32,
                               train_device="cpu", min_accuracy=0.0)
    monkeypatch.setitem(clf.CLASSIFIER_SPECS, "mnist", tiny)

    def build(folder: str, cache: str):
        return fx.build_extractor("mnist_cnn", "mnist", data_dir=folder, cache_dir=tmp_path / cache, log=lambda _: None)

    a, b = build(_mnist_like(tmp_path / "a", 0), "c1"), build(_mnist_like(tmp_path / "b", 1), "c1")
    assert a.id == b.id == "mnist_cnn"  # one id, two networks: the tags tell them apart
    assert fx.extractor_tags(a)["extractor_sha"] != fx.extractor_tags(b)["extractor_sha"]
    retrained = build(str(tmp_path / "a"), "c2")
    assert retrained.fingerprint == a.fingerprint  # same data, spec and threads: the same weights, retrained
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "c1"))  # where a trial finds the study's classifier
    tags = fx.trial_extractor_tags("", "mnist", data_dir=str(tmp_path / "a"))  # "": the dataset's default id
    assert tags == {"extractor_sha": a.fingerprint[:16], "extractor_accuracy": f"{a.accuracy:.4f}"}
    assert tuple(tags) == EXTRACTOR_TAGS


def test_trial_events_hand_the_reported_extractor_tags_to_the_listener():
    from trainables.tune.events import TrialEvents
    from trainables.tune.listener import TrialListener

    calls = []

    class Recorder(TrialListener):
        def trial_result(self, trial_id, metrics):
            calls.append(("result", trial_id, metrics))

        def trial_tags(self, trial_id, tags):
            calls.append(("tags", trial_id, tags))

    events = TrialEvents(searcher=None)
    events.attach(Recorder())
    result = {"epoch": 2, "fd_mnist_cnn": 3.5, "hardware": "cpu", "extractor_sha": "0123456789abcdef",
              "extractor_accuracy": "0.9731"}
    events.on_trial_result(0, [], SimpleNamespace(trial_id="t1"), result)
    assert calls == [("result", "t1", {"epoch": 2.0, "fd_mnist_cnn": 3.5}),
                     ("tags", "t1", {"extractor_sha": "0123456789abcdef", "extractor_accuracy": "0.9731"})]
    calls.clear()
    events.on_trial_result(0, [], SimpleNamespace(trial_id="t1"), {"epoch": 1})  # before the first evaluation
    assert [c[0] for c in calls] == ["result"]


def test_the_tracker_tags_the_trial_run_once_per_change():
    from study.tracking import MlflowTracker, _Run

    set_tags = []
    tracker = MlflowTracker(cfg=None, study_dir=None)
    tracker._client = SimpleNamespace(set_tag=lambda run_id, key, value: set_tags.append((run_id, key, value)))
    tracker._runs["t1"] = _Run("run-1", last_step=1)  # as trial_started (or a resume's lookup) leaves it
    tags = {"extractor_sha": "0123456789abcdef", "extractor_accuracy": "0.9731"}
    for _ in range(3):  # every reported epoch carries them: tagged once
        tracker.trial_tags("t1", tags)
    tracker.trial_tags("t1", {**tags, "extractor_sha": "fedcba9876543210"})  # a retry elsewhere, another network
    assert set_tags == [("run-1", "extractor_accuracy", "0.9731"), ("run-1", "extractor_sha", "0123456789abcdef"),
                        ("run-1", "extractor_accuracy", "0.9731"), ("run-1", "extractor_sha", "fedcba9876543210")]


def _study(name: str, extractor: str, shas: list) -> "StudyData":
    from analysis.load import StudyData

    trials = pd.DataFrame({"trial_id": [f"t{i}" for i in range(len(shas))], "extractor_sha": shas})
    return StudyData(study=name, mlflow_uri="sqlite:///x.db", experiment_id="1",
                     experiment_tags={"extractor": extractor}, trials=trials, epochs=pd.DataFrame(),
                     summary_run_id=None)


def test_analysis_refuses_distances_of_different_networks_under_one_id():
    from analysis.compare import check_same_networks
    from analysis.load import AnalysisError, check_one_extractor

    check_one_extractor("s", _study("s", "mnist_cnn", ["aaaa", None, "aaaa"]).trials)  # untagged runs pass
    with pytest.raises(AnalysisError, match=r"2 different feature extractors \(extractor_sha aaaa in 2 trials, "
                                            r"extractor_sha bbbb in 1 trials\)"):
        check_one_extractor("s", _study("s", "mnist_cnn", ["aaaa", "bbbb", "aaaa"]).trials)
    check_same_networks([_study("a", "mnist_cnn", ["aaaa"]), _study("b", "fashion_mnist_cnn", ["bbbb"]),
                         _study("c", "mnist_cnn", ["aaaa", None])])
    with pytest.raises(AnalysisError, match=r"'a' and 'c' both report fd_mnist_cnn but from different mnist_cnn "
                                            r"networks \(extractor_sha aaaa vs cccc"):
        check_same_networks([_study("a", "mnist_cnn", ["aaaa"]), _study("b", "fashion_mnist_cnn", ["bbbb"]),
                             _study("c", "mnist_cnn", ["cccc"])])


def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_classifier_subsets.py"
    spec = importlib.util.spec_from_file_location("bench_classifier_subsets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_writes_the_split_the_product_reads_and_types_its_overrides(tmp_path):
    bench = _bench()
    rng = np.random.default_rng(5)
    train = (rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.integers(0, 10, 7, dtype=np.uint8))
    test = (rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), rng.integers(0, 10, 3, dtype=np.uint8))
    folder = bench.write_folder(tmp_path / "d", train, test)
    for split, (images, labels) in (("train", train), ("test", test)):
        x, y = load_dataset("mnist", split, str(folder), with_labels=True)  # (N, 1, 28, 28) in [-1, 1]
        assert torch.equal(x, torch.from_numpy(images[:, None].astype(np.float32) / 127.5 - 1.0))
        assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    assert bench.parse_overrides(["max_shift=1", "lr=0.001"]) == {"max_shift": 1, "lr": 0.001}
    with pytest.raises(SystemExit, match="--set 'widths=3'"):
        bench.parse_overrides(["widths=3"])
