"""Training throughput and naive vs fast sampling speed of PixelCNN++, per configuration.

    python benchmarks/bench_sampling.py [--quick] [--json PATH] [--configs digits,mnist]

For each configuration: training images/s of the real loop (`training.train_epoch`,
discretized loss, Adam), warmed up first, with a breakdown of one step; naive and fast
sampling seconds per image and their ratio, measured in the same run (ratios are the
claim; absolute times depend on the machine and its load). Weights are random and data
is random 8-bit noise: neither changes the cost.

The naive sampler runs one full forward pass per pixel, so its cost per pixel is
constant. Where a full naive image is too slow (MNIST: minutes), the script times a few
rows of its loop body and extrapolates to H*W pixels, and says so in the output; at the
digits configuration it runs both ways, which checks the extrapolation.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.utils import parametrize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.sampling.fast import fast_sample  # noqa: E402
from trainables.sampling.native_blocks import pixel_steps_in_use  # noqa: E402
from trainables.likelihoods import discretized_mol_log_prob, draw_uniforms, sample_discretized_mol  # noqa: E402
from trainables.losses import DiscretizedNLL  # noqa: E402
from trainables.pixelcnnpp import PixelCNNpp  # noqa: E402
from trainables.sampling.naive import sample  # noqa: E402
from trainables.training import TrainUnit, train_epoch  # noqa: E402


@dataclass(frozen=True)
class BenchConfig:
    shape: tuple[int, int, int]  # (C, H, W)
    nr_filters: int
    nr_resnet: int
    num_mixtures: int
    batch: int
    full_naive: bool  # also time a whole naive image (cheap only at small sizes)


CONFIGS = {
    "digits": BenchConfig((1, 8, 8), 32, 2, 5, 64, full_naive=True),  # the platform's default
    "mnist": BenchConfig((1, 28, 28), 40, 5, 10, 16, full_naive=False),  # Meng et al.'s MNIST setup
}


def _images(cfg: BenchConfig, generator: torch.Generator) -> torch.Tensor:
    c, h, w = cfg.shape
    return torch.randint(0, 256, (cfg.batch, c, h, w), generator=generator).float() / 127.5 - 1.0


def _timed(fn, repeats: int) -> float:
    """Least seconds of fn() over `repeats` calls (the run least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _step_phases(unit: TrainUnit, x: torch.Tensor, repeats: int) -> dict:
    """Milliseconds of each phase of a training step, each the least over `repeats` steps."""
    phases = {"forward_ms": [], "loss_ms": [], "backward_ms": [], "adam_ms": []}
    for _ in range(repeats):
        unit.optimizer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        params = unit.model(x)
        t1 = time.perf_counter()
        loss = -discretized_mol_log_prob(x, params).mean()
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        unit.optimizer.step()
        t4 = time.perf_counter()
        for key, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            phases[key].append(1e3 * seconds)
    return {key: min(values) for key, values in phases.items()}


def bench_training(cfg: BenchConfig, steps: int, warmup: int, repeats: int) -> dict:
    """Images/s of train_epoch, and the phases of one step in milliseconds."""
    g = torch.Generator().manual_seed(0)
    model = PixelCNNpp(cfg.shape[0], cfg.nr_filters, cfg.nr_resnet, cfg.num_mixtures)
    unit = TrainUnit.create(model, DiscretizedNLL(), lr=2e-4, lr_decay=0.999995)
    batches = [(x, x) for x in (_images(cfg, g) for _ in range(steps))]
    train_epoch(unit, batches[:warmup], epoch=0, device="cpu")
    stats = train_epoch(unit, batches, epoch=1, device="cpu")
    x = batches[0][0]
    out = {"images_per_s": stats.num_images / stats.seconds, "step_ms": 1e3 * stats.seconds / steps}
    out.update(_step_phases(unit, x, repeats))
    # The forward's share spent on effective weights g * v / |v| (recomputed every step,
    # as they must be while g and v train), with autograd recording as in training.
    normed = [m for m in model.modules() if parametrize.is_parametrized(m, "weight")]
    out["weight_norm_ms"] = 1e3 * _timed(lambda: [m.weight for m in normed], repeats)
    model.to(memory_format=torch.channels_last)
    phases = _step_phases(unit, x.contiguous(memory_format=torch.channels_last), repeats)
    out["step_channels_last_ms"] = sum(phases.values())
    out["step_contiguous_ms"] = sum(out[k] for k in phases)
    return out


@torch.no_grad()
def naive_pixel_seconds(model, cfg: BenchConfig, pixels: int) -> float:
    """Seconds per pixel of sampling.sample's loop body (one forward pass and one draw at
    batch cfg.batch), timed over the first `pixels` pixels: the naive cost is the same at
    every pixel, so this extrapolates to the whole image."""
    c, h, w = cfg.shape
    uniforms = draw_uniforms(cfg.batch, c, model.num_mixtures, h, w, generator=torch.Generator().manual_seed(0))
    x = torch.zeros(cfg.batch, c, h, w)
    model.eval()
    model(x)  # warm up
    start = time.perf_counter()
    for i, j in (divmod(p, w) for p in range(pixels)):
        params = model(x)  # (N, P, H, W), as in sampling.sample
        pixel_uniforms = tuple(u[:, :, i : i + 1, j : j + 1] for u in uniforms)
        pixel = sample_discretized_mol(params[:, :, i : i + 1, j : j + 1], channels=c, uniforms=pixel_uniforms)
        x[:, :, i, j] = pixel[:, :, 0, 0]
    return (time.perf_counter() - start) / pixels


def bench_sampling(cfg: BenchConfig, quick: bool, rounds: int = 3) -> dict:
    """Fast and naive timed in alternating rounds; each the least over the rounds (the round
    least disturbed by other load: one-shot ratios on this machine spread 340-510x)."""
    c, h, w = cfg.shape
    torch.manual_seed(0)
    model = PixelCNNpp(c, cfg.nr_filters, cfg.nr_resnet, cfg.num_mixtures).eval()
    g = torch.Generator().manual_seed(1)
    fast_sample(model, cfg.batch, (c, 4, 4), discretized=True, generator=g)  # warm up
    pixels = 4 if quick else w
    fast_rounds, torch_rounds, naive_rounds = [], [], []
    steps = pixel_steps_in_use(torch.device("cpu"), torch.float32)  # builds the native library before timing
    for _ in range(1 if quick else rounds):
        start = time.perf_counter()
        fast_sample(model, cfg.batch, cfg.shape, discretized=True, generator=g)
        fast_rounds.append((time.perf_counter() - start) / cfg.batch)
        start = time.perf_counter()
        fast_sample(model, cfg.batch, cfg.shape, discretized=True, generator=g, native=False)
        torch_rounds.append((time.perf_counter() - start) / cfg.batch)
        naive_rounds.append(naive_pixel_seconds(model, cfg, pixels) * h * w / cfg.batch)
    fast = min(fast_rounds)
    out = {
        "fast_s_per_image": fast,
        "fast_pixel_steps": steps,
        "fast_torch_steps_s_per_image": min(torch_rounds),
        "naive_s_per_image_extrapolated": min(naive_rounds),
        "naive_pixels_timed": pixels,
        "rounds": {"fast_s_per_image": fast_rounds, "fast_torch_steps_s_per_image": torch_rounds,
                   "naive_s_per_image_extrapolated": naive_rounds},
    }
    if cfg.full_naive and not quick:
        start = time.perf_counter()
        sample(model, cfg.batch, cfg.shape, discretized=True, generator=g)
        out["naive_s_per_image_full"] = (time.perf_counter() - start) / cfg.batch
    naive = out.get("naive_s_per_image_full", out["naive_s_per_image_extrapolated"])
    out["naive_s_per_image"] = naive
    out["naive_method"] = ("full image" if "naive_s_per_image_full" in out
                           else f"extrapolated from {pixels} of {h * w} pixels, least of {len(naive_rounds)} rounds")
    out["speedup"] = naive / fast
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 training steps, 4 naive pixels, no full naive image")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {list(CONFIGS)}")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="alternating fast / naive timings; the least of each")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor()},
        "configs": {},
    }
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        print(f"== {name}: {cfg}", flush=True)
        res = {"config": asdict(cfg)}
        if not args.skip_training:
            steps, warmup, repeats = (2, 1, 2) if args.quick else (10, 3, 5)
            res["training"] = bench_training(cfg, steps, warmup, repeats)
            print("  training " + ", ".join(f"{k} {v:.1f}" for k, v in res["training"].items()), flush=True)
        res["sampling"] = s = bench_sampling(cfg, args.quick, args.rounds)
        print(
            f"  sampling s/image: naive {s['naive_s_per_image']:.3f} ({s['naive_method']}), "
            f"fast {s['fast_s_per_image']:.4f}, fast/naive speedup {s['speedup']:.1f}x",
            flush=True,
        )
        print(f"  fast pixel steps: {s['fast_pixel_steps']}; on torch operations instead: "
              f"{s['fast_torch_steps_s_per_image']:.4f} s/image ({s['naive_s_per_image'] / s['fast_torch_steps_s_per_image']:.0f}x)",
              flush=True)
        print("  per round: fast " + ", ".join(f"{t:.4f}" for t in s["rounds"]["fast_s_per_image"])
              + " | fast on torch operations " + ", ".join(f"{t:.4f}" for t in s["rounds"]["fast_torch_steps_s_per_image"])
              + " | naive " + ", ".join(f"{t:.2f}" for t in s["rounds"]["naive_s_per_image_extrapolated"]), flush=True)
        if "naive_s_per_image_full" in s:
            print(f"  (naive extrapolated from {s['naive_pixels_timed']} pixels: {s['naive_s_per_image_extrapolated']:.3f})")
        results["configs"][name] = res
    _print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


def _print_table(results: dict) -> None:
    print(f"\n| config | train img/s | naive s/img | fast s/img | speedup |   (threads {results['machine']['threads']})")
    print("| --- | --- | --- | --- | --- |")
    for name, res in results["configs"].items():
        s = res["sampling"]
        train = f"{res['training']['images_per_s']:.1f}" if "training" in res else "-"
        naive = f"{s['naive_s_per_image']:.3f}" + ("" if "full" in s["naive_method"] else " (extrap.)")
        print(f"| {name} | {train} | {naive} | {s['fast_s_per_image']:.4f} | {s['speedup']:.0f}x |")


if __name__ == "__main__":
    main()
