"""Denoiser p(x | x~) on real MNIST: test bits/dim after equal training steps, and speed.

    python benchmarks/bench_denoiser.py --data-dir ../shared/data/mnist [--epochs 3] [--json PATH]

Trains one denoiser of the study's default size (STUDY_SIZE: 16 filters, depth 1,
5 mixtures, batch 64, lr 2e-3) with the real loop (`training.train_epoch`,
`losses.DenoiserNLL`) on the first `--train-images` images of the MNIST test split
(the IDX files in --data-dir; the product's train split is not needed) and reports the
test bits/dim of clean x given x~ on the last `--test-images` images after each epoch,
plus training images/s. It measures the code on its import path (this checkout), so
two designs compare by running the same script from two checkouts with the same
arguments: equal data, noise, batch order and steps; the bits/dim ratio is the claim,
the times depend on the machine's load.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainables.data import epoch_batches, load_dataset  # noqa: E402
from trainables.losses import DenoiserNLL  # noqa: E402
from trainables.pixelcnnpp import PixelCNNpp  # noqa: E402
from trainables.training import TrainUnit, evaluate_nll, train_epoch  # noqa: E402

TEST_NOISE_EPOCH = -1  # the test split's noise: the same draw after every epoch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with t10k-images-idx3-ubyte[.gz] and its labels")
    p.add_argument("--train-images", type=int, default=5000)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--noise-std", type=float, default=0.3)
    p.add_argument("--nr-filters", type=int, default=16)
    p.add_argument("--nr-resnet", type=int, default=1)
    p.add_argument("--num-mixtures", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    if not os.path.isdir(a.data_dir):
        print(f"bench_denoiser: --data-dir {a.data_dir} is not a folder", file=sys.stderr)
        return 2
    images = load_dataset("mnist", "test", a.data_dir)  # (10000, 1, 28, 28) in [-1, 1]
    if a.train_images + a.test_images > len(images):
        print(f"bench_denoiser: {a.train_images} + {a.test_images} images > the {len(images)} there", file=sys.stderr)
        return 2
    train, test = images[: a.train_images], images[len(images) - a.test_images :]
    torch.manual_seed(a.seed)
    model = PixelCNNpp(1, a.nr_filters, a.nr_resnet, a.num_mixtures, conditional=True)
    unit = TrainUnit.create(model, DenoiserNLL(), lr=a.lr, lr_decay=0.999995, mixed_precision="off")
    params = sum(t.numel() for t in model.parameters())
    print(f"code: {sys.modules['trainables.pixelcnnpp'].__file__}; {params} parameters; threads {torch.get_num_threads()}")
    rows = []
    for epoch in range(1, a.epochs + 1):
        stats = train_epoch(unit, epoch_batches(train, a.batch_size, a.noise_std, a.seed, epoch), epoch=epoch,
                            device="cpu")
        start = time.perf_counter()
        test_stats = evaluate_nll(unit, epoch_batches(test, 250, a.noise_std, a.seed, TEST_NOISE_EPOCH,
                                                      shuffle=False), device="cpu")
        row = {"epoch": epoch, "steps": epoch * -(-len(train) // a.batch_size),
               "train_bpd": stats.bpd(False), "test_bpd": test_stats.bpd(False),
               "train_images_per_s": stats.num_images / stats.seconds,
               "test_seconds": time.perf_counter() - start}
        rows.append(row)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "parameters": params, "epochs": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
