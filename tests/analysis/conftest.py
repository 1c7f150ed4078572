"""A small study written through the MLflow client into a temporary sqlite store, exactly as
study/tracking.py and study/summary.py write one (tags, params, metrics with step = epoch,
samples/ PNG artifacts, the summary run, study.json), with trials in every state.

Final values are chosen so that aggregates can be computed by hand in the tests.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

STUDY = "unit-noise"
EXTRACTOR = "digits_cnn"
MAX_EPOCHS, EVAL_EVERY, NUM_EVAL_SAMPLES = 4, 2, 100
SHARED_PARAMS = {"dataset": "digits", "data_dir": None, "nr_filters": 16, "nr_resnet": 1, "dropout": 0.0,
                 "batch_size": 64, "lr": 0.002, "lr_decay": 0.999995, "ema_decay": 0.0, "grad_clip": 0.0,
                 "max_epochs": MAX_EPOCHS, "eval_every": EVAL_EVERY, "num_eval_samples": NUM_EVAL_SAMPLES,
                 "bound_noise_draws": 1, "gradient_mode": "full", "extractor": EXTRACTOR, "max_eval_images": 0,
                 "mixed_precision": "auto", "compile": False, "train_subset": 500, "image_size": 0}


@dataclass
class Trial:
    trial_id: str
    kind: str
    noise_std: float
    num_mixtures: int
    seed: int
    state: str          # the study's state tag
    status: str         # MLflow run status
    epochs: int         # epochs logged
    fd: tuple = (0.0, 0.0)   # final distance: (one-step, two-step) for smoothed, (direct, _) for baseline
    is_: tuple = (0.0, 0.0)  # final score, same layout
    bpd: float = 0.0         # final test_bpd (baseline) / bpd_bound (smoothed)
    epoch_seconds: float = 72.0   # 2 h per 100 epochs
    sample_seconds: float = 180.0  # 100 images: 1 h per 2000 images


TRIALS = [
    Trial("base0", "baseline", 0.0, 5, 0, "completed", "FINISHED", 4, (20.0, 0), (2.0, 0), 1.00, epoch_seconds=36.0),
    Trial("base1", "baseline", 0.0, 5, 1, "completed", "FINISHED", 4, (30.0, 0), (3.0, 0), 1.20),
    Trial("s03a", "smoothed", 0.3, 5, 0, "completed", "FINISHED", 4, (40.0, 10.0), (1.5, 2.5), 1.30),
    Trial("s03b", "smoothed", 0.3, 5, 1, "completed", "FINISHED", 4, (44.0, 14.0), (1.7, 2.9), 1.50),
    Trial("s03c", "smoothed", 0.3, 5, 2, "interrupted", "KILLED", 2, (90.0, 90.0), (1.0, 1.0), 9.00),
    Trial("s05a", "smoothed", 0.5, 5, 0, "completed", "FINISHED", 4, (50.0, 16.0), (1.4, 2.6), 1.40),
    Trial("s05b", "smoothed", 0.5, 5, 1, "errored", "FAILED", 3, (80.0, 80.0), (1.1, 1.1), 8.00),
    Trial("s03k10", "smoothed", 0.3, 10, 0, "completed", "FINISHED", 4, (36.0, 8.0), (1.6, 2.7), 1.25),
    Trial("s07", "smoothed", 0.7, 5, 0, "pruned", "FINISHED", 2, (70.0, 30.0), (1.2, 2.0), 2.00),
    Trial("s06run", "smoothed", 0.6, 5, 0, "running", "RUNNING", 1),
]


def epoch_metrics(t: Trial, epoch: int) -> dict[str, float]:
    """The metrics of one epoch, as trainables.experiment.run_epoch names them; the last logged
    epoch holds the trial's final values, earlier epochs are worse by 1 per epoch."""
    worse = float(t.epochs - epoch)
    m = {"epoch": epoch, "images_per_s": 100.0, "epoch_seconds": t.epoch_seconds, "bpd_seconds": 20.0}
    if t.kind == "baseline":
        m.update(train_bpd=t.bpd + 0.1 + worse, test_bpd=t.bpd + worse, bpd_bound=t.bpd + worse)
    else:
        m.update(train_bpd_smoothed=5.1 + worse, test_bpd_smoothed=5.0 + worse, train_bpd_denoiser=0.6 + worse,
                 test_bpd_denoiser=0.5 + worse, bpd_bound=t.bpd + worse)
    if epoch % EVAL_EVERY == 0 or epoch == MAX_EPOCHS:
        samplers = ("direct",) if t.kind == "baseline" else ("onestep", "twostep")
        for i, sampler in enumerate(samplers):
            m[f"fd_{EXTRACTOR}_{sampler}"] = t.fd[i] + 10 * worse
            m[f"is_{EXTRACTOR}_{sampler}"] = t.is_[i] - 0.1 * worse
            m[f"fd_{EXTRACTOR}_{sampler}_se"] = t.fd[i] / 10 + worse  # standard errors: a tenth of the distance
            m[f"is_{EXTRACTOR}_{sampler}_se"] = 0.05
        product = samplers[-1]
        for name in (f"fd_{EXTRACTOR}", f"is_{EXTRACTOR}", f"fd_{EXTRACTOR}_se", f"is_{EXTRACTOR}_se"):
            m[name] = m[name.replace(EXTRACTOR, f"{EXTRACTOR}_{product}")]
        m["sample_seconds"] = t.sample_seconds
        m["feature_seconds"] = 60.0  # with sample_seconds 180 and bpd_seconds 20: 69% / 8% / 23%
    return m


def _grid_png(path: Path, level: float) -> None:
    import matplotlib.image as mpimg

    rng = np.random.default_rng(int(level * 100))
    mpimg.imsave(path, rng.random((34, 34)) * level, cmap="gray", vmin=0, vmax=1)


def write_study(storage: Path, name: str = STUDY, with_summary: bool = True, nested: bool = False) -> dict:
    """The study directory `storage/name` with study.json and mlflow.db; returns run ids by trial id.

    nested: today's layout (the summary run is the study's parent run, created first, every trial run
    its child); else the layout of older studies (the summary run beside the trial runs, created last)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    directory = storage / name
    directory.mkdir(parents=True)
    uri = f"sqlite:///{directory}/mlflow.db"
    config = {"name": name, "space": "noise_sweep", "storage_path": str(storage), "mlflow_uri": uri,
              "objective": [f"fd_{EXTRACTOR}"], "mode": ["min"], "extractor": EXTRACTOR,
              "cpus_per_trial": 2.0, "gpus_per_trial": 0.25, "max_concurrent": 2}
    (directory / "study.json").write_text(json.dumps({"config": config, "flags": {}}))
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(name, artifact_location=(directory / "mlartifacts").as_uri())
    for key, value in (("mlflow.experimentKind", "custom_model_development"), ("space", "noise_sweep"),
                       ("objective", f"fd_{EXTRACTOR}"), ("dataset", "digits"), ("extractor", EXTRACTOR)):
        client.set_experiment_tag(exp, key, value)
    run_ids = {}
    if nested:
        parent = client.create_run(exp, run_name=name, tags={"run_role": "summary", "study": name,
                                                             "space": "noise_sweep"})
        run_ids["summary"] = parent.info.run_id
    for t in TRIALS:
        params = {**SHARED_PARAMS, "kind": t.kind, "noise_std": t.noise_std, "num_mixtures": t.num_mixtures,
                  "seed": t.seed}
        tags = {"run_role": "trial", "ray_trial_id": t.trial_id, "study": name, "space": "noise_sweep",
                "kind": t.kind, "dataset": "digits", "extractor": EXTRACTOR,
                "trial_origin": "fixed" if t.kind == "baseline" else "optuna", "state": t.state,
                **({"mlflow.parentRunId": run_ids["summary"]} if nested else {})}
        run = client.create_run(exp, run_name=f"{t.kind} s={t.noise_std} K={t.num_mixtures} seed={t.seed}", tags=tags)
        run_id = run_ids[t.trial_id] = run.info.run_id
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
        now = int(time.time() * 1000)
        for epoch in range(1, t.epochs + 1):
            metrics = epoch_metrics(t, epoch)
            client.log_batch(run_id, metrics=[Metric(k, float(v), now + epoch, epoch) for k, v in metrics.items()])
            if "sample_seconds" in metrics:
                for sampler in ("direct",) if t.kind == "baseline" else ("onestep", "twostep"):
                    png = directory / f"samples_{sampler}_epoch{epoch:04d}.png"
                    _grid_png(png, 0.3 + 0.1 * epoch)
                    client.log_artifact(run_id, str(png), artifact_path="samples")
                    png.unlink()
        if t.state == "errored":
            client.set_tag(run_id, "error", "DivergenceError: loss is nan at epoch 3 | step 7")
            client.set_tag(run_id, "num_failures", "2")
        if t.state != "running":
            client.set_terminated(run_id, status=t.status)
    # A running trial's next epoch half-written when the analysis reads it (no `epoch` yet at step 2).
    client.log_batch(run_ids["s06run"], metrics=[Metric("test_bpd_smoothed", 4.0, now + 9, 2)])
    if with_summary:
        summary = (client.get_run(run_ids["summary"]) if nested else
                   client.create_run(exp, run_name="summary", tags={"run_role": "summary", "study": name,
                                                                    "space": "noise_sweep"}))
        params = {"space": "noise_sweep", "objective": f"fd_{EXTRACTOR}", "mode": "min", "extractor": EXTRACTOR,
                  "cpus_per_trial": 2.0, "gpus_per_trial": 0.25}
        client.log_batch(summary.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        client.set_terminated(summary.info.run_id)
        run_ids["summary"] = summary.info.run_id
    return {"directory": directory, "uri": uri, "run_ids": run_ids, "experiment_id": exp}


@pytest.fixture(scope="session")
def study(tmp_path_factory):
    storage = tmp_path_factory.mktemp("studies")
    written = write_study(storage)
    return {"storage": storage, **written}


@pytest.fixture(scope="session")
def data(study):
    from analysis.load import load_trials

    return load_trials(STUDY, storage_path=str(study["storage"]))
