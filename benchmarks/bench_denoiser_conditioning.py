"""Denoiser conditioning side by side: `encoder` against `stacked` at equal steps on Fashion-MNIST.

    python benchmarks/bench_denoiser_conditioning.py --data-dir /usr/share/datasets/fashion-mnist \
        [--steps 600] [--seeds 0 1] [--json PATH]

Per seed, one denoiser p(x | x~) of each design (pixelcnnpp.py), the CPU study size: 16 filters,
5 mixtures, batch 64, lr 2e-3, sigma 0.5, and depth `--nr-resnet` (default: the smallest at
which every clean pixel of the stacked design sees all of x~ at 28x28, pixelcnnpp.
full_coverage_depth: 2), the encoder at the same depth. Both train on the study's seeded 5,000
training images (load_dataset(subset=5000), as MNIST_CPU_SIZE's train_subset) from the same seed,
on the same batches (data.epoch_batches: same images, same noise), with the real loop
(training.train_epoch, one batch per call) and the study's likelihood (losses.DenoiserNLL,
discretized); their steps alternate one by one on one thread, so the load of a shared machine
falls on both alike. Then, per design:

- test_bpd_denoiser: bits/dim of clean x given x~ on the study's seeded 1,000 test images
  (max_eval_images) with the test noise of a trial (experiment.TEST_NOISE_EPOCH);
- fd_twostep_realnoisy: the Frechet distance, with the dataset's extractor (fashion_mnist_cnn,
  quality/evaluate.evaluate_samples), between the denoiser's samples (fast sampler) given real
  noisy test images x~ = x + sigma * eps (a seeded choice of --fd-images, noise from a fixed seed,
  the same for both designs) and the clean test split, with its bootstrap SE; beside it, once,
  the floor: the x~ themselves against the clean split;
- seconds per training step (median over the steps) and sampling seconds per image.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from search_spaces.metric_names import default_extractor, metric_names, standard_error_name  # noqa: E402
from trainables.data import epoch_batches, load_dataset, subset_indices  # noqa: E402
from trainables.experiment import TEST_NOISE_EPOCH  # noqa: E402
from trainables.losses import DenoiserNLL  # noqa: E402
from trainables.pixelcnnpp import PixelCNNpp, full_coverage_depth, stacked_coverage  # noqa: E402
from trainables.quality.evaluate import evaluate_samples  # noqa: E402
from trainables.sampling.fast import fast_sample  # noqa: E402
from trainables.training import TrainUnit, evaluate_nll, train_epoch  # noqa: E402

DATASET = "fashion_mnist"
DESIGNS = ("encoder", "stacked")
REAL_NOISE_SEED = 12345  # eps of the real noisy test images: one draw for every design and seed
SAMPLE_SEED = 777  # the denoisers' draws given those x~


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist", help="the four Fashion-MNIST IDX files")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps per denoiser")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--nr-resnet", type=int, default=0, help="0: the smallest depth the stacked design covers x~ at")
    p.add_argument("--nr-filters", type=int, default=16)
    p.add_argument("--num-mixtures", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--noise-std", type=float, default=0.5)
    p.add_argument("--train-images", type=int, default=5000)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--fd-images", type=int, default=1000)
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def _batches(train, a, seed):
    """The first `steps` batches of the epochs of `seed`, one list for both designs."""
    out, epoch = [], 0
    while len(out) < a.steps:
        epoch += 1
        out += [(epoch, b) for b in epoch_batches(train, a.batch_size, a.noise_std, seed, epoch)]
    return out[: a.steps]


def _train(a, seed, depth, train):
    """Both designs from `seed` on the same batches, steps interleaved: {design: (unit, [seconds per step])}."""
    units = {}
    for design in DESIGNS:
        torch.manual_seed(seed)
        net = PixelCNNpp(1, a.nr_filters, depth, a.num_mixtures, conditional=True, conditioning=design)
        units[design] = (TrainUnit.create(net, DenoiserNLL(), lr=a.lr, lr_decay=0.999995, mixed_precision="off"), [])
    for step, (epoch, batch) in enumerate(_batches(train, a, seed), start=1):
        for unit, seconds in units.values():
            seconds.append(train_epoch(unit, [batch], epoch=epoch, device="cpu").seconds)
        if step % 100 == 0:
            print(f"  seed {seed}: step {step}/{a.steps}", flush=True)
    return units


def _distance(images, a, names, quiet):
    scores = evaluate_samples(images, DATASET, data_dir=a.data_dir, device="cpu", log=quiet)
    return scores[names["distance"]], scores[standard_error_name(names["distance"])]


def main(argv=None) -> int:
    a = _args(argv)
    torch.set_num_threads(1)
    if not os.path.isdir(a.data_dir):
        print(f"bench_denoiser_conditioning: --data-dir {a.data_dir} is not a folder", file=sys.stderr)
        return 2
    depth = a.nr_resnet or full_coverage_depth(28, 28)
    coverage = stacked_coverage(depth, 28, 28)
    quiet = lambda message: None  # noqa: E731
    names = metric_names(default_extractor(DATASET))
    train = load_dataset(DATASET, "train", a.data_dir, subset=a.train_images)  # (5000, 1, 28, 28) in [-1, 1]
    test = load_dataset(DATASET, "test", a.data_dir, subset=a.test_images)
    clean = load_dataset(DATASET, "test", a.data_dir)
    chosen = torch.from_numpy(subset_indices(len(clean), a.fd_images))
    noise = torch.randn(clean[chosen].shape, generator=torch.Generator().manual_seed(REAL_NOISE_SEED))
    x_real = clean[chosen] + a.noise_std * noise  # (n, 1, 28, 28): the real noisy test images, unclamped
    floor = _distance(x_real, a, names, quiet)
    print(f"depth {depth}: the stacked design's clean pixels that see all of x~: {coverage} of 784; "
          f"floor (x~ vs clean) {names['distance']} = {floor[0]:.3f} +- {floor[1]:.3f}", flush=True)
    rows, cpu_start = [], time.process_time()
    for seed in a.seeds:
        units = _train(a, seed, depth, train)
        for design, (unit, seconds) in units.items():
            test_stats = evaluate_nll(unit, epoch_batches(test, 256, a.noise_std, seed, TEST_NOISE_EPOCH,
                                                          shuffle=False), device="cpu")
            start = time.perf_counter()
            samples = fast_sample(unit.eval_model, len(x_real), (1, 28, 28), discretized=True, x_noisy=x_real,
                                  generator=torch.Generator().manual_seed(SAMPLE_SEED), threads=1)
            sample_seconds = (time.perf_counter() - start) / len(x_real)
            fd, fd_se = _distance(samples, a, names, quiet)
            row = {"seed": seed, "design": design, "steps": a.steps, "test_bpd_denoiser": test_stats.bpd(False),
                   "fd_twostep_realnoisy": fd, "fd_twostep_realnoisy_se": fd_se,
                   "step_seconds_median": statistics.median(seconds), "step_seconds_mean": statistics.mean(seconds),
                   "sample_seconds_per_image": sample_seconds,
                   "parameters": sum(p.numel() for p in unit.model.parameters())}
            rows.append(row)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    cpu_minutes = (time.process_time() - cpu_start) / 60
    print(f"distance: {names['distance']}; CPU minutes (training, evaluation, sampling): {cpu_minutes:.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "depth": depth, "coverage": coverage, "floor": floor, "rows": rows,
                       "cpu_minutes": cpu_minutes}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
