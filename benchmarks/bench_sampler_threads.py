"""The fast sampler at 1, 2 and all torch threads, on a quiet machine and under competing load.

    python benchmarks/bench_sampler_threads.py                  # MNIST configuration, load = 2 x cores
    python benchmarks/bench_sampler_threads.py --quick          # digits configuration, one repeat

For each thread count the sampler is forced to (`fast_sample(threads=k)`), and for its
default (`threads=None`, called with torch set to all cores, as a trial with several CPUs
would): seconds per batch, the least of `--repeats` runs. Then the same under competing
load: `--load` processes spinning in pure Python (other trials, another user's job) for the
duration of the measurement. Ratios within a row are the claim; absolute times depend on
the machine.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_sampling import CONFIGS  # noqa: E402
from trainables.pixelcnnpp import PixelCNNpp  # noqa: E402
from trainables.sampling.fast import fast_sample  # noqa: E402


def cores() -> int:
    return len(os.sched_getaffinity(0))


def seconds(model, cfg, threads, repeats: int) -> float:
    """Least seconds of one batch of cfg.batch images with the sampler on `threads` (None: its default)."""
    g = torch.Generator().manual_seed(1)
    torch.set_num_threads(cores())  # what the process has; the sampler picks its own unless forced
    fast_sample(model, cfg.batch, (cfg.shape[0], 4, 4), discretized=True, generator=g, threads=threads)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fast_sample(model, cfg.batch, cfg.shape, discretized=True, generator=g, threads=threads)
        best = min(best, time.perf_counter() - start)
    return best


class CompetingLoad:
    """`count` processes spinning on the CPU while the block runs."""

    def __init__(self, count: int):
        self.count = count

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.count)]
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.kill()
            proc.wait()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits configuration, one repeat")
    parser.add_argument("--load", type=int, default=2 * cores(), help="competing spinning processes (default 2 x cores)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = CONFIGS["digits" if args.quick else "mnist"]
    repeats = 1 if args.quick else args.repeats
    torch.manual_seed(0)
    model = PixelCNNpp(cfg.shape[0], cfg.nr_filters, cfg.nr_resnet, cfg.num_mixtures).eval()
    counts = sorted({1, 2, cores()})
    columns = [(f"{k} thread{'s' * (k > 1)}", k) for k in counts] + [("default", None)]
    print(f"fast sampler, {cfg}: seconds per batch of {cfg.batch} (least of {repeats}); {cores()} cores")
    print("| machine | " + " | ".join(name for name, _ in columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    results = {}
    for label, load in (("quiet", 0), (f"{args.load} spinning processes", args.load)):
        with CompetingLoad(load):
            row = {name: seconds(model, cfg, k, repeats) for name, k in columns}
        results[label] = row
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in row.values()) + " |", flush=True)
    return results


if __name__ == "__main__":
    main()
