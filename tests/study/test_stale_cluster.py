"""No --address starts a fresh local Ray: a stale ray_current_cluster file (another Ray session
that is gone) is neither joined nor waited for. Isolated by RAY_TMPDIR, so the machine's real
/tmp/ray/ray_current_cluster (other users' Ray sessions) is never read or touched."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from tests.study.helpers import REPO, free_port


@pytest.fixture
def stale_tmpdir(monkeypatch):
    """A RAY_TMPDIR whose ray_current_cluster names a port where nothing listens (short path:
    Ray's socket names must fit in 107 bytes)."""
    root = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    os.makedirs(os.path.join(root, "ray"))
    stale = f"127.0.0.1:{free_port()}"
    with open(os.path.join(root, "ray", "ray_current_cluster"), "w") as f:
        f.write(stale)
    monkeypatch.setenv("RAY_TMPDIR", root)
    yield root, stale
    subprocess.run(["rm", "-rf", root], check=False)


def test_the_stale_file_is_what_ray_would_join(stale_tmpdir, monkeypatch):
    """The test's premise: in this environment address=None means the stale cluster, "local" means none."""
    from ray._private.services import canonicalize_bootstrap_address

    _, stale = stale_tmpdir
    monkeypatch.setattr("ray._private.services.find_gcs_addresses", lambda: set())  # ignore live local clusters
    joined = canonicalize_bootstrap_address(None)  # 127.0.0.1 comes back as this node's IP
    assert joined is not None and joined.rsplit(":", 1)[1] == stale.rsplit(":", 1)[1]
    monkeypatch.setenv("RAY_ADDRESS", stale)
    assert canonicalize_bootstrap_address("local") is None


def test_connect_passes_local_unless_an_address_is_given(monkeypatch):
    import ray

    from trainables.tune import tuner

    asked = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda address=None, **kw: asked.append(address))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    for address in (None, "auto", "10.0.0.1:6379"):
        tuner.connect(address)
    assert asked == ["local", "auto", "10.0.0.1:6379"]


CONNECT = """
import ray
from trainables.tune.tuner import connect, shutdown
resources = connect(None)
from trainables.tune.tuner import local_session_dir
print("gcs", ray.get_runtime_context().gcs_address, "session", local_session_dir())
from study.recovery.leftovers import local_ray_processes
mine = local_ray_processes(local_session_dir())  # what study/recovery/leftovers.py records to stop after a SIGKILL
print("local", mine["session_dir"], mine["raylet_pid"] in mine["pids"], len(mine["pids"]) >= 2, ray.__version__)
shutdown()
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fresh_local_ray_despite_a_stale_cluster_file(stale_tmpdir):
    root, stale = stale_tmpdir
    done = subprocess.run([sys.executable, "-c", CONNECT], cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "RAY_TMPDIR": root}, start_new_session=True)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("gcs "))
    _, gcs, _, session = line.split()
    local = next(ln for ln in done.stdout.splitlines() if ln.startswith("local "))
    assert local.startswith(f"local {session} True True"), local  # the raylet found among the session's processes
    assert gcs.rsplit(":", 1)[1] != stale.rsplit(":", 1)[1] and session.startswith(os.path.join(root, "ray")), line
