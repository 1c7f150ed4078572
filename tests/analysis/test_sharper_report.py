"""Bins of a continuous searched parameter, hyperparameter importance, plots left out or labelled, wording,
and both MLflow layouts (summary run beside the trials, or the study's parent run above them)."""
import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from analysis import importance, report
from analysis.load import load_trials
from analysis.plots import close_points
from analysis.tables import Bin, searched_bins, to_bin, trend_table
from tests.analysis.conftest import EXTRACTOR, STUDY, write_study

SIGMA = {"type": "float", "low": 0.1, "high": 0.8, "log": False}
FD2 = f"fd_{EXTRACTOR}_twostep"


def test_bins_of_a_continuous_searched_parameter():
    bins = searched_bins({"noise_std": SIGMA, "num_mixtures": {"type": "int", "low": 1, "high": 20, "log": False},
                          "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}})
    assert bins == {"noise_std": (0.1, 0.8, 0.05, False), "lr": (1e-4, 1e-2, 0.5, True)}, "ints are not binned"
    assert to_bin(0.4814, *bins["noise_std"]) == to_bin(0.4842, *bins["noise_std"]) == Bin(0.45, 0.5)
    assert to_bin(0.5, *bins["noise_std"]) == Bin(0.5, 0.55), "bins are [low, high)"
    assert to_bin(0.8, *bins["noise_std"]) == Bin(0.75, 0.8), "the domain's top is in the last bin"
    assert to_bin(0.0, *bins["noise_std"]) == Bin(0.0, 0.0) and str(Bin(0.0, 0.0)) == "0", "the baseline stays exact"
    assert to_bin(3e-4, *bins["lr"]) == Bin(1e-4, float(f"{10 ** -3.5:.10g}")), "half-decade bins"
    assert str(Bin(0.45, 0.5)) == "[0.45, 0.5)"


def test_repeats_by_rounding_are_one_row(data):
    trials = data.trials.copy()
    near = trials["trial_id"].isin(["s05a", "s03k10"])  # two completed smoothed trials -> sigma 0.4814 / 0.4842
    trials.loc[near, "noise_std"] = [0.4842, 0.4814]
    trials.loc[near, "num_mixtures"] = 5
    table = trend_table(trials, "noise_std", bins={"noise_std": (0.1, 0.8, 0.05, False)})
    assert table.index.names == ["kind", "noise_std"], "num_mixtures no longer varies"
    row = table.loc[("smoothed", Bin(0.45, 0.5))]
    values = trials.loc[near, FD2]                 # 16 and 8
    assert row[(FD2, "n")] == 2 and row[(FD2, "mean")] == values.mean() == 12.0
    assert row[(FD2, "std")] == pytest.approx(math.sqrt(((16 - 12) ** 2 + (8 - 12) ** 2) / 1))
    assert [str(b) for b in table.index.get_level_values("noise_std")] == [
        "0", "[0.3, 0.35)", "[0.45, 0.5)", "[0.5, 0.55)", "[0.6, 0.65)", "[0.7, 0.75)"]  # 0.5: the errored s05b


def _importance_trials(n: int = 24) -> pd.DataFrame:
    """The objective depends on noise_std only: (noise_std - 0.45)^2 * 100; num_mixtures is noise-free filler."""
    rng = np.random.default_rng(0)
    sigma, k = rng.uniform(0.1, 0.8, n), rng.integers(1, 21, n)
    return pd.DataFrame({"state": "completed", "trial_origin": "optuna", "kind": "smoothed", "noise_std": sigma,
                         "num_mixtures": k, "fd": (sigma - 0.45) ** 2 * 100})


def test_importance_finds_the_parameter_the_objective_depends_on():
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    searched = {"noise_std": SIGMA, "num_mixtures": {"type": "int", "low": 1, "high": 20, "log": False}}
    trials = _importance_trials()
    table = importance.importance_table(trials, searched, "fd", "min")
    assert list(table["parameter"]) == ["noise_std", "num_mixtures"] and (table["n_trials"] == 24).all()
    assert table["importance"].sum() == pytest.approx(1.0) and table["importance"].iloc[0] > 0.9
    # the same numbers as Optuna's own study object with the same trials
    study = optuna.create_study()
    for s, k, v in zip(trials["noise_std"], trials["num_mixtures"], trials["fd"]):
        study.add_trial(optuna.trial.create_trial(
            params={"noise_std": float(s), "num_mixtures": int(k)}, value=float(v),
            distributions={"noise_std": optuna.distributions.FloatDistribution(0.1, 0.8),
                           "num_mixtures": optuna.distributions.IntDistribution(1, 20)}))
    expected = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    assert dict(zip(table["parameter"], table["importance"])) == pytest.approx(expected)


def test_importance_says_why_not():
    trials = _importance_trials(2)
    assert "searched `noise_std`" in importance.why_not(trials, {"noise_std": SIGMA}, "fd")
    two = {"noise_std": SIGMA, "num_mixtures": {"type": "int", "low": 1, "high": 20, "log": False}}
    assert importance.why_not(trials, two, "fd").startswith("2 completed searched trial(s)")
    assert importance.why_not(_importance_trials(), two, "fd") is None


def test_close_points_are_found():
    x, y = np.array([0.4814, 0.4842, 0.7, 0.1]), np.array([157.7, 158.9, 174.7, 600.0])
    # ranges 0.6 and 442.3: the first two are 0.5 % and 0.3 % apart, every other pair far
    assert list(close_points(x, y)) == [True, True, False, False]
    assert list(close_points(np.array([0.5, 0.5]), np.array([1.0, 1.0]))) == [True, True]
    assert not close_points(np.array([0.3]), np.array([2.0])).any()


@pytest.mark.slow  # a second whole report with its plots (~5 CPU-s); test_report.py draws one fast
def test_constant_parameter_plot_is_left_out_with_a_reason(data, tmp_path):
    """A study that searched noise_std and held num_mixtures at 5, finished (no trial running)."""
    trials = data.trials[(data.trials.num_mixtures == 5) & (data.trials.state != "running")]
    finished = dataclasses.replace(data, trials=trials, epochs=data.epochs[data.epochs.trial_id.isin(trials.trial_id)],
                                   study_config={**data.study_config, "searched": {"noise_std": SIGMA}})
    md, _ = report.write_report(finished, tmp_path)
    text = md.read_text()
    plots = {p.stem for p in (tmp_path / "plots").glob("*.png")}
    assert "distance_vs_mixtures" not in plots and {"distance_vs_sigma", "bpd_vs_sigma"} <= plots
    assert "The study held `num_mixtures` at 5 for every smoothed trial, so no plot over it" in text
    assert "bin of width 0.05" in text and "| [0.3, 0.35) |" in text
    assert "No completed trial yet" not in text, "a finished study's pruned trials will not complete"
    assert "Not in the table: configurations none of whose trials completed, and the study has ended" in text
    assert "smoothed (σ=[0.7, 0.75), K=5): 1 pruned" in text
    assert "Not computed: The study searched `noise_std`" in text


def test_both_mlflow_layouts_load_the_same(data, tmp_path):
    nested = write_study(tmp_path, nested=True)
    again = load_trials(STUDY, storage_path=str(tmp_path))
    assert again.summary_run_id == nested["run_ids"]["summary"]
    assert again.summary_params["gpus_per_trial"] == "0.25"
    drop = ["run_id", "start_time", "end_time", "last_update"]
    pd.testing.assert_frame_equal(again.trials.drop(columns=drop), data.trials.drop(columns=drop))
