"""Skips that must not hide a gap: where the machine is meant to provide what a test needs
(CI installs Debian's Fashion-MNIST, a C++ compiler and what tools/cluster_lab.py needs, and runs
as root, which may mount a tmpfs; a GPU machine has CUDA), the test fails instead of skipping. `SMOOTHING_TESTS_REQUIRE` names those needs, comma-separated
(.ci/run sets it); elsewhere such a test skips, and pytest lists every skip with its reason
(`-rs` in pyproject.toml)."""
from __future__ import annotations

import os

import pytest

REQUIRE_VAR = "SMOOTHING_TESTS_REQUIRE"
NEEDS = {"real-28x28", "fashion-mnist", "tmpfs", "chromium", "linux-proc", "shared-mnist", "cuda", "native-blocks",
         "cluster-lab"}


def required(need: str) -> bool:
    if need not in NEEDS:
        raise ValueError(f"unknown test need {need!r}; known: {sorted(NEEDS)}")
    return need in {n.strip() for n in os.environ.get(REQUIRE_VAR, "").split(",")}


def skip_unless_required(need: str, reason: str) -> None:
    """Skip with `reason`, or fail with it where `need` is required on this machine."""
    if required(need):
        pytest.fail(f"{reason} (required here: {REQUIRE_VAR} names {need!r})", pytrace=False)
    # reported at the test that skips (as a skipif mark is), not at this line
    raise pytest.skip.Exception(reason, _use_item_location=True)
