"""`python -m study.sample`: the best trial's checkpoint, from the storage path or from MLflow
alone, drawn into files; bad input is one line, exit 2, nothing written. The study here is
written directly (Experiment checkpoints in Tune's folder layout, trial runs in MLflow) so
that no Ray study has to run; tests/study/test_after_the_search.py runs a real one."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from study.sample import main
from tests.study.test_bad_inputs import snapshot
from tests.trainables.test_experiment import _cfg
from trainables.experiment import Experiment
from trainables.sampling.native_blocks import pixel_steps_in_use

NAME = "fake"
OBJECTIVE = "fd_digits_cnn"
# trial id -> (kind, state, final objective, {checkpoint dir: its objective}, MLflow checkpoint artifact)
TRIALS = {
    "smooth": ("smoothed", "completed", 50.0, {"checkpoint_000000": 50.0, "checkpoint_000001": 80.0}, True),
    "base": ("baseline", "completed", 90.0, {"checkpoint_000000": 90.0}, True),
    "pruned": ("smoothed", "pruned", 10.0, {}, False),  # the lowest value, but not completed; no checkpoint
}


def _write_trial(client, experiment_id, study_dir, trial_id, spec) -> str:
    from mlflow.entities import Metric

    kind, state, final, checkpoints, artifact = spec
    run = client.create_run(experiment_id, run_name=f"{kind} {trial_id}",
                            tags={"run_role": "trial", "ray_trial_id": trial_id, "state": state, "kind": kind})
    client.log_batch(run.info.run_id, metrics=[Metric(OBJECTIVE, final, 0, 2)])
    trial_dir = study_dir / f"trial_{trial_id}"
    trial_dir.mkdir()
    results = []
    for epoch, (name, value) in enumerate(checkpoints.items(), start=1):
        exp = Experiment(_cfg(kind, 0.0 if kind == "baseline" else 0.3, max_epochs=1), log=lambda m: None)
        exp.epoch = epoch  # tells the checkpoints apart
        exp.save(trial_dir / name)
        results.append({"epoch": epoch, OBJECTIVE: value, "checkpoint_dir_name": name})
        if artifact and value == final:  # the study logs the trial's best checkpoint
            client.log_artifacts(run.info.run_id, str(trial_dir / name), artifact_path="checkpoint")
    (trial_dir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in results))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    storage = tmp_path_factory.mktemp("studies")
    study_dir = storage / NAME
    study_dir.mkdir()
    uri = f"sqlite:///{study_dir}/mlflow.db"
    config = {"name": NAME, "mlflow_uri": uri, "objective": [OBJECTIVE], "mode": ["min"], "extractor": "digits_cnn",
              "checkpoint_artifact": "best"}
    (study_dir / "study.json").write_text(json.dumps({"config": config, "flags": {}}))
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(NAME, artifact_location=(study_dir / "mlartifacts").as_uri())
    client.set_experiment_tag(experiment_id, "objective", OBJECTIVE)
    runs = {t: _write_trial(client, experiment_id, study_dir, t, spec) for t, spec in TRIALS.items()}
    return {"storage": storage, "dir": study_dir, "uri": uri, "runs": runs}


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, [ln for ln in captured.err.splitlines() if ln.strip() and "[" not in ln]


def test_best_completed_trial_by_default(study, capsys, tmp_path):
    code, out, _ = run(capsys, "--study", NAME, "--storage-path", str(study["storage"]), "--n", "6",
                       "--batch-size", "4", "--out", str(tmp_path / "s"))
    assert code == 0, out
    doc = json.loads((tmp_path / "s" / "sample.json").read_text())
    assert doc["trial_id"] == "smooth" and doc["sampler"] == "two-step" and doc["batch_size"] == 4
    assert doc["checkpoint"].endswith("trial_smooth/checkpoint_000000"), "best kept checkpoint, not the latest"
    steps = pixel_steps_in_use(torch.device("cpu"), torch.float32)  # native, where a C++ compiler is
    assert doc["pixel_steps"] == steps and f"pixel steps: {steps}" in out
    images = np.load(tmp_path / "s" / "samples.npz")["images"]
    assert images.dtype == np.uint8 and images.shape == (6, 8, 8, 1)
    assert (tmp_path / "s" / "samples.png").stat().st_size > 100


def test_from_mlflow_alone_the_same_images(study, capsys, tmp_path):
    common = ("--study", NAME, "--n", "4", "--seed", "3", "--batch-size", "4")
    assert run(capsys, *common, "--storage-path", str(study["storage"]), "--out", str(tmp_path / "local"))[0] == 0
    code, out, _ = run(capsys, *common, "--storage-path", str(tmp_path / "elsewhere"), "--mlflow-uri", study["uri"],
                       "--out", str(tmp_path / "remote"))
    assert code == 0, out
    doc = json.loads((tmp_path / "remote" / "sample.json").read_text())
    assert doc["checkpoint"] == f"MLflow run {study['runs']['smooth']} artifact checkpoint/"
    local, remote = (np.load(tmp_path / d / "samples.npz")["images"] for d in ("local", "remote"))
    assert np.array_equal(local, remote)


def test_cuda_graphs_on_a_cpu_say_so_and_draw_the_same_images(study, capsys, tmp_path):
    common = ("--study", NAME, "--storage-path", str(study["storage"]), "--n", "4", "--batch-size", "4",
              "--device", "cpu")
    assert run(capsys, *common, "--out", str(tmp_path / "eager"))[0] == 0
    code, out, _ = run(capsys, *common, "--cuda-graphs", "--out", str(tmp_path / "graphs"))
    assert code == 0, out
    assert "--cuda-graphs: cpu is not a CUDA device; the pixel steps run eagerly" in out
    eager, graphs = (np.load(tmp_path / d / "samples.npz")["images"] for d in ("eager", "graphs"))
    assert np.array_equal(eager, graphs)


@pytest.mark.parametrize("which", ["base", "baseline base", "run_id"])
def test_trial_by_id_name_or_run_id(study, capsys, tmp_path, which):
    wanted = study["runs"]["base"] if which == "run_id" else which
    code, out, _ = run(capsys, "--study", NAME, "--storage-path", str(study["storage"]), "--trial", wanted,
                       "--n", "2", "--out", str(tmp_path / "b"))
    assert code == 0, out
    doc = json.loads((tmp_path / "b" / "sample.json").read_text())
    assert doc["trial_id"] == "base" and doc["sampler"] == "direct"


@pytest.mark.parametrize("argv, message", [
    (["--trial", "nope"], "no trial 'nope' in study 'fake' (trials: baseline base, smoothed pruned, smoothed smooth)"),
    (["--trial", "pruned"], "trial 'smoothed pruned' has no checkpoint"),
    (["--n", "0"], "--n must be >= 1, got 0"),
    (["--threads", "-1"], "--batch-size and --threads must be >= 0"),
    (["--out", "{file}/sub"], "is not writable (NotADirectoryError"),
    (["--sampler", "direct"], "a smoothed trial samples with two-step or one-step, not 'direct'"),
    (["--study", "other"], "no study 'other': no MLflow store at"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(study, capsys, tmp_path, argv, message):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    before = snapshot(study["storage"])
    argv = [a.replace("{file}", str(blocker)) for a in argv]
    code, _, err = run(capsys, "--study", NAME, "--storage-path", str(study["storage"]), *argv)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert snapshot(study["storage"]) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_registered_model_samples_in_a_fresh_process(study, capsys, tmp_path):
    code, out, _ = run(capsys, "--study", NAME, "--storage-path", str(study["storage"]), "--n", "2",
                       "--out", str(tmp_path / "r"), "--register", "fake-best")
    assert code == 0 and "registered 'fake-best' version 1" in out, out
    script = (
        "import sys, mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri({study['uri']!r})\n"
        "model = mlflow.pyfunc.load_model('models:/fake-best/1')\n"
        "images = model.predict(pd.DataFrame({'n': [3, 2], 'seed': [0, 1]}), params={'sampler': 'one-step'})\n"
        "import trainables\n"
        "print(images.shape, images.dtype, trainables.__file__, 'ray' in sys.modules, 'study' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[:4] == ["(5,", "8,", "8,", "1)"] and done.stdout.split()[4] == "uint8", done.stdout
    assert "/artifacts/code/trainables/" in done.stdout, "the model's own copy of trainables (code_paths)"
    assert done.stdout.split()[-2:] == ["False", "False"], "neither Ray nor the study code is loaded"
    reloaded = torch.load(next((study["dir"] / "mlartifacts").rglob("weights/smoothed.pt")), weights_only=True)
    assert isinstance(reloaded, dict)
