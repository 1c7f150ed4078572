"""The product's main job, end to end: `python -m study.run --smoke-test` on digits, its MLflow
store read back directly and through an `mlflow server`'s REST API."""
from __future__ import annotations

import csv
import html
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.required import skip_unless_required
from tests.study.helpers import REPO, free_port, kill_session, run_cli, steps, study_cmd, study_runs, wait_for

pytestmark = pytest.mark.slow

NAME = "smoke"


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    storage = tmp_path_factory.mktemp("studies")
    result = run_cli(study_cmd(storage, NAME, "--space", "noise_sweep", "--smoke-test"), timeout=420)
    assert result.returncode == 0, result.stdout[-4000:]
    return storage / NAME, result.stdout


@pytest.mark.timeout(480)
def test_smoke_study_logs_one_run_per_trial(smoke_study):
    study_dir, out = smoke_study
    assert f"mlflow ui --backend-store-uri sqlite:///{study_dir}/mlflow.db" in out
    assert f"optuna-dashboard sqlite:///{study_dir}/optuna.db" in out
    assert "best (fd_digits_cnn min):" in out
    assert "A new study created" not in out, "Optuna's INFO line is silenced"
    assert re.search(r"study: 0/3 done \(.*\), 1 running, 2 pending .* time left: after the first epoch", out)
    assert re.search(r"study: 3/3 done \(3 completed, 0 pruned, 0 errored\), 0 running, 0 pending \| "
                     r"best fd_digits_cnn=[0-9.]+ \(#\d [a-z]+ s=", out), out[-3000:]
    client, exp, trials, summaries = study_runs(study_dir, NAME)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert len(trials) == 3 and len(summaries) == 1  # 2 searched + the sigma = 0 baseline
    parent = summaries[0]
    assert parent.info.run_name == NAME and parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}, "trials nest under the study"
    assert sorted(int(r.data.tags["trial_number"]) for r in trials) == [1, 2, 3]
    assert len({r.data.tags["ray_trial_id"] for r in trials}) == 3
    kinds = sorted(r.data.tags["kind"] for r in trials)
    assert kinds == ["baseline", "smoothed", "smoothed"]
    for run in trials:
        assert steps(client, run) == [1, 2]
        params, tags = run.data.params, run.data.tags
        assert set(params) >= {"noise_std", "num_mixtures", "kind", "lr", "nr_filters", "max_epochs"}
        assert tags["state"] == "completed" and tags["extractor"] == "digits_cnn" and tags["dataset"] == "digits"
        assert tags["hardware"].startswith("cpu: ")  # the node it trained on, for the timing tables
        # the exact network behind its distances, and the classifier's test accuracy (above digits' floor)
        assert re.fullmatch(r"[0-9a-f]{16}", tags["extractor_sha"]) and float(tags["extractor_accuracy"]) >= 0.95
        assert run.info.run_name.startswith(f"#{tags['trial_number']} {tags['kind']} s=")
        assert "fd_digits_cnn" in run.data.metrics and "bpd_bound" in run.data.metrics
        assert run.data.metrics["fd_digits_cnn_se"] > 0 and "is_digits_cnn_se" in run.data.metrics
        samples = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
        assert samples and all(p.endswith(".png") for p in samples)
        png = client.download_artifacts(run.info.run_id, samples[0], str(study_dir / "downloaded"))
        width, height = struct.unpack(">II", open(png, "rb").read()[16:24])  # PNG IHDR
        assert width >= 256 and height >= 256, "grids are logged at a size a person can see"
        assert "checkpoint/checkpoint.pt" in [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]
    assert len({r.data.tags["extractor_sha"] for r in trials}) == 1, "one extractor behind every trial's distances"
    baseline = next(r for r in trials if r.data.tags["kind"] == "baseline")
    assert baseline.data.params["noise_std"] == "0.0" and baseline.data.tags["trial_origin"] == "fixed"
    assert "optuna_state" not in baseline.data.tags, "the fixed baseline is never told to Optuna"
    smoothed = [r for r in trials if r.data.tags["kind"] == "smoothed"]
    assert all("fd_digits_cnn_onestep" in r.data.metrics and "fd_digits_cnn_twostep" in r.data.metrics
               for r in smoothed)
    diagnostics = {f"fd_digits_cnn_{d}{se}" for d in ("realnoisy", "onestep_realnoisy", "twostep_realnoisy", "xtilde")
                   for se in ("", "_se")} | {"diagnostic_seconds"}
    assert all(diagnostics <= set(r.data.metrics) for r in smoothed) and not diagnostics & set(baseline.data.metrics)
    history = json.loads((study_dir / "optuna_trials.json").read_text())
    assert [t["state"] for t in history] == ["COMPLETE", "COMPLETE"]
    assert all(0.1 <= t["params"]["noise_std"] <= 0.8 for t in history)
    rows = list(csv.DictReader((study_dir / "results.csv").open()))
    assert len(rows) == 3 and {r["state"] for r in rows} == {"completed"}
    assert sorted(r["run"] for r in rows) == sorted(r.info.run_name for r in trials)
    import optuna

    stored = optuna.load_study(study_name=NAME, storage=f"sqlite:///{study_dir}/optuna.db")
    assert [(t.number, t.state.name) for t in stored.trials] == [(0, "COMPLETE"), (1, "COMPLETE")]
    assert [t.params for t in stored.trials] == [t["params"] for t in history], "Optuna's own tools see the search"


@pytest.fixture(scope="module")
def mlflow_server(smoke_study):
    """A real `mlflow server` on a free port of 127.0.0.1 over the smoke study's store; yields its base URL."""
    study_dir, _ = smoke_study
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{study_dir}/mlflow.db",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{base}/health") == "OK", timeout=120, what="mlflow server")
        yield base
    finally:
        kill_session(server.pid)


@pytest.mark.timeout(480)
def test_mlflow_server_filters_runs_by_noise_std(smoke_study, mlflow_server):
    base = mlflow_server
    exp = json.loads(_get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={NAME}"))
    exp_id = exp["experiment"]["experiment_id"]
    baseline = _search(base, exp_id, "params.noise_std = '0.0'")
    assert [re.sub(r"^#\d ", "", r["info"]["run_name"]) for r in baseline] == ["baseline s=0 K=3"]
    smoothed = _search(base, exp_id, "params.noise_std != '0.0' and tags.run_role = 'trial'")
    assert len(smoothed) == 2 and all(re.match(r"#\d smoothed s=", r["info"]["run_name"]) for r in smoothed)
    run_id = smoothed[0]["info"]["run_id"]
    listed = json.loads(_get(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=samples"))
    assert any(f["path"].endswith("twostep_epoch0002.png") for f in listed["files"])


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,900")


def render(url: str, budget_ms: int) -> str:
    """The page's text after its scripts ran, by headless Chromium (a fresh profile each time)."""
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                              f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=240).stdout
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


@pytest.mark.timeout(600)
def test_the_printed_link_shows_the_trials_in_the_training_view(smoke_study, mlflow_server):
    """The link the study prints, opened in a real browser against a real server: MLflow's model-training
    view (not the GenAI overview) lists every trial run with its noise_std."""
    if CHROMIUM is None:
        skip_unless_required("chromium", "needs Debian's chromium (apt-get install -y chromium; .ci/run does)")
    study_dir, out = smoke_study
    path = re.search(r"then open http://127\.0\.0\.1:5000(/#/experiments/\S+?)\)", out).group(1)
    _, _, trials, _ = study_runs(study_dir, NAME)
    wanted = [r.info.run_name for r in trials] + [r.data.params["noise_std"] for r in trials]
    for budget in (30_000, 90_000):  # virtual time: the UI's requests to the server are real, on a loaded machine
        text = render(mlflow_server + path, budget)
        if all(w in text for w in wanted):
            break
    assert "Model training" in text and "Runs" in text, text[:2000]
    assert "No data available" not in text and "Sort: fd_digits_cnn" in text, text[:2000]
    assert "noise_std" in text and "4 matching runs" in text, "the 3 trials and the study run"
    missing = [w for w in wanted if w not in text]
    assert not missing, f"not on the page: {missing}\n{text[:3000]}"


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()
    except OSError:
        return ""


def _search(base: str, exp_id: str, query: str) -> list[dict]:
    body = json.dumps({"experiment_ids": [exp_id], "filter": query, "max_results": 100}).encode()
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read()).get("runs", [])
