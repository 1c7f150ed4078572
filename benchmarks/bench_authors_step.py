"""Our training step against the authors' at their MNIST network, side by side in one process.

    git -C <their clone> archive HEAD pixelcnnpp | tar -x -C /tmp/authors     # their code, not in this repo
    python benchmarks/bench_authors_step.py --authors-dir /tmp/authors
    python benchmarks/bench_authors_step.py --authors-dir /tmp/authors --threads 1 --rounds 5 --json out.json

The authors' code is github.com/chenlin9/Autoregressive-Modeling-with-Distribution-Smoothing
(`pixelcnnpp/pixelcnnpp.py`: `PixelCNN`, `mix_logistic_loss_1d`); their smoothed-model step
(runners/pixelcnnpp_smoothed_train_runner.py) is forward on x~, the continuous mixture's summed
NLL, zero_grad, backward, Adam, the lr scheduler. Ours is `training.train_epoch` on the smoothed
unit that `Experiment` builds from the `authors` configuration of bench_training.py (40 filters,
5 resnets, 10 mixtures, channel-wise dropout 0.5), with the fused element-wise kernels (`fused`,
the default) and without (`none`). Both see the same batches of noisy images (real MNIST test
images where ../shared/data/mnist has them). Their loss builds a tensor with `.cuda()`; on a
machine without CUDA this script maps `Tensor.cuda` to the tensor itself while their step runs
(nothing else of theirs is changed). Variants take turns in every round (the order rotates); the
claim is the per-round ratio to the authors' step, median and range, wall clock and per CPU-second.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import AUTHORS, CONFIGS, build_units, images_for  # noqa: E402
from trainables import fused_elementwise, losses, pixelcnnpp, training  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.data import add_noise  # noqa: E402


@contextlib.contextmanager
def cuda_calls_stay_put():
    """Their loss calls .cuda(); without CUDA that call returns the tensor itself while this is open."""
    if torch.cuda.is_available():
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def load_authors(directory: Path):
    if not (directory / "pixelcnnpp" / "pixelcnnpp.py").exists():
        print(f"bench_authors_step: {directory}/pixelcnnpp/pixelcnnpp.py not found (extract their code there)",
              file=sys.stderr)
        sys.exit(2)
    sys.path.insert(0, str(directory))
    import pixelcnnpp.pixelcnnpp as theirs  # noqa: E402  (their package; ours is trainables.pixelcnnpp)
    return theirs


class AuthorsStep:
    """Their model, Adam and StepLR as their runner builds them; `epoch(batches)` -> images trained."""

    def __init__(self, theirs, cfg: TrialConfig):
        m, t = cfg.model, cfg.train
        torch.manual_seed(t.seed)
        config = SimpleNamespace(nr_resnet=m.nr_resnet, nr_filters=m.nr_filters, input_channels=1,
                                 nr_logistic_mix=m.num_mixtures)
        self.model, self.loss = theirs.PixelCNN(config), theirs.mix_logistic_loss_1d
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=t.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=t.lr_decay)

    def epoch(self, batches) -> int:
        self.model.train()
        with cuda_calls_stay_put():
            for _, x_noisy in batches:
                loss = self.loss(x_noisy, self.model(x_noisy))
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                loss.item()  # their runner reads the loss every step, as train_epoch does
        return sum(b[0].shape[0] for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors-dir", type=Path, required=True, help="holds their pixelcnnpp/ package")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per variant and round")
    parser.add_argument("--batch", type=int, default=AUTHORS["batch_size"])
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1 or args.batch < 1:
        print("bench_authors_step: rounds, steps and batch must be >= 1", file=sys.stderr)
        sys.exit(2)
    theirs = load_authors(args.authors_dir)
    flat, shape, _ = CONFIGS["authors"]
    cfg = TrialConfig.from_flat({**flat, "batch_size": args.batch})
    images, source = images_for(cfg, shape, args.batch * args.steps)
    gen = torch.Generator().manual_seed(0)
    batches = [(x, add_noise(x, cfg.data.noise_std, gen)) for x in images.split(args.batch)]
    ours = build_units(SimpleNamespace(pixelcnnpp=pixelcnnpp, losses=losses, training=training), cfg, shape,
                       ("smoothed",))["smoothed"]
    authors = AuthorsStep(theirs, cfg)

    def run(variant: str) -> int:
        if variant == "authors":
            return authors.epoch(batches)
        fused_elementwise.set_enabled(variant == "fused")
        return training.train_epoch(ours, batches, epoch=1, device="cpu").num_images

    variants = ["authors", "none", "fused"]
    results = {"machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}", "images": source,
               "batch": args.batch, "steps": args.steps}
    for threads in sorted({int(t) for t in args.threads.split(",")}):
        torch.set_num_threads(threads)
        for v in variants:  # warm-up: oneDNN primitives, the fused kernels' compile
            run(v)
        wall, cpu = {v: [] for v in variants}, {v: [] for v in variants}
        for r in range(args.rounds):
            for v in variants[r % 3:] + variants[: r % 3]:
                w0, c0 = time.perf_counter(), time.process_time()
                n = run(v)
                wall[v].append(n / (time.perf_counter() - w0))
                cpu[v].append(n / (time.process_time() - c0))
        rows = {}
        for v in variants:
            ratios = [a / b for a, b in zip(wall[v], wall["authors"])]
            cpu_ratios = [a / b for a, b in zip(cpu[v], cpu["authors"])]
            rows[v] = {"images_per_s": statistics.median(wall[v]), "images_per_cpu_s": statistics.median(cpu[v]),
                       "ratio": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
                       "cpu_ratio": statistics.median(cpu_ratios),
                       "cpu_ratio_range": [min(cpu_ratios), max(cpu_ratios)]}
        results[f"threads={threads}"] = rows
        print(f"\nthreads {threads}, batch {args.batch}, {args.rounds} rounds of {args.steps} steps ({source})")
        print("| variant | images/s | x authors (range) | images/CPU-s | x authors per CPU-s (range) |")
        print("| --- | --- | --- | --- | --- |")
        for v, s in rows.items():
            print(f"| {v} | {s['images_per_s']:.1f} | {s['ratio']:.2f} ({s['ratio_range'][0]:.2f}-"
                  f"{s['ratio_range'][1]:.2f}) | {s['images_per_cpu_s']:.1f} | {s['cpu_ratio']:.2f} "
                  f"({s['cpu_ratio_range'][0]:.2f}-{s['cpu_ratio_range'][1]:.2f}) |", flush=True)
    fused_elementwise.set_enabled(True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
