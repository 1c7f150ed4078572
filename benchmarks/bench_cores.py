"""Using the cores: N trials side by side at one torch thread each against one trial at N threads.

    python benchmarks/bench_cores.py                         # mnist_cpu pair, all CPUs, 3 rounds of 60 s
    python benchmarks/bench_cores.py --config digits --seconds 20 --rounds 2

A study runs as many trials at once as --cpus-per-trial allows (study/estimate.py: concurrency),
each with that many torch threads. What the study waits for is trials finished per hour, which is
proportional to training images per second summed over the trials running at once. Each phase
starts its processes (the real loop: trainables.training.train_epoch on the study's smoothed model +
denoiser pair, units built as bench_training.py builds them, fused kernels as in a study), lets
each warm up (its first step compiles the fused kernels; not timed), then starts all of them at
once and counts the images each trains in `--seconds` of wall time. Phases alternate and their
order rotates per round, so other load falls on both; the claim is the per-round ratio of summed
images/s, side by side over one process, median and range. Sampling and bits/dim (the rest of a
trial) are not timed here.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(config: str, threads: int, seconds: float) -> None:
    """One process: warm up, say "ready", wait for "go" on stdin, train for `seconds`, print the count."""
    import torch

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_training import CONFIGS, build_units, images_for, step_all
    from types import SimpleNamespace

    from trainables import losses, pixelcnnpp, training
    from trainables.config import TrialConfig
    from trainables.data import add_noise

    torch.set_num_threads(threads)
    flat, shape, names = CONFIGS[config]
    cfg = TrialConfig.from_flat(flat)
    units = build_units(SimpleNamespace(pixelcnnpp=pixelcnnpp, losses=losses, training=training), cfg, shape, names)
    images, _ = images_for(cfg, shape, cfg.train.batch_size * 4)
    gen = torch.Generator().manual_seed(os.getpid())
    batches = [(x, add_noise(x, cfg.data.noise_std, gen)) for x in images.split(cfg.train.batch_size)]
    step_all(training.train_epoch, units, batches[:1])  # warm-up: allocators, oneDNN primitives, compiling
    print("ready", flush=True)
    sys.stdin.readline()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in batches:
            count += step_all(training.train_epoch, units, [batch])
    print(json.dumps({"images": count, "seconds": time.perf_counter() - start}), flush=True)


def phase(config: str, processes: int, threads: int, seconds: float) -> float:
    """Summed training images/s of `processes` processes of `threads` threads each, timed together."""
    argv = [sys.executable, __file__, "--worker", "--config", config, "--threads", str(threads),
            "--seconds", str(seconds)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(processes)]
    try:
        for p in procs:
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"a benchmark worker did not start (it printed {line!r})")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [json.loads(p.stdout.readline()) for p in procs]
    finally:
        for p in procs:
            p.wait(timeout=600)
    return sum(r["images"] / r["seconds"] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mnist_cpu", help="digits, mnist_cpu or authors (bench_training.py)")
    parser.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)), help="cores to share")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0, help="timed wall seconds per phase")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.worker:
        worker(args.config, args.threads, args.seconds)
        return
    if args.cpus < 2 or args.rounds < 1 or args.seconds <= 0:
        print("bench_cores: needs --cpus >= 2, --rounds >= 1 and --seconds > 0", file=sys.stderr)
        sys.exit(2)
    phases = {f"{args.cpus} x 1 thread": (args.cpus, 1), f"1 x {args.cpus} threads": (1, args.cpus)}
    rates = {name: [] for name in phases}
    order = list(phases)
    for r in range(args.rounds):
        for name in order[r % 2:] + order[:r % 2]:
            rates[name].append(phase(args.config, *phases[name], args.seconds))
            print(f"round {r + 1}: {name}: {rates[name][-1]:.1f} images/s", flush=True)
    side, single = (rates[n] for n in order)
    ratios = [a / b for a, b in zip(side, single)]
    result = {"config": args.config, "cpus": args.cpus, "seconds": args.seconds, "rounds": args.rounds,
              "images_per_s": {n: statistics.median(v) for n, v in rates.items()},
              "side_by_side_over_one": statistics.median(ratios), "range": [min(ratios), max(ratios)],
              "load_average": os.getloadavg()}
    print(f"{args.config}: {order[0]} {result['images_per_s'][order[0]]:.1f} images/s, {order[1]} "
          f"{result['images_per_s'][order[1]]:.1f} images/s: side by side {result['side_by_side_over_one']:.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}) over {args.rounds} rounds; load average {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
