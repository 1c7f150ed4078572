"""Per-dataset study sizes and the wall-time estimate: arithmetic with injected step times
(no timing assertions), the plan of a resolved study, and the --dry-run output."""
import math
import re

import pytest

from study import estimate
from study.cli import parse, resolve
from study.config import GPU_SIZE, MNIST_CPU_SIZE, SMOKE_TEST_SIZE, STUDY_SIZE, study_size
from study.run import main

TIMES = estimate.StepTimes(device="cpu", train_per_image=0.01, forward_per_image=0.002, sample_fixed=1.0,
                           sample_per_image=0.05, batch_size=64)
LINE = re.compile(r"^estimate: ~(\d+) min \(measured ([0-9.e+-]+) s/step on (cpu|cuda); (\d+) trials, (\d+) at a time, (\d+) threads? each\)$")


def cfg_of(*argv):
    return resolve(parse(["--storage-path", "/tmp/studies-unit", *argv]))


def test_estimate_arithmetic_with_injected_step_times():
    plan = estimate.StudyPlan(smoothed_trials=6, baseline_trials=1, epochs=8, evaluations=4, train_images=1437,
                              test_images=360, eval_samples=200, bound_noise_draws=1, concurrency=2)
    # smoothed: 8 x (1437 x 0.01 + 360 x 0.002) + 4 x (1 + 200 x 0.05) = 120.72 + 44; the one bound
    # draw is the test pass's (pair_evaluation.evaluate_pair): no forward passes of its own
    assert estimate.trial_seconds(TIMES, plan, "smoothed") == pytest.approx(164.72)
    # baseline: one network, no bound: (8 x (14.37 + 0.72) + 44) / 2
    assert estimate.trial_seconds(TIMES, plan, "baseline") == pytest.approx(82.36)
    assert estimate.estimate_seconds(TIMES, plan) == pytest.approx((6 * 164.72 + 82.36) / 2)
    assert estimate.estimate_line(TIMES, plan) == "estimate: ~9 min (measured 0.64 s/step on cpu; 7 trials, 2 at a time, 1 thread each)"
    wide = estimate.StudyPlan(**{**plan.__dict__, "concurrency": 16})
    assert estimate.estimate_seconds(TIMES, wide) == pytest.approx(164.72), "never below the longest trial"
    assert estimate.estimate_line(TIMES, wide).endswith("7 trials, 7 at a time, 1 thread each)")


def test_plan_of_the_default_digits_study():
    cfg = cfg_of("--space", "noise_sweep")
    plan = estimate.plan_of(cfg, estimate.split_sizes("digits"), 2)
    assert (plan.smoothed_trials, plan.baseline_trials) == (6, 1)
    assert (plan.epochs, plan.evaluations, plan.eval_samples) == (8, 4, 200)  # evaluations at epochs 2, 4, 6, 8
    assert (plan.train_images, plan.test_images) == (1438, 359)
    mnist = estimate.plan_of(cfg_of("--space", "paper", "--dataset", "mnist", "--num-samples", "2"), (60000, 10000), 1)
    assert (mnist.smoothed_trials, mnist.baseline_trials, mnist.test_images) == (2, 2, 1000)  # max_eval_images
    assert estimate.evaluations_per_trial(5, 2) == 3  # epochs 2, 4 and the last
    assert plan.bound_epochs == 8
    eval_only = estimate.plan_of(cfg_of("--space", "noise_sweep", "--set", "bound_every=eval"), (1438, 359), 2)
    assert eval_only.bound_epochs == 4  # the bound with the samples' metrics only


def test_the_bound_counts_only_on_its_epochs():
    plan = estimate.StudyPlan(smoothed_trials=1, baseline_trials=0, epochs=8, evaluations=4, train_images=1437,
                              test_images=360, eval_samples=200, bound_noise_draws=3, concurrency=1, bound_epochs=4)
    # 8 x (14.37 + 360 x 0.002) + 4 x (360 x (3 - 1) x 0.002) + 4 x (1 + 200 x 0.05) = 120.72 + 5.76 + 44
    assert estimate.trial_seconds(TIMES, plan, "smoothed") == pytest.approx(170.48)
    every_epoch = estimate.StudyPlan(**{**plan.__dict__, "bound_epochs": None})
    assert estimate.trial_seconds(TIMES, every_epoch, "smoothed") == pytest.approx(170.48 + 5.76)


def test_split_sizes_are_the_datasets():
    from pathlib import Path

    from trainables.data import load_dataset

    assert estimate.split_sizes("digits") == (len(load_dataset("digits", "train")),
                                                    len(load_dataset("digits", "test")))
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"  # the real MNIST test split
    if shared.exists():
        assert estimate.split_sizes("mnist")[1] == len(load_dataset("mnist", "test", str(shared)))
    assert estimate.split_sizes("some_folder") is None


def test_a_dataset_of_unknown_size_says_the_estimate_is_unavailable(monkeypatch):
    import dataclasses

    cfg = dataclasses.replace(cfg_of("--space", "noise_sweep"), trial={**cfg_of("--space", "noise_sweep").trial,
                                                                       "dataset": "some_folder"})
    monkeypatch.setattr(estimate, "measure", lambda cfg: pytest.fail("nothing to measure for"))
    lines = []
    estimate.announce(cfg, 2.0, 0.0, 0.0, lines.append)
    assert lines[0].startswith("note: the default some_folder study size is meant for a GPU cluster")
    assert lines[1].startswith("estimate: unavailable") and len(lines) == 2


def test_concurrency_from_resources():
    cfg = cfg_of("--space", "noise_sweep")
    assert estimate.concurrency(cfg, cpus=2, gpus=0, gpus_per_trial=0) == 2
    assert estimate.concurrency(cfg, cpus=16, gpus=1, gpus_per_trial=0.25) == 4
    assert estimate.concurrency(cfg_of("--space", "noise_sweep", "--max-concurrent", "1"), 16, 0, 0) == 1
    assert estimate.concurrency(cfg_of("--space", "noise_sweep", "--cpus-per-trial", "4"), 2, 0, 0) == 1


@pytest.mark.parametrize("dataset, size", [("digits", STUDY_SIZE), ("mnist", MNIST_CPU_SIZE),
                                           ("fashion_mnist", MNIST_CPU_SIZE), ("cifar10", GPU_SIZE)])
def test_dry_run_resolves_the_dataset_size_and_prints_the_estimate(dataset, size, capsys, monkeypatch, tmp_path):
    import json

    monkeypatch.setattr(estimate, "measure", lambda cfg: TIMES)
    monkeypatch.setattr(estimate, "local_resources", lambda: (2.0, 0.0))
    assert main(["--space", "noise_sweep", "--dataset", dataset, "--storage-path", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    config = json.loads(out[: out.index("\n}\n") + 2])
    assert {k: config["trial"][k] for k in size} == size
    lines = out.splitlines()
    match = LINE.match(lines[-1])
    assert match and match.groups()[1:] == ("0.64", "cpu", "7", "2", "1"), lines[-1]
    note = [line for line in lines if line.startswith("note:")]
    assert (len(note) == 1) == (dataset == "cifar10"), "one line where the size expects GPUs and there are none"
    assert not list(tmp_path.iterdir()), "a dry run writes nothing"


def test_precedence_defaults_size_space_smoke_flags():
    from trainables.config import TrialConfig

    defaults = TrialConfig().to_flat()
    mnist = cfg_of("--space", "noise_sweep", "--dataset", "mnist").trial
    assert mnist["max_eval_images"] == 1000 != defaults["max_eval_images"], "the size over TrialConfig defaults"
    assert mnist["gradient_mode"] == defaults["gradient_mode"], "keys no size sets keep their defaults"
    paper = cfg_of("--space", "paper", "--dataset", "mnist").trial
    assert (paper["nr_filters"], paper["max_eval_images"]) == (40, 1000), "the space over the size"
    smoke = cfg_of("--space", "paper", "--dataset", "mnist", "--smoke-test").trial
    assert smoke["max_eval_images"] == SMOKE_TEST_SIZE["max_eval_images"], "--smoke-test over size and space"
    flags = cfg_of("--space", "paper", "--dataset", "mnist", "--smoke-test", "--set", "max_eval_images=10",
                   "--max-epochs", "3").trial
    assert (flags["max_eval_images"], flags["max_epochs"]) == (10, 3), "flags over everything"
    assert study_size("some_new_dataset") == GPU_SIZE, "any other dataset: the GPU size"


def test_probe_measures_positive_times_on_this_device():
    cfg = cfg_of("--space", "noise_sweep", "--smoke-test")
    times = estimate.measure(cfg)  # trainables.step_timing on this process's device
    assert times.device in ("cpu", "cuda") and times.batch_size == SMOKE_TEST_SIZE["batch_size"]
    assert times.train_per_image > 0 and times.forward_per_image > 0 and times.sample_fixed + times.sample_per_image > 0
    assert all(math.isfinite(v) for v in (times.train_per_image, times.forward_per_image, times.sample_fixed,
                                          times.sample_per_image))
