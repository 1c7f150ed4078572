"""The GPU path, measured: training speed per precision mode, their bits/dim agreement, sampling
speed, peak memory, and a 2-trial study on half a GPU each.

    python benchmarks/gpu_check.py                 # on a CUDA machine: under 10 minutes on one H200
    python benchmarks/gpu_check.py --smoke         # tiny nets on the CPU in about a minute (a test runs it)
    python benchmarks/gpu_check.py --configs mnist --skip-study

Per configuration of the paper (digits and MNIST: 40 filters, 5 resnets, 10 mixtures;
CIFAR-10: 160 filters, 5 resnets, 10 mixtures, dropout 0.5) at batch sizes of Meng et
al.'s setup (digits 64, MNIST 16, CIFAR-10 16):

1. training img/s of the product's loop (`training.train_epoch`, discretized loss, Adam)
   in three modes: fp32, bf16 autocast (`mixed_precision=bf16`), and fp32 under
   `torch.compile`; with the peak GPU memory of each;
2. bits/dim of one held-out batch under the fp32-trained weights in each mode, next to
   fp32: bf16 must agree within BF16_TOLERANCE bits/dim, compiled within COMPILE_TOLERANCE;
   a disagreement is printed as FAIL and makes the exit status 1;
3. naive (`sampling.naive.sample`, a forward pass per pixel) and fast
   (`sampling.fast.fast_sample`) sampling, seconds per image, and their ratio; the fast sampler
   with `cuda_graphs=True` too (its pixel steps replayed as CUDA graphs, captures included), whose
   samples must equal the eager ones (GRAPHS_TOLERANCE; a FAIL makes the exit status 1);
4. `python -m study.run --space paper --smoke-test --gpus-per-trial 0.5`: the smoothed
   trial and the baseline on half a GPU each, with its wall time and results table.

Weights are random (then trained a few steps), images random 8-bit noise: neither changes
the cost, and the machine needs no dataset (the study trains on the bundled digits).
`--smoke` runs every section on the CPU with one thread, a tiny net at the digits size (any
`--configs` may be named), two steps, `torch.compile(backend="eager")` (Dynamo's tracing
without code generation: no C++ toolchain, seconds instead of minutes), and the study's
command with `--dry-run` (its flags resolve; nothing trains).
"""
from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainables.losses import DiscretizedNLL  # noqa: E402
from trainables.pixelcnnpp import PixelCNNpp  # noqa: E402
from trainables.sampling.fast import fast_sample  # noqa: E402
from trainables.sampling.naive import sample as naive_sample  # noqa: E402
from trainables.training import TrainUnit, evaluate_nll, train_epoch  # noqa: E402

BF16_TOLERANCE = 0.05   # bits/dim: bf16 keeps 8 mantissa bits in the network (the likelihood runs in fp32)
COMPILE_TOLERANCE = 1e-3  # bits/dim: the same fp32 arithmetic, reordered by the compiler
GRAPHS_TOLERANCE = 1e-6  # graphs replay the eager steps' kernels: the same discretized samples
MODES = ("fp32", "bf16", "compile")


@dataclass(frozen=True)
class CheckConfig:
    shape: tuple[int, int, int]  # (C, H, W)
    nr_filters: int
    nr_resnet: int
    num_mixtures: int
    dropout: float
    batch: int                   # training batch
    samples: int                 # images per sampling measurement (naive and fast alike)


PAPER = {
    "digits": CheckConfig((1, 8, 8), 40, 5, 10, 0.0, 64, 16),
    "mnist": CheckConfig((1, 28, 28), 40, 5, 10, 0.0, 16, 16),
    "cifar10": CheckConfig((3, 32, 32), 160, 5, 10, 0.5, 16, 8),
}
SMOKE = {name: replace(c, nr_filters=4, nr_resnet=1, num_mixtures=2, batch=4, samples=2) for name, c in PAPER.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(cfg: CheckConfig, n: int, device: torch.device, seed: int):
    g = torch.Generator().manual_seed(seed)
    c, h, w = cfg.shape
    xs = [(torch.randint(0, 256, (cfg.batch, c, h, w), generator=g).float() / 127.5 - 1.0).to(device)
          for _ in range(n)]
    return [(x, x) for x in xs]  # (x, x_noisy): the discretized loss reads x only


def _unit(cfg: CheckConfig, mode: str, device: torch.device, backend: str) -> TrainUnit:
    torch.manual_seed(0)  # the same initial weights in every mode
    model = PixelCNNpp(cfg.shape[0], cfg.nr_filters, cfg.nr_resnet, cfg.num_mixtures, cfg.dropout).to(device)
    unit = TrainUnit.create(model, DiscretizedNLL(), lr=2e-4, lr_decay=0.999995,
                            mixed_precision="bf16" if mode == "bf16" else "off")
    if mode == "compile":
        unit.train_forward = torch.compile(model, backend=backend)
    return unit


def training_speed(cfg: CheckConfig, mode: str, device: torch.device, steps: int, warmup: int,
                   backend: str) -> tuple[dict, TrainUnit]:
    """img/s of train_epoch after `warmup` steps (compilation happens there), and peak memory."""
    unit = _unit(cfg, mode, device, backend)
    batches = _batches(cfg, warmup + steps, device, seed=1)
    start = time.perf_counter()
    train_epoch(unit, batches[:warmup], epoch=0, device=device)
    _sync(device)
    warm_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats = train_epoch(unit, batches[warmup:], epoch=1, device=device)
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"img_per_s": stats.num_images / stats.seconds, "warmup_s": warm_s, "peak_gib": peak}, unit


def bpd_by_mode(trained: TrainUnit, cfg: CheckConfig, device: torch.device, backend: str) -> dict[str, float]:
    """Bits/dim of one held-out batch under the same (fp32-trained) weights in every mode."""
    batch = _batches(cfg, 1, device, seed=2)
    model = trained.model
    out = {}
    for mode in MODES:
        unit = TrainUnit(model, trained.optimizer, trained.scheduler, DiscretizedNLL(),
                         autocast_dtype=torch.bfloat16 if mode == "bf16" else None)
        if mode == "compile":
            unit = TrainUnit(torch.compile(model, backend=backend), trained.optimizer, trained.scheduler,
                             DiscretizedNLL())
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
            out[mode] = evaluate_nll(unit, batch, device=device).bpd(continuous=False)
    return out


@torch.no_grad()
def sampling_speed(model: PixelCNNpp, cfg: CheckConfig, device: torch.device) -> dict[str, float]:
    """Seconds per image of the naive sampler, the fast one, and the fast one with its pixel steps
    replayed as CUDA graphs (captures included; on a CPU they fall back to the eager steps), the
    same images' count and seeds; and the largest difference of the graphs' samples from the fast ones."""
    out, samples = {}, {}
    graphs = functools.partial(fast_sample, cuda_graphs=True)
    for name, fn in (("naive", naive_sample), ("fast", fast_sample), ("graphs", graphs)):
        fn(model, 1, cfg.shape, discretized=True, generator=torch.Generator().manual_seed(0))  # warm up
        _sync(device)
        start = time.perf_counter()
        samples[name] = fn(model, cfg.samples, cfg.shape, discretized=True, generator=torch.Generator().manual_seed(0))
        _sync(device)
        out[f"{name}_s_per_img"] = (time.perf_counter() - start) / cfg.samples
    out["ratio"] = out["naive_s_per_img"] / out["fast_s_per_img"]
    out["graphs_max_diff"] = (samples["graphs"] - samples["fast"]).abs().max().item()
    return out


def study_check(smoke: bool) -> dict:
    """A 2-trial study (the paper space's smoothed trial and baseline) on half a GPU each."""
    with tempfile.TemporaryDirectory() as storage:
        cmd = [sys.executable, "-m", "study.run", "--space", "paper", "--smoke-test", "--gpus-per-trial", "0.5",
               "--storage-path", storage, "--name", "gpu_check"] + (["--dry-run"] if smoke else [])
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=420)
        wall = time.perf_counter() - start
    tail = (done.stdout + done.stderr).strip().splitlines()[-14:]
    return {"command": " ".join(cmd[1:]), "returncode": done.returncode, "wall_s": wall, "tail": tail}


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value != value else f"{value:.{digits}g}"


def run(args) -> int:
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    configs = SMOKE if args.smoke else PAPER
    steps, warmup = (2, 1) if args.smoke else (args.steps, args.warmup)
    backend = "eager" if args.smoke else "inductor"
    if args.smoke:
        torch.set_num_threads(1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# gpu_check on {name} (torch {torch.__version__}){' --smoke: tiny nets' if args.smoke else ''}\n")
    print("| config | mode | img/s | warm-up s | peak GiB | bits/dim | vs fp32 | agrees |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    failures, trained = 0, {}
    began = time.perf_counter()
    for cname in args.configs.split(","):
        cfg = configs[cname]
        speeds = {}
        for mode in MODES:
            speeds[mode], unit = training_speed(cfg, mode, device, steps, warmup, backend)
            if mode == "fp32":
                trained[cname] = unit
        bpd = bpd_by_mode(trained[cname], cfg, device, backend)
        for mode in MODES:
            diff = bpd[mode] - bpd["fp32"]
            ok = abs(diff) <= {"fp32": 0.0, "bf16": BF16_TOLERANCE, "compile": COMPILE_TOLERANCE}[mode]
            failures += not ok
            s = speeds[mode]
            print(f"| {cname} | {mode} | {s['img_per_s']:.1f} | {s['warmup_s']:.1f} | {_fmt(s['peak_gib'])} | "
                  f"{bpd[mode]:.4f} | {diff:+.1e} | {'yes' if ok else 'FAIL'} |")
    print(f"\ntolerances: bf16 {BF16_TOLERANCE} bits/dim, compile {COMPILE_TOLERANCE} bits/dim "
          f"({time.perf_counter() - began:.0f} s)\n")
    print("| config | samples | naive s/img | fast s/img | fast, CUDA graphs s/img | naive / fast | graphs agree |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for cname, unit in trained.items():
        cfg = configs[cname]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        s = sampling_speed(unit.model, cfg, device)
        agrees = s["graphs_max_diff"] <= GRAPHS_TOLERANCE
        failures += not agrees
        print(f"| {cname} | {cfg.samples} | {s['naive_s_per_img']:.4g} | {s['fast_s_per_img']:.4g} | "
              f"{s['graphs_s_per_img']:.4g} | {s['ratio']:.1f} | "
              f"{'yes' if agrees else 'FAIL'} (max diff {s['graphs_max_diff']:.1e}) |")
    print(f"\n({time.perf_counter() - began:.0f} s so far)\n")
    if not args.skip_study:
        study = study_check(args.smoke)
        failures += study["returncode"] != 0
        print(f"study: `{study['command']}` -> exit {study['returncode']} in {study['wall_s']:.0f} s")
        print("\n".join(f"    {line}" for line in study["tail"]))
    print(f"\ntotal {time.perf_counter() - began:.0f} s; {failures} failure(s)")
    return 1 if failures else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a tiny net on the CPU, the study as --dry-run")
    p.add_argument("--configs", help="comma-separated: digits, mnist, cifar10 (default: all; with --smoke digits)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per config and mode")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    p.add_argument("--skip-study", action="store_true", help="skip the 2-trial study")
    args = p.parse_args(argv)
    args.configs = args.configs or ("digits" if args.smoke else ",".join(PAPER))
    bad = [c for c in args.configs.split(",") if c not in PAPER]
    if bad:
        p.exit(2, f"gpu_check: unknown config {bad[0]!r}; valid: {', '.join(PAPER)}\n")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
