"""Test accuracy of the dataset classifiers trained from 5,000-image splits, as users hold them.

    OMP_NUM_THREADS=1 python benchmarks/bench_classifier_subsets.py [--setting fashion] [--setting mnist_halves]
        [--subsets 4] [--size 5000] [--set max_shift=1 ...] [--out results.jsonl] [--smoke-test]

Each run trains the classifier exactly as a study does (classifiers.load_classifier on a data
folder written here, into a fresh cache; min_accuracy 0 so nothing is refused) and reads the
test accuracy and the training record from the cache file it wrote.

- fashion: disjoint `--size`-image subsets of Debian's Fashion-MNIST training split
  (/usr/share/datasets/fashion-mnist; subset k = images k*size .. (k+1)*size-1 of a seed-0
  permutation), each tested on the full 10,000-image test split.
- mnist_halves: the real MNIST test split (../shared/data/mnist) cut in two by a seeded
  permutation (seed 0 is tests/idx_files.mnist_halves'); train on one half, test on the other,
  both ways; `--halvings N` repeats with seeds 0..N-1.

`--set key=value` overrides the product's ClassifierSpec fields (a variant to measure).
Prints one line per run and min/median/max per setting. Threads: OMP_NUM_THREADS (the product's
allowed_cpus() reads it; the study's trial gives it the trial's CPUs).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from trainables.idx import read_idx  # noqa: E402
from trainables.quality import classifiers as clf  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"  # beside the checkout
SETTINGS = ("fashion", "mnist_halves")
SPLIT_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def write_idx(path: Path, array: np.ndarray) -> None:
    """Uncompressed IDX: magic 0x00 0x00 0x08 ndim, big-endian uint32 sizes, the uint8 data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.tobytes())


def write_folder(folder: Path, train: tuple, test: tuple) -> Path:
    """A dataset folder as data.load_dataset reads it: (images (N, 28, 28), labels (N,)) per split."""
    folder.mkdir(parents=True)
    for split, (images, labels) in (("train", train), ("test", test)):
        write_idx(folder / SPLIT_FILES[split][0], images)
        write_idx(folder / SPLIT_FILES[split][1], labels)
    return folder


def read_split(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    return (read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"), read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz"))


def fashion_cases(subsets: int, size: int):
    """(name, train, test) for `subsets` disjoint training subsets and the full test split."""
    images, labels = read_split(FASHION_DIR, "train")  # (60000, 28, 28), (60000,)
    if subsets * size > len(images):
        raise SystemExit(f"bench_classifier_subsets: --subsets {subsets} x --size {size} exceeds the "
                         f"{len(images)} Fashion-MNIST training images")
    order = np.random.default_rng(0).permutation(len(images))
    test = read_split(FASHION_DIR, "t10k")
    for k in range(subsets):
        pick = order[k * size:(k + 1) * size]
        yield f"fashion subset {k}", "fashion_mnist", (images[pick], labels[pick]), test


def mnist_half_cases(halvings: int):
    """(name, train, test): each seeded halving of the 10k MNIST test split, both ways."""
    images, labels = read_split(SHARED_MNIST, "t10k")  # (10000, 28, 28), (10000,)
    half = len(images) // 2
    for seed in range(halvings):
        order = np.random.default_rng(seed).permutation(len(images))
        a, b = order[:half], order[half:]
        yield f"mnist halves seed {seed} A->B", "mnist", (images[a], labels[a]), (images[b], labels[b])
        yield f"mnist halves seed {seed} B->A", "mnist", (images[b], labels[b]), (images[a], labels[a])


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` strings -> ClassifierSpec fields typed like their defaults."""
    fields = {f.name: f for f in dataclasses.fields(clf.ClassifierSpec)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in fields or key in ("dataset", "widths"):
            raise SystemExit(f"bench_classifier_subsets: --set {pair!r}: expected key=value with key one of "
                             f"{sorted(set(fields) - {'dataset', 'widths'})}")
        kind = type(getattr(clf.CLASSIFIER_SPECS["mnist"], key))
        out[key] = kind(value)
    return out


def train_case(name: str, dataset: str, train: tuple, test: tuple, overrides: dict, scratch: Path) -> dict:
    """Train through load_classifier on a folder holding exactly `train` and `test`; the cache's record."""
    spec = dataclasses.replace(clf.CLASSIFIER_SPECS[dataset], min_accuracy=0.0, **overrides)
    folder = write_folder(scratch / name.replace(" ", "_").replace(">", ""), train, test)
    start = time.monotonic()
    trained = clf.load_classifier(dataset, data_dir=str(folder), cache_dir=folder / "cache", spec=spec,
                                  log=lambda line: None)
    payload = torch.load(trained.path, weights_only=True)
    record = payload["training"]
    return {"case": name, "dataset": dataset, "overrides": overrides, "num_train": payload["num_train"],
            "num_test": payload["num_test"], "test_accuracy": payload["test_accuracy"],
            "holdout_accuracy": record["holdout_accuracy"], "steps": record["steps"],
            "best_step": record["best_step"], "train_cpu_seconds": round(payload["train_cpu_seconds"], 1),
            "wall_seconds": round(time.monotonic() - start, 1), "threads": payload["train_threads"]}


def spread(values: list[float], fmt: str = ".4f") -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"min {low:{fmt}} median {mid:{fmt}} max {high:{fmt}} (n={len(values)})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", action="append", choices=SETTINGS, help="default: both")
    parser.add_argument("--subsets", type=int, default=4, help="fashion: disjoint training subsets")
    parser.add_argument("--size", type=int, default=5000, help="fashion: images per subset")
    parser.add_argument("--halvings", type=int, default=1, help="mnist_halves: seeded halvings (2 runs each)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="append one JSON line per run to this file")
    parser.add_argument("--smoke-test", action="store_true", help="2 fashion subsets of 500 images, 40 steps")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.overrides)
    settings = args.setting or list(SETTINGS)
    if args.smoke_test:
        settings, args.subsets, args.size = ["fashion"], 2, 500
        overrides = {"max_steps": 40, "eval_every": 20, **overrides}
    needs = {"fashion": FASHION_DIR / "train-images-idx3-ubyte.gz",
             "mnist_halves": SHARED_MNIST / "t10k-images-idx3-ubyte.gz"}
    for setting in settings:
        if not needs[setting].exists():
            raise SystemExit(f"bench_classifier_subsets: {setting} needs {needs[setting]}, which is absent")
    torch.set_num_threads(clf.allowed_cpus())
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for setting in settings:
            cases = fashion_cases(args.subsets, args.size) if setting == "fashion" else mnist_half_cases(args.halvings)
            for name, dataset, train, test in cases:
                row = train_case(name, dataset, train, test, overrides, Path(scratch))
                results.setdefault(setting, []).append(row)
                print(f"{name}: test accuracy {row['test_accuracy']:.4f} (held-out {row['holdout_accuracy']:.4f}) "
                      f"after {row['steps']} steps (best {row['best_step']}), {row['train_cpu_seconds']} CPU s "
                      f"on {row['threads']} thread(s)", flush=True)
                if args.out:
                    with open(args.out, "a") as handle:
                        handle.write(json.dumps(row) + "\n")
    print(f"spec overrides: {overrides or 'none (the product specs)'}")
    for setting, rows in results.items():
        print(f"{setting}: test accuracy {spread([r['test_accuracy'] for r in rows])}; "
              f"steps {spread([r['steps'] for r in rows], '.0f')}")


if __name__ == "__main__":
    main()
