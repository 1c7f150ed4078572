"""Resolution of CLI flags into a StudyConfig: pure, no Ray, no files."""
import dataclasses

import pytest

from study.cli import identity_diff, parse, resolve
from study.config import SMOKE_TEST_SIZE, STUDY_SIZE, StudyConfig, StudyError
from trainables.config import TrialConfig


def cfg_of(*argv, storage="/tmp/studies-unit"):
    return resolve(parse(["--storage-path", storage, *argv]))


def test_noise_sweep_defaults():
    cfg = cfg_of("--space", "noise_sweep")
    assert cfg.objective == ("fd_digits_cnn",) and cfg.mode == ("min",)
    assert cfg.extractor == "digits_cnn" and cfg.trial["extractor"] == "digits_cnn"
    assert cfg.scheduler == "asha"  # 6 searched trials
    assert "noise_std" not in cfg.trial, "a searched key is proposed per trial, never shared"
    assert cfg.trial["kind"] == "smoothed" and cfg.trial["max_epochs"] == STUDY_SIZE["max_epochs"]
    assert cfg.fixed_trials == ({"kind": "baseline", "noise_std": 0.0},)
    assert cfg.name == "noise_sweep-digits"
    assert cfg.mlflow_uri == "sqlite:////tmp/studies-unit/noise_sweep-digits/mlflow.db"


def test_trial_config_of_a_searched_and_a_fixed_trial():
    cfg = cfg_of("--space", "noise_sweep")
    smoothed = cfg.trial_config({"noise_std": 0.42})
    assert isinstance(smoothed, TrialConfig) and smoothed.data.noise_std == 0.42
    assert smoothed.to_flat() == TrialConfig.from_flat({**cfg.trial, "noise_std": 0.42}).to_flat()
    baseline = cfg.trial_config(cfg.fixed_trials[0])
    assert (baseline.train.kind, baseline.data.noise_std) == ("baseline", 0.0)


def test_resolution_order_size_space_smoke_cli():
    paper = cfg_of("--space", "paper", "--dataset", "cifar10")
    assert (paper.trial["nr_filters"], paper.trial["noise_std"], paper.trial["dropout"]) == (160, 0.3, 0.5)
    assert paper.objective == ("fid_inception",)
    smoke = cfg_of("--space", "paper", "--smoke-test")
    assert smoke.trial["nr_filters"] == SMOKE_TEST_SIZE["nr_filters"], "smoke test shrinks even the paper model"
    cli = cfg_of("--space", "paper", "--smoke-test", "--set", "nr_filters=12", "--max-epochs", "3")
    assert (cli.trial["nr_filters"], cli.trial["max_epochs"]) == (12, 3)
    assert cfg_of("--space", "mixture_sweep", "--noise-std", "0.5").trial["noise_std"] == 0.5


def test_paper_repeats_its_fixed_trials_with_seeds():
    cfg = cfg_of("--space", "paper", "--num-samples", "2", "--seed", "7")
    assert [t["seed"] for t in cfg.fixed_trials] == [7, 7, 8, 8]
    assert cfg.scheduler == "fifo"


def test_multi_objective():
    cfg = cfg_of("--space", "joint", "--objective", "distance,bpd_bound", "--scheduler", "fifo")
    assert cfg.objective == ("fd_digits_cnn", "bpd_bound") and cfg.mode == ("min", "min")
    assert cfg.multi_objective
    assert cfg_of("--space", "joint", "--objective", "distance,bpd_bound").scheduler == "fifo"


@pytest.mark.parametrize("argv, message", [
    (["--space", "nope"], "unknown space 'nope'; valid spaces: noise_sweep, mixture_sweep, joint, paper"),
    (["--space", "noise_sweep", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--space", "mixture_sweep", "--noise-std", "-0.1"], "noise_std must be >= 0"),
    (["--space", "noise_sweep", "--num-mixtures", "0"], "num_mixtures must be >= 1"),
    (["--space", "noise_sweep", "--set", "noise_std=0.3"], "noise_std is searched by space 'noise_sweep'"),
    (["--space", "noise_sweep", "--set", "bogus=1"], "unknown config keys ['bogus']"),
    (["--space", "noise_sweep", "--objective", "fid"], "--objective takes distinct entries"),
    (["--space", "joint", "--objective", "distance,bpd_bound", "--scheduler", "asha"], "multi-objective"),
    (["--space", "noise_sweep", "--num-samples", "0"], "--num-samples must be >= 1"),
    (["--space", "noise_sweep", "--gpus-per-trial", "1.5"], "whole number"),
    ([], "--space is required"),
])
def test_bad_inputs_are_one_clear_line(argv, message):
    with pytest.raises(StudyError) as err:
        cfg_of(*argv)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_json_round_trip_and_identity_diff():
    cfg = cfg_of("--space", "noise_sweep")
    again = StudyConfig.from_json(cfg.to_json())
    assert again == cfg
    assert identity_diff(cfg, dataclasses.replace(cfg, address="auto")) == []
    diff = identity_diff(cfg, cfg_of("--space", "noise_sweep", "--num-samples", "9"))
    assert diff == ["num_samples=6 (asked 9)"]
    diff = identity_diff(cfg, cfg_of("--space", "noise_sweep", "--max-epochs", "9"))
    assert diff == [f"max_epochs={STUDY_SIZE['max_epochs']!r} (asked 9)"]


def test_a_trial_field_added_since_the_study_started_is_not_a_change():
    cfg = cfg_of("--space", "noise_sweep")
    older = dataclasses.replace(cfg, trial={k: v for k, v in cfg.trial.items() if k != "grad_clip"})
    assert identity_diff(older, cfg) == []
    changed = dataclasses.replace(cfg, trial={**cfg.trial, "grad_clip": 1.0})
    assert identity_diff(changed, cfg) == ["grad_clip=1.0 (asked 0.0)"]


def test_gpus_per_trial_from_the_cluster():
    from study.preflight import check_cpus, resolve_gpus

    auto = cfg_of("--space", "noise_sweep")
    assert resolve_gpus(auto, {"CPU": 2.0}) == 0.0
    assert resolve_gpus(auto, {"CPU": 16.0, "GPU": 1.0}) == 0.25, "tiny digits trials share a GPU"
    assert resolve_gpus(cfg_of("--space", "noise_sweep", "--dataset", "mnist"), {"GPU": 8.0}) == 1.0
    assert resolve_gpus(cfg_of("--space", "noise_sweep", "--gpus-per-trial", "0.5"), {"GPU": 1.0}) == 0.5
    with pytest.raises(StudyError, match="has 0 GPUs"):
        resolve_gpus(cfg_of("--space", "noise_sweep", "--gpus-per-trial", "1"), {"CPU": 2.0})
    with pytest.raises(StudyError, match="has 2 CPUs"):
        check_cpus(cfg_of("--space", "noise_sweep", "--cpus-per-trial", "4"), {"CPU": 2.0})


def test_data_parallel_workers_the_cluster_can_never_place_are_refused():
    from study.preflight import check_cpus, max_concurrent, resolve_gpus

    two = cfg_of("--space", "noise_sweep", "--workers-per-trial", "2")
    assert two.trial["workers_per_trial"] == 2
    check_cpus(two, {"CPU": 2.0})  # 2 workers x 1 CPU fit
    with pytest.raises(StudyError, match=r"^--workers-per-trial 3 x --cpus-per-trial 1 but the Ray cluster has 2 CPUs"):
        check_cpus(cfg_of("--space", "noise_sweep", "--workers-per-trial", "3", "--set", "batch_size=63"), {"CPU": 2.0})
    with pytest.raises(StudyError, match="--workers-per-trial 2 x --gpus-per-trial 1 but the Ray cluster has 1 GPUs"):
        resolve_gpus(two, {"CPU": 8.0, "GPU": 1.0})
    assert resolve_gpus(two, {"CPU": 8.0, "GPU": 2.0}) == 1.0, "a DDP worker defaults to a whole GPU"
    with pytest.raises(StudyError, match="needs a whole GPU"):
        resolve_gpus(cfg_of("--space", "noise_sweep", "--workers-per-trial", "2", "--gpus-per-trial", "0.5"),
                     {"GPU": 4.0})
    assert max_concurrent(two, {"CPU": 5.0}, 0.0) == 2  # two trials of 2 x 1 CPU fit in 5 CPUs
    assert max_concurrent(two, {"CPU": 16.0, "GPU": 2.0}, 1.0) == 1
    with pytest.raises(StudyError, match="batch_size 64 must be divisible by workers_per_trial 3"):
        cfg_of("--space", "noise_sweep", "--workers-per-trial", "3")


def test_smoke_test_of_a_space_without_search_runs_its_fixed_trials_once():
    assert len(cfg_of("--space", "paper", "--smoke-test").fixed_trials) == 2
