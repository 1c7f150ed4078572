"""Training throughput: the step as of commit e7ce202 against each speed-up alone and all together.

    python benchmarks/bench_training.py                          # all configurations, 1 and all threads
    python benchmarks/bench_training.py --configs digits --threads 1 --rounds 2
    python benchmarks/bench_training.py --json out.json

Images per second of the real loop (`trainables.training.train_epoch`, TrainUnits built from the
study's TrialConfig as `Experiment._build_units` builds them) for
  - `e7ce202`: the code as it was at that commit (layers, conditioning, pixelcnnpp, likelihoods,
    losses, training ... read with `git show` into a temporary package, nothing copied by hand);
  - `fused`: the current code, whose gated resnets run their element-wise work as fused kernels
    (trainables/fused_elementwise.py, the default); `none` (--variants none,fused): the current code
    with them switched off, which should match e7ce202.
Variants take turns in every round (the order rotates), so load from other jobs falls on all of
them; the claims are the per-round ratios to e7ce202 (median and range over rounds). Wall-clock
images/s is what a trial sees; images per CPU-second (process time) is steadier on a shared
machine. Configurations: `digits` and `mnist_cpu`, the study sizes of study/config.py as a smoothed
model + denoiser pair; `authors`, Meng et al.'s MNIST network (40 filters, 5 resnets, 10 mixtures,
channel-wise dropout 0.5, batch 16), the smoothed model alone. 28x28 data is the real MNIST test
split in ../shared/data/mnist where it is, else random 8-bit images (the output says which).
`--bound` also times the two-step bound (quality/bpd.two_step_bound_nats) looped against batched,
and an epoch's test evaluation with the bound apart from the test NLLs against one pass
(pair_evaluation.evaluate_pair).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from study.config import MNIST_CPU_SIZE, STUDY_SIZE  # noqa: E402
from trainables import fused_elementwise, losses, pair_evaluation, pixelcnnpp, training  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.data import add_noise, load_dataset  # noqa: E402
from trainables.quality.bpd import two_step_bound_nats  # noqa: E402

REFERENCE = "e7ce202"
REFERENCE_MODULES = ("layers", "conditioning", "likelihoods", "pixelcnnpp", "losses", "distributed",
                     "quality/bpd", "training")
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
AUTHORS = {"nr_filters": 40, "nr_resnet": 5, "num_mixtures": 10, "dropout": 0.5, "batch_size": 16}
CONFIGS = {  # name -> (flat TrialConfig values, image shape, units timed)
    "digits": ({**STUDY_SIZE, "dataset": "digits"}, (1, 8, 8), ("smoothed", "denoiser")),
    "mnist_cpu": ({**MNIST_CPU_SIZE, "dataset": "mnist"}, (1, 28, 28), ("smoothed", "denoiser")),
    "authors": ({**STUDY_SIZE, **AUTHORS, "dataset": "mnist"}, (1, 28, 28), ("smoothed",)),
}
VARIANTS = {"none": False, "fused": True}  # variant -> fused element-wise kernels on


def load_reference(commit: str, directory: Path) -> SimpleNamespace:
    """The trainables modules at `commit`, imported as package ref_<commit> (imports rewritten)."""
    package = f"ref_{commit}"
    for name in REFERENCE_MODULES:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:trainables/{name}.py"],
                              capture_output=True, text=True, check=True).stdout
        path = directory / package / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(re.sub(r"\btrainables\.", f"{package}.", text))
    sys.path.insert(0, str(directory))
    return SimpleNamespace(**{n: importlib.import_module(f"{package}.{n.replace('/', '.')}")
                              for n in ("pixelcnnpp", "losses", "training")})


def build_units(mods: SimpleNamespace, cfg: TrialConfig, shape, names) -> dict:
    """TrainUnits as Experiment._build_units makes them from `cfg`, from the modules in `mods`."""
    m, t = cfg.model, cfg.train
    kinds = {"smoothed": (mods.losses.SmoothedNLL(), False),
             "denoiser": (mods.losses.DenoiserNLL(t.denoiser_likelihood), True)}
    units = {}
    for name in names:
        loss, conditional = kinds[name]
        torch.manual_seed(t.seed)
        net = mods.pixelcnnpp.PixelCNNpp(shape[0], m.nr_filters, m.nr_resnet, m.num_mixtures, m.dropout, conditional)
        units[name] = mods.training.TrainUnit.create(net, loss, lr=t.lr, lr_decay=t.lr_decay, ema_decay=t.ema_decay,
                                                     grad_clip=t.grad_clip, mixed_precision=t.mixed_precision,
                                                     compile=t.compile)
    return units


def images_for(cfg: TrialConfig, shape, count: int) -> tuple[torch.Tensor, str]:
    """(count, C, H, W) training images: digits, real MNIST where present, else random 8-bit values."""
    if shape[1] == 8:
        return load_dataset("digits", "train")[:count], "digits"
    if (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        return load_dataset("mnist", "test", str(MNIST_DIR))[:count], "MNIST test split"
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (count, *shape), generator=g).float() / 127.5 - 1, "random 8-bit images"


def step_all(train_epoch, units: dict, batches: list) -> int:
    """One train_epoch per unit over `batches`; returns images trained."""
    return sum(train_epoch(unit, batches, epoch=1, device="cpu").num_images for unit in units.values())


def bench_config(name: str, args, reference: SimpleNamespace) -> dict:
    flat, shape, unit_names = CONFIGS[name]
    cfg = TrialConfig.from_flat(flat)
    current = SimpleNamespace(pixelcnnpp=pixelcnnpp, losses=losses, training=training)
    images, source = images_for(cfg, shape, cfg.train.batch_size * args.steps)
    gen = torch.Generator().manual_seed(0)
    batches = [(x, add_noise(x, cfg.data.noise_std, gen)) for x in images.split(cfg.train.batch_size)]
    runs = {REFERENCE: (reference, False)}
    runs.update({v: (current, VARIANTS[v]) for v in args.variants})
    units = {v: build_units(mods, cfg, shape, unit_names) for v, (mods, _) in runs.items()}
    out = {"images": source, "units": list(unit_names), "batch": cfg.train.batch_size, "steps": args.steps}
    for threads in args.threads:
        torch.set_num_threads(threads)
        first = {}
        for v, (mods, fused) in runs.items():  # warm-up: allocators, oneDNN primitives, the first compile
            fused_elementwise.set_enabled(fused)
            start = time.perf_counter()
            step_all(mods.training.train_epoch, units[v], batches[:1])
            first[v] = time.perf_counter() - start
        wall = {v: [] for v in runs}
        cpu = {v: [] for v in runs}
        order = list(runs)
        for r in range(args.rounds):
            for v in order[r % len(order):] + order[: r % len(order)]:
                mods, fused = runs[v]
                fused_elementwise.set_enabled(fused)
                w0, c0 = time.perf_counter(), time.process_time()
                n = step_all(mods.training.train_epoch, units[v], batches)
                wall[v].append(n / (time.perf_counter() - w0))
                cpu[v].append(n / (time.process_time() - c0))
        out[f"threads={threads}"] = summarize(wall, cpu, first)
    fused_elementwise.set_enabled(True)
    return out


def summarize(wall: dict, cpu: dict, first: dict) -> dict:
    """Per variant: median images/s (wall, CPU), per-round ratios to the reference (median, min, max)."""
    out = {}
    for v in wall:
        ratios = [a / b for a, b in zip(wall[v], wall[REFERENCE])]
        cpu_ratios = [a / b for a, b in zip(cpu[v], cpu[REFERENCE])]
        out[v] = {"images_per_s": statistics.median(wall[v]), "images_per_cpu_s": statistics.median(cpu[v]),
                  "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                  "cpu_ratio": statistics.median(cpu_ratios), "cpu_ratio_min": min(cpu_ratios),
                  "cpu_ratio_max": max(cpu_ratios), "first_step_s": first[v], "rounds": len(ratios)}
    return out


def bench_bound(args) -> dict:
    """two_step_bound_nats with the draws looped and batched, on the mnist_cpu pair (current code)."""
    flat, shape, names = CONFIGS["mnist_cpu"]
    cfg = TrialConfig.from_flat({**flat, "bound_noise_draws": args.bound_draws})
    units = build_units(SimpleNamespace(pixelcnnpp=pixelcnnpp, losses=losses, training=training), cfg, shape, names)
    smoothed, denoiser = (units[n].model.eval() for n in names)
    x, source = images_for(cfg, shape, args.bound_images)
    torch.set_num_threads(1)
    seconds = {"looped": [], "batched": []}
    values = {}

    @torch.no_grad()
    def bound(batched: bool) -> torch.Tensor:
        return two_step_bound_nats(x, smoothed_log_prob=lambda z: -losses.SmoothedNLL()(smoothed, None, z),
                                   denoiser_log_prob=lambda c, z: -losses.DenoiserNLL()(denoiser, c, z),
                                   noise_std=cfg.data.noise_std, num_draws=cfg.eval.bound_noise_draws,
                                   generator=torch.Generator().manual_seed(0), batched=batched)

    bound(True)  # warm-up
    for r in range(args.rounds):
        for mode in (("looped", "batched") if r % 2 == 0 else ("batched", "looped")):
            start = time.perf_counter()
            values[mode] = bound(mode == "batched")
            seconds[mode].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(seconds["looped"], seconds["batched"])]
    return {"images": source, "count": args.bound_images, "draws": cfg.eval.bound_noise_draws,
            "looped_s": statistics.median(seconds["looped"]), "batched_s": statistics.median(seconds["batched"]),
            "speedup": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
            "max_abs_difference_nats": float((values["looped"] - values["batched"]).abs().max()),
            "evaluation": bench_evaluation(units, images_for(cfg, shape, args.eval_images)[0], cfg, args.rounds)}


def bench_evaluation(units: dict, x: torch.Tensor, cfg: TrialConfig, rounds: int) -> dict:
    """An epoch's test evaluation of a smoothed trial with one bound draw (the study sizes): the test
    NLLs of both models and then the bound on draws of its own (`separate`, the code before
    pair_evaluation.evaluate_pair) against one pass whose bound takes the test batches' x~ (`shared`)."""
    noise_std = cfg.data.noise_std
    batches = [(b, add_noise(b, noise_std, torch.Generator().manual_seed(i))) for i, b in enumerate(x.split(256))]
    smoothed, denoiser = units["smoothed"], units["denoiser"]

    def separate():
        for unit in (smoothed, denoiser):
            training.evaluate_nll(unit, batches, device="cpu")
        with torch.no_grad():
            for b, _ in batches:
                two_step_bound_nats(b, smoothed_log_prob=lambda z: -losses.SmoothedNLL()(smoothed.eval_model, None, z),
                                    denoiser_log_prob=lambda c, z: -losses.DenoiserNLL()(denoiser.eval_model, c, z),
                                    noise_std=noise_std, num_draws=1, generator=torch.Generator().manual_seed(0))

    def shared():
        pair_evaluation.evaluate_pair(smoothed, denoiser, batches, device="cpu", noise_std=noise_std, bound_draws=1,
                               generator=None)

    shared()  # warm-up
    seconds = {"separate": [], "shared": []}
    for r in range(rounds):
        for mode, fn in (("separate", separate), ("shared", shared))[:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            fn()
            seconds[mode].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(seconds["separate"], seconds["shared"])]
    return {"images": len(x), "separate_s": statistics.median(seconds["separate"]),
            "shared_s": statistics.median(seconds["shared"]), "speedup": statistics.median(ratios),
            "speedup_min": min(ratios), "speedup_max": max(ratios)}


def print_table(results: dict) -> None:
    print("| config | threads | variant | images/s | x e7ce202 (min-max) | images/CPU-s | x e7ce202 CPU (min-max) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, res in results.get("configs", {}).items():
        for key, per_variant in res.items():
            if not key.startswith("threads="):
                continue
            for v, s in per_variant.items():
                print(f"| {name} | {key[8:]} | {v} | {s['images_per_s']:.1f} | {s['ratio']:.2f} "
                      f"({s['ratio_min']:.2f}-{s['ratio_max']:.2f}) | {s['images_per_cpu_s']:.1f} | "
                      f"{s['cpu_ratio']:.2f} ({s['cpu_ratio_min']:.2f}-{s['cpu_ratio_max']:.2f}) |")
    if "bound" in results:
        b = results["bound"]
        print(f"\nbound, {b['count']} images x {b['draws']} draws: looped {b['looped_s']:.2f} s, batched "
              f"{b['batched_s']:.2f} s, {b['speedup']:.2f}x ({b['speedup_min']:.2f}-{b['speedup_max']:.2f}); "
              f"largest difference {b['max_abs_difference_nats']:.2e} nats per image")
        e = b["evaluation"]
        print(f"test evaluation, {e['images']} images, 1 bound draw: test NLLs and the bound apart "
              f"{e['separate_s']:.2f} s, in one pass {e['shared_s']:.2f} s, {e['speedup']:.2f}x "
              f"({e['speedup_min']:.2f}-{e['speedup_max']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="digits,mnist_cpu,authors")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}", help="comma-separated torch thread counts")
    parser.add_argument("--variants", default="fused", help=f"of {','.join(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per unit and round")
    parser.add_argument("--bound", action="store_true", help="also time the two-step bound, looped vs batched")
    parser.add_argument("--bound-images", type=int, default=64)
    parser.add_argument("--eval-images", type=int, default=1000, help="test images of the evaluation (--bound)")
    parser.add_argument("--bound-draws", type=int, default=4)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    args.threads = sorted({int(t) for t in args.threads.split(",")})
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [c for c in args.configs.split(",") if c not in CONFIGS] + [v for v in args.variants if v not in VARIANTS]
    if unknown or args.rounds < 1 or args.steps < 1:
        print(f"bench_training: unknown configs/variants {unknown} or rounds/steps < 1", file=sys.stderr)
        sys.exit(2)
    results = {"machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}", "reference": REFERENCE,
               "fused_kernels": "compiled" if fused_elementwise.available() else fused_elementwise._state["reason"],
               "configs": {}}
    with tempfile.TemporaryDirectory() as directory:
        reference = load_reference(REFERENCE, Path(directory))
        for name in args.configs.split(","):
            results["configs"][name] = bench_config(name, args, reference)
            print(json.dumps({name: results["configs"][name]}, default=str), flush=True)
    if args.bound:
        results["bound"] = bench_bound(args)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
