"""benchmarks/gpu_check.py cannot rot: its --smoke mode runs every section on the CPU."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # the whole script in a subprocess, its study step a `python -m study.run --dry-run` in another
@pytest.mark.timeout(400)
def test_gpu_check_smoke_runs_every_section_and_the_modes_agree():
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke"], cwd=REPO, capture_output=True,
                          text=True, timeout=380)
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-3000:]
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and " | " in ln]
    for config in ("digits",):
        for mode in ("fp32", "bf16", "compile"):
            (row,) = [r for r in rows if r.startswith(f"| {config} | {mode} |")]
            assert row.rstrip().endswith("| yes |"), row  # bits/dim within the stated tolerance of fp32
        (sampling,) = [r for r in rows if r.startswith(f"| {config} | 2 |")]
        naive, fast, graphs = (float(v) for v in sampling.split("|")[3:6])
        assert naive > 0 and fast > 0 and graphs > 0
        assert "| yes (max diff 0.0e+00) |" in sampling  # on the CPU the graphs' flag falls back to the same steps
    assert "study: `-m study.run --space paper --smoke-test --gpus-per-trial 0.5" in out and "-> exit 0" in out
    assert "0 failure(s)" in out


def test_gpu_check_refuses_an_unknown_config_in_one_line():
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--configs", "imagenet"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "unknown config 'imagenet'" in done.stderr
