"""benchmarks/bench_authors_step.py runs against a package shaped like the authors' (their code is not here)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_authors_step.py"

# Their interface: PixelCNN(config) -> (N, 3K, H, W) parameters, mix_logistic_loss_1d(x, l) -> summed NLL,
# with the .cuda() call their loss makes.
FAKE = '''
import torch


class PixelCNN(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.conv = torch.nn.Conv2d(config.input_channels, 3 * config.nr_logistic_mix, 1)

    def forward(self, x):
        return self.conv(x)


def mix_logistic_loss_1d(x, l):
    zeros = torch.zeros(x.shape).cuda()
    return ((l.mean(dim=1, keepdim=True) - x + zeros) ** 2).sum()
'''


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_a_missing_authors_package_is_one_line_and_exit_2(tmp_path):
    result = _run("--authors-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "pixelcnnpp.py not found" in result.stderr


@pytest.mark.slow  # our unit at the authors' network, a few seconds of steps
def test_it_times_both_steps_and_writes_the_ratios(tmp_path):
    package = tmp_path / "authors" / "pixelcnnpp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pixelcnnpp.py").write_text(FAKE)
    out = tmp_path / "out.json"
    result = _run("--authors-dir", str(tmp_path / "authors"), "--threads", "1", "--rounds", "2", "--steps", "1",
                  "--batch", "2", "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["threads=1"]
    assert set(rows) == {"authors", "none", "fused"}
    assert rows["authors"]["ratio"] == 1.0 and all(r["images_per_s"] > 0 for r in rows.values())
    assert "| fused |" in result.stdout
