"""The MLflow tracker against a real SQLite store, driven as Tune's callback would drive it (no Ray)."""
import json

import pytest

from study.cli import parse, resolve
from study.storage import StudyDir
from study.summary import best_rows, table_rows, to_csv
from study.tracking import MlflowTracker, run_name, steps_to_log


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    storage = tmp_path_factory.mktemp("studies")
    cfg = resolve(parse(["--space", "noise_sweep", "--storage-path", str(storage), "--name", "unit"]))
    return cfg, StudyDir(cfg.storage_path, cfg.name)


def test_run_names_say_what_a_trial_is():
    assert run_name({"kind": "smoothed", "noise_std": 0.3, "num_mixtures": 5}, ["noise_std"], 0) == "smoothed s=0.30 K=5"
    assert run_name({"kind": "baseline", "noise_std": 0.0, "num_mixtures": 5}, ["noise_std"], 0) == "baseline s=0 K=5"
    joint = {"kind": "smoothed", "noise_std": 0.5, "num_mixtures": 12, "lr": 0.00031, "seed": 3}
    assert run_name(joint, ["noise_std", "num_mixtures", "lr"], 0) == "smoothed s=0.50 K=12 lr=3.10e-04 seed=3"
    # TPE's 0.4814 and 0.4842 read the same at two digits: the trial's number tells them apart
    near = [run_name({"kind": "smoothed", "noise_std": s, "num_mixtures": 5}, ["noise_std"], 0, n)
            for n, s in ((4, 0.4814), (6, 0.4842))]
    assert near == ["#4 smoothed s=0.48 K=5", "#6 smoothed s=0.48 K=5"]


def test_steps_to_log():
    assert steps_to_log(None, 1)
    assert steps_to_log(2, 3)
    assert not steps_to_log(3, 3) and not steps_to_log(3, 2)


def test_one_run_per_trial_across_resumes(study):
    cfg, study_dir = study
    config = {**cfg.trial, "noise_std": 0.3}
    first = MlflowTracker(cfg, study_dir)
    first.setup()
    first.trial_started("t1", config, fixed=False)
    for epoch in (1, 2, 3):
        first.trial_result("t1", {"epoch": epoch, "test_bpd_smoothed": 5.0 - epoch})
    # The driver dies; the resumed study's driver builds a new tracker (attached to Tune's
    # restored callback: trainables/tune/tuner.py attach_listener) that knows no run yet,
    # and the trial repeats epochs 2-3 from its epoch-1 checkpoint.
    second = MlflowTracker(cfg, study_dir)
    assert second._client is None and second._runs == {}
    second.setup()
    second.trial_started("t1", config, fixed=False)
    for epoch in (2, 3, 4):
        second.trial_result("t1", {"epoch": epoch, "test_bpd_smoothed": 9.0})
        second.trial_hardware("t1", "cpu: test CPU (1 torch threads)")
    second.trial_ended("t1", "completed", None, {"number": 0, "state": "COMPLETE"}, {"epoch": 4})

    client = second.client
    runs = client.search_runs([second.experiment_id], "tags.ray_trial_id = 't1'")
    assert len(runs) == 1
    run = runs[0]
    history = client.get_metric_history(run.info.run_id, "test_bpd_smoothed")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.value for m in history] == [4.0, 3.0, 2.0, 9.0], "repeated epochs keep their first values"
    assert run.data.params["noise_std"] == "0.3" and run.data.params["kind"] == "smoothed"
    assert run.info.run_name == "#1 smoothed s=0.30 K=5" and run.data.tags["trial_number"] == "1"
    assert second.name("t1") == "#1 smoothed s=0.30 K=5"
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["run_role"] == "summary" and parent.info.run_name == cfg.name
    assert parent.info.run_id == first.parent_run_id == second.parent_run_id, "one study run across resumes"
    assert parent.data.params["space"] == "noise_sweep"
    assert run.data.tags["state"] == "completed" and run.data.tags["optuna_state"] == "COMPLETE"
    assert run.info.status == "FINISHED"
    assert run.data.tags["hardware"] == "cpu: test CPU (1 torch threads)"
    exp = client.get_experiment(second.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(exp.tags["mlflow.sharedViewState.trials"])
    assert view["orderByKey"] == "metrics.`fd_digits_cnn`" and view["orderByAsc"] is True
    assert "params.`noise_std`" in view["selectedColumns"] and "tags.`state`" in view["selectedColumns"]
    assert exp.artifact_location.startswith("file://") and "mlartifacts" in exp.artifact_location


def test_interrupted_runs_are_marked_and_reopened(study):
    cfg, study_dir = study
    tracker = MlflowTracker(cfg, study_dir)
    tracker.setup()
    tracker.trial_started("t2", {**cfg.trial, "noise_std": 0.5}, fixed=False)
    tracker.mark_interrupted()
    assert tracker.states()["t2"] == "interrupted"
    tracker.trial_started("t2", {**cfg.trial, "noise_std": 0.5}, fixed=False)
    assert tracker.states()["t2"] == "running"
    assert tracker.client.get_run(tracker.run_id("t2")).info.status == "RUNNING"
    assert tracker.name("t2").startswith("#2 smoothed s=0.50"), "numbers go on across trackers of one study"


def _record(trial_id, kind, sigma, fd, bound, epoch=6, error=None):
    return {"trial_id": trial_id, "config": {"kind": kind, "noise_std": sigma, "num_mixtures": 5, "max_epochs": 6},
            "metrics": {"epoch": epoch, "fd_digits_cnn": fd, "bpd_bound": bound}, "error": error}


def test_best_and_pareto_rows(study):
    cfg, _ = study
    records = [_record("a", "baseline", 0.0, 5.0, 1.0), _record("b", "smoothed", 0.3, 2.0, 1.5),
               _record("c", "smoothed", 0.5, 3.0, 1.2), _record("d", "smoothed", 0.7, 1.0, 2.0, epoch=2),
               _record("e", "smoothed", 0.6, 0.5, 0.5, error="DivergenceError: nan at epoch 3 step 7")]
    rows = table_rows(cfg, records, {"d": "pruned"})
    assert [r["state"] for r in rows] == ["completed", "completed", "completed", "errored", "pruned"]
    assert [r["trial_id"] for r in best_rows(cfg, rows)] == ["b"], "pruned and errored trials never win"
    multi = type(cfg)(**{**cfg.__dict__, "objective": ("fd_digits_cnn", "bpd_bound"), "mode": ("min", "min")})
    assert sorted(r["trial_id"] for r in best_rows(multi, rows)) == ["a", "b", "c"]
    text = to_csv(rows)
    assert text.splitlines()[0].startswith("trial_id,run,kind,noise_std,num_mixtures,state")
    assert len(text.splitlines()) == 6


def test_an_older_study_resumes_into_the_parent_child_layout(tmp_path):
    """A store made the old way (summary run beside the trial runs, no parent tag, names without numbers)
    resumes: its summary run becomes the parent, its trial runs children,
    the resumed trial keeps its run, and a new trial gets the next number."""
    from mlflow.tracking import MlflowClient

    cfg = resolve(parse(["--space", "noise_sweep", "--storage-path", str(tmp_path), "--name", "old"]))
    study_dir = StudyDir(cfg.storage_path, cfg.name)
    client = MlflowClient(cfg.mlflow_uri)
    exp = client.create_experiment(cfg.name)
    old = client.create_run(exp, run_name="smoothed s=0.30 K=5",
                            tags={"run_role": "trial", "ray_trial_id": "t1", "state": "interrupted"})
    client.set_terminated(old.info.run_id, status="KILLED")
    summary = client.create_run(exp, run_name="summary", tags={"run_role": "summary"})
    client.set_terminated(summary.info.run_id)

    tracker = MlflowTracker(cfg, study_dir)   # the resuming driver's own (trackers are never pickled)
    tracker.setup()
    tracker.trial_started("t1", {**cfg.trial, "noise_std": 0.3}, fixed=False)
    tracker.trial_started("t2", {**cfg.trial, "noise_std": 0.6}, fixed=False)

    runs = {r.data.tags["ray_trial_id"]: r for r in client.search_runs([exp], "tags.run_role = 'trial'")}
    assert set(runs) == {"t1", "t2"}, "the resumed trial keeps its run"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs.values()} == {summary.info.run_id}
    assert runs["t1"].info.run_name == "smoothed s=0.30 K=5" and runs["t1"].info.status == "RUNNING"
    assert runs["t2"].info.run_name == "#2 smoothed s=0.60 K=5"
    assert len(client.search_runs([exp], "tags.run_role = 'summary'")) == 1


def test_ui_hint_opens_the_training_views_runs_table(study):
    from study.summary import runs_page, ui_hint

    cfg, _ = study
    page = "#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=trials"
    assert runs_page("http://h:5000/", "7") == "http://h:5000/" + page
    hint = ui_hint(cfg, "7", "sqlite:////s/unit/optuna.db").splitlines()
    assert hint[0].startswith(f"MLflow UI: mlflow ui --backend-store-uri {cfg.mlflow_uri} --port 5000")
    assert hint[0].endswith(f"(then open http://127.0.0.1:5000/{page})")
    assert hint[1].startswith("Optuna:    optuna-dashboard sqlite:////s/unit/optuna.db")
    assert len(ui_hint(cfg, "7")) and "\n" not in ui_hint(cfg, "7")
