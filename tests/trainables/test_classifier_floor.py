"""The classifiers pass their sanity floors from 5,000-image training splits, as users hold them
(issues 9, 21): MNIST trained on one half of the real MNIST test split and tested on the other
half; Fashion-MNIST trained on 5,000 images of Debian's training split and tested on its full
test split; and Fashion-MNIST on the full split (a few CPU minutes each; the spread over more
splits: benchmarks/bench_classifier_subsets.py, docs/science.md)."""
import os

import numpy as np
import pytest
import torch

from tests.idx_files import FASHION_DIR, write_split
from tests.required import skip_unless_required
from trainables.idx import read_idx
from trainables.quality import classifiers as clf

USER_SPLIT = 5000  # training images a user of the issue held

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1200)
def test_mnist_classifier_reaches_its_floor_from_5000_images(mnist_halves_dir, real_data_cache_dir):
    lines = []
    trained = clf.load_classifier("mnist", data_dir=str(mnist_halves_dir), cache_dir=real_data_cache_dir,
                                  log=lines.append)  # raises ClassifierAccuracyError below the floor
    payload = torch.load(trained.path, weights_only=True)
    record = payload["training"]
    spec = clf.CLASSIFIER_SPECS["mnist"]
    assert payload["num_train"] == 5000 and payload["num_test"] == 5000
    assert (record["num_train"], record["num_holdout"]) == (4500, 500)
    assert trained.test_accuracy >= spec.min_accuracy
    assert 0 < record["best_step"] <= record["steps"] <= spec.max_steps
    print(f"\nmnist_cnn from 5000 real MNIST images: test accuracy {trained.test_accuracy:.4f} after "
          f"{record['steps']} steps (best {record['best_step']}), {payload['train_seconds']:.0f} s wall, "
          f"{payload['train_cpu_seconds']:.0f} CPU s on {payload['train_threads']} thread(s)")


def _require_fashion() -> None:
    if not os.path.exists(f"{FASHION_DIR}/train-images-idx3-ubyte.gz"):
        skip_unless_required("fashion-mnist", f"Debian's dataset-fashion-mnist is not installed ({FASHION_DIR})")


@pytest.mark.timeout(1200)
def test_fashion_classifier_passes_its_floor_from_5000_training_images(tmp_path, real_data_cache_dir):
    _require_fashion()
    images = read_idx(f"{FASHION_DIR}/train-images-idx3-ubyte.gz")  # (60000, 28, 28)
    labels = read_idx(f"{FASHION_DIR}/train-labels-idx1-ubyte.gz")
    pick = np.random.default_rng(0).permutation(len(images))[:USER_SPLIT]  # the benchmark's subset 0
    write_split(tmp_path, "train", images[pick], labels[pick])
    write_split(tmp_path, "t10k", read_idx(f"{FASHION_DIR}/t10k-images-idx3-ubyte.gz"),
                read_idx(f"{FASHION_DIR}/t10k-labels-idx1-ubyte.gz"))
    trained = clf.load_classifier("fashion_mnist", data_dir=str(tmp_path), cache_dir=real_data_cache_dir,
                                  log=lambda line: None)  # raises ClassifierAccuracyError below the floor
    payload = torch.load(trained.path, weights_only=True)
    record = payload["training"]
    assert (record["num_train"], record["num_holdout"], payload["num_test"]) == (4500, 500, 10000)
    assert trained.test_accuracy >= clf.CLASSIFIER_SPECS["fashion_mnist"].min_accuracy
    assert payload["weights_sha256"] == trained.weights_sha == clf.weights_sha256(payload["state_dict"])
    print(f"\nfashion_mnist_cnn from {USER_SPLIT} Fashion-MNIST training images: test accuracy "
          f"{trained.test_accuracy:.4f} after {record['steps']} steps, {payload['train_cpu_seconds']:.0f} CPU s")


@pytest.mark.timeout(1200)
def test_fashion_classifier_reaches_its_floor_on_the_full_split(real_data_cache_dir):
    _require_fashion()
    trained = clf.load_classifier("fashion_mnist", data_dir=FASHION_DIR, cache_dir=real_data_cache_dir,
                                  log=lambda line: None)  # raises ClassifierAccuracyError below the floor
    payload = torch.load(trained.path, weights_only=True)
    record = payload["training"]
    assert (record["num_train"], record["num_holdout"], payload["num_test"]) == (55000, 5000, 10000)
    assert trained.test_accuracy >= clf.CLASSIFIER_SPECS["fashion_mnist"].min_accuracy
    print(f"\nfashion_mnist_cnn on Debian's split: test accuracy {trained.test_accuracy:.4f} after "
          f"{record['steps']} steps, {payload['train_seconds']:.0f} s wall, "
          f"{payload['train_cpu_seconds']:.0f} CPU s on {payload['train_threads']} thread(s)")
