"""Cost of the bootstrap standard error of the Frechet distance against the distance itself.

    python benchmarks/bench_uncertainty.py [--sizes 200x64,1000x64,200x2048] [--repeats 5]

Per size N x D: random Gaussian features against fixed reference statistics of a random
covariance; the best and the median of --repeats runs of `frechet_distance_se` (B = 200
resamples) and of one `frechet_distance` with its `feature_statistics`, and their ratio.
On a machine shared with other jobs set OMP_NUM_THREADS=1: numpy's BLAS threads otherwise
oversubscribe the cores and the batched eigendecompositions slow down by ~10x.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainables.quality.scores import feature_statistics, frechet_distance  # noqa: E402
from trainables.quality.uncertainty import FD_BOOTSTRAP_RESAMPLES, frechet_distance_se  # noqa: E402


def _times(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200x64,1000x64", help="comma-separated NxD")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"B = {FD_BOOTSTRAP_RESAMPLES}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    for size in args.sizes.split(","):
        n, dim = (int(v) for v in size.split("x"))
        features = rng.normal(size=(n, dim))                       # (N, D)
        a = rng.normal(size=(dim, dim)) / np.sqrt(dim)
        mu_ref, sigma_ref = np.zeros(dim), a @ a.T + 0.1 * np.eye(dim)
        boot = _times(lambda: frechet_distance_se(features, mu_ref, sigma_ref), args.repeats)
        plain = _times(lambda: frechet_distance(*feature_statistics(features), mu_ref, sigma_ref), args.repeats)
        print(f"{n} x {dim}: bootstrap SE best {boot[0]:.3f} s (median {boot[1]:.3f}); "
              f"one distance best {plain[0]:.4f} s (median {plain[1]:.4f}); ratio of bests {boot[0] / plain[0]:.0f}")


if __name__ == "__main__":
    main()
