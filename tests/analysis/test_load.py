"""load_trials against the written study: one row per trial / per trial and epoch, states kept."""
import pandas as pd
import pytest

from analysis.load import AnalysisError, load_trials, resolve_mlflow_uri
from tests.analysis.conftest import EXTRACTOR, STUDY, TRIALS


def test_one_row_per_trial_with_its_state(data):
    trials = data.trials.set_index("trial_id")
    assert len(trials) == len(TRIALS)
    for t in TRIALS:
        row = trials.loc[t.trial_id]
        assert (row["state"], row["status"], row["epochs"]) == (t.state, t.status, t.epochs), t.trial_id
        assert row["pruned"] == (t.state == "pruned")
    assert trials.loc["s05b", "error"].startswith("DivergenceError") and trials.loc["s05b", "num_failures"] == 2
    assert trials.loc["base0", "trial_origin"] == "fixed" and trials.loc["s03a", "trial_origin"] == "optuna"


def test_params_come_back_typed(data):
    t = data.trials
    assert t["noise_std"].dtype == float and t["num_mixtures"].dtype == "int64" and t["lr"].dtype == float
    assert t["data_dir"].isna().all() and set(t["kind"]) == {"baseline", "smoothed"}
    assert t["compile"].dtype == bool and not t["compile"].any()
    assert "noise_std" in t.attrs["params"] and "fd_digits_cnn" not in t.attrs["params"]


def test_final_metrics_are_the_last_logged_values(data):
    trials = data.trials.set_index("trial_id")
    assert trials.loc["s03a", f"fd_{EXTRACTOR}_twostep"] == 10.0
    assert trials.loc["s07", f"fd_{EXTRACTOR}_twostep"] == 30.0, "a pruned trial keeps its last evaluation"
    assert trials.loc["base1", "test_bpd"] == 1.2
    assert pd.isna(trials.loc["s06run", f"fd_{EXTRACTOR}"]), "not evaluated yet"
    assert pd.isna(trials.loc["base0", f"fd_{EXTRACTOR}_twostep"]), "the baseline has direct samples only"


def test_one_row_per_trial_and_epoch(data):
    epochs = data.epochs
    assert len(epochs) == sum(t.epochs for t in TRIALS)
    curve = epochs[epochs.trial_id == "s03a"].sort_values("epoch")
    assert curve["epoch"].tolist() == [1, 2, 3, 4]
    assert curve["bpd_bound"].tolist() == [4.3, 3.3, 2.3, 1.3]
    assert curve[f"fd_{EXTRACTOR}_twostep"].isna().tolist() == [True, False, True, False]
    assert {"kind", "state", "noise_std", "num_mixtures", "seed"} <= set(epochs.columns)


def test_a_running_trial_is_cut_at_its_last_complete_epoch(data):
    running = data.epochs[data.epochs.trial_id == "s06run"]
    assert running["epoch"].tolist() == [1], "step 2 of a half-written epoch is not an epoch yet"
    assert data.trials.set_index("trial_id").loc["s06run", "test_bpd_smoothed"] == 5.0


def test_study_metadata(data, study):
    assert data.summary_run_id == study["run_ids"]["summary"]
    assert data.extractor == EXTRACTOR and data.experiment_tags["space"] == "noise_sweep"
    assert data.summary_params["gpus_per_trial"] == "0.25" and data.study_config["max_concurrent"] == 2


def test_the_uri_is_resolved_like_the_study_cli(study, tmp_path):
    assert resolve_mlflow_uri(STUDY, str(study["storage"])) == study["uri"]
    assert resolve_mlflow_uri(STUDY, str(study["storage"]), "http://host:5000") == "http://host:5000"
    assert resolve_mlflow_uri("other", str(tmp_path)) == f"sqlite:///{tmp_path}/other/mlflow.db"
    moved = tmp_path / "moved"  # a study directory copied elsewhere finds its own mlflow.db
    (moved / STUDY).mkdir(parents=True)
    (moved / STUDY / "study.json").write_text((study["directory"] / "study.json").read_text())
    assert resolve_mlflow_uri(STUDY, str(moved)) == f"sqlite:///{moved}/{STUDY}/mlflow.db"


def test_clear_errors(study, tmp_path):
    with pytest.raises(AnalysisError, match="no MLflow store at"):
        load_trials(STUDY, storage_path=str(tmp_path))
    assert not (tmp_path / STUDY).exists(), "no empty store is created"
    with pytest.raises(AnalysisError, match=f"no study 'nope' in MLflow at .*studies there: .*{STUDY}"):
        load_trials("nope", mlflow_uri=study["uri"])
    with pytest.raises(AnalysisError, match="unreachable"):
        load_trials(STUDY, mlflow_uri="http://127.0.0.1:9")
