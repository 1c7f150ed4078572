"""Time to score generated digits and the sanity distances of the digits classifier.

    python benchmarks/bench_sample_quality.py [--num-samples 1000] [--cache-dir DIR] [--device cpu]

Stand-ins for generated samples are real training digits with Gaussian noise
(sigma 0.1 for the timing). A fresh temporary cache is used unless --cache-dir is
given, so the first ("cold") run includes training the classifier and the reference
statistics; the "warm" runs are what a trial pays at each evaluation.
`--smoke-test` scores 100 samples once (seconds).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainables.quality.classifiers import load_classifier  # noqa: E402
from trainables.data import load_dataset  # noqa: E402
from trainables.quality.evaluate import evaluate_samples  # noqa: E402

NOISE_LEVELS = (0.1, 0.2, 0.3, 0.5, 1.0)  # sigma on the [-1, 1] scale


def _stand_ins(train: torch.Tensor, n: int, sigma: float, seed: int = 0) -> torch.Tensor:
    """n real training digits (cycled when n > 1438) plus sigma * N(0, I); (n, 1, 8, 8)."""
    idx = torch.arange(n) % len(train)
    eps = torch.randn((n, *train.shape[1:]), generator=torch.Generator().manual_seed(seed))
    return train[idx] + sigma * eps


def _timed(fn, repeats: int) -> tuple[float, dict]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="warm timings: best of this many")
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args(argv)
    n, repeats = (100, 1) if args.smoke_test else (args.num_samples, args.repeats)
    with tempfile.TemporaryDirectory() as scratch:
        cache_dir = args.cache_dir or scratch
        quiet = lambda _: None  # noqa: E731
        train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
        samples = _stand_ins(train, n, 0.1)

        def score(images):
            return evaluate_samples(images, "digits", cache_dir=cache_dir, device=args.device, log=quiet)

        cold, _ = _timed(lambda: score(samples), 1)
        warm, _ = _timed(lambda: score(samples), repeats)
        print(f"scoring {n} digits: cold {cold:.2f} s (classifier + reference stats if not cached), "
              f"warm {warm:.3f} s (best of {repeats}), device {args.device}, torch threads {torch.get_num_threads()}")
        classifier = load_classifier("digits", cache_dir=cache_dir, log=quiet)
        real_test = score(test)
        print(f"digits_cnn test accuracy {classifier.test_accuracy:.4f}; on real test digits (n=359): "
              f"is_digits_cnn {real_test['is_digits_cnn']:.3f} +- {real_test['is_digits_cnn_std']:.3f}")
        print("fd_digits_cnn against the real test split (359 images):")
        print(f"  real train digits (n={len(train)}): {score(train)['fd_digits_cnn']:.2f}")
        for sigma in NOISE_LEVELS:
            noisy = score(_stand_ins(train, len(train), sigma))
            print(f"  train digits + noise sigma {sigma}: fd {noisy['fd_digits_cnn']:.2f}, "
                  f"is {noisy['is_digits_cnn']:.3f}")


if __name__ == "__main__":
    main()
