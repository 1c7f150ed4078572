"""A simulated multi-node cluster: the worker node running a trial is removed mid-trial and the
trial finishes on another node from its latest checkpoint."""
from __future__ import annotations

import json
import threading

import pytest

from tests.study.helpers import steps, study_runs, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_trial_survives_losing_its_node(tmp_path):
    from ray.cluster_utils import Cluster

    from study.cli import parse
    from study.orchestrate import prepare, run_study

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # trials only on workers
    first = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    flags = parse(["--space", "mixture_sweep", "--smoke-test", "--num-samples", "1", "--max-epochs", "4",
                   "--set", "eval_every=1", "--storage-path", str(tmp_path), "--name", "cluster",
                   "--address", cluster.address])
    cfg, resuming, stored_flags = prepare(flags)
    outcome = {}

    def study():  # the driver runs in a thread: Cluster.add_node must run in the main thread
        try:
            outcome["summary"] = run_study(cfg, resuming, stored_flags)
        except BaseException as err:  # surfaced by the asserts below
            outcome["error"] = err

    driver = threading.Thread(target=study, daemon=True)
    driver.start()
    events = {}
    try:
        # The trial is placed on the only worker; a second one joins while it trains, and the
        # first leaves as soon as the trial has a checkpoint.
        wait_for(lambda: next(tmp_path.glob("cluster/trial_*"), None), timeout=300, interval=0.5,
                 what="the trial to start")
        cluster.add_node(num_cpus=1)
        checkpoint = wait_for(lambda: next(tmp_path.glob("cluster/trial_*/checkpoint_000000"), None),
                              timeout=300, interval=0.2, what="the first checkpoint")
        events["trial_dir"] = checkpoint.parent
        # The directory appears before the driver registers the checkpoint; its sample grids
        # reach MLflow only from Tune's on_checkpoint, i.e. once a restart would find it.
        wait_for(lambda: next((tmp_path / "cluster").rglob("samples/*.png"), None),
                 timeout=300, interval=0.2, what="the driver to register the first checkpoint")
        cluster.remove_node(first)
        events["removed"] = True
        driver.join(timeout=400)
    finally:
        cluster.shutdown()
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    assert events.get("removed"), "the node was not removed during the study"
    assert [r["state"] for r in summary["rows"]] == ["completed"]

    # Tune's record of the trial: a start from a checkpoint (its first epoch is past 1). Tune may
    # rewrite result.json on the new node, so the first attempt's rows are not always kept.
    results = [json.loads(line) for line in (events["trial_dir"] / "result.json").read_text().splitlines()]
    restored = [r["epoch"] for r in results if r["iterations_since_restore"] == 1 and r["epoch"] > 1]
    assert restored, f"no start from a checkpoint: {[(r['epoch'], r['iterations_since_restore']) for r in results]}"

    client, _, trials, _ = study_runs(tmp_path / "cluster", "cluster")
    assert len(trials) == 1
    assert int(trials[0].data.tags["num_failures"]) >= 1, "the node loss was not seen as a trial failure"
    assert steps(client, trials[0]) == [1, 2, 3, 4]
