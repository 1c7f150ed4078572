"""The MNIST classifier reaches its stated floor from 5,000 real training images (issue 9):
trained on one half of the real MNIST test split, tested on the other half; the Fashion-MNIST
classifier reaches its floor on Debian's full split (about two minutes each on 2 quiet cores)."""
import os

import pytest
import torch

from tests.idx_files import FASHION_DIR
from tests.required import skip_unless_required
from trainables.quality import classifiers as clf

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


@pytest.mark.timeout(1200)
def test_fashion_classifier_reaches_its_floor_on_the_full_split(real_data_cache_dir):
    if not os.path.exists(f"{FASHION_DIR}/train-images-idx3-ubyte.gz"):
        skip_unless_required("fashion-mnist", f"Debian's dataset-fashion-mnist is not installed ({FASHION_DIR})")
    trained = clf.load_classifier("fashion_mnist", data_dir=FASHION_DIR, cache_dir=real_data_cache_dir,
                                  log=lambda line: None)  # raises ClassifierAccuracyError below the floor
    payload = torch.load(trained.path, weights_only=True)
    record = payload["training"]
    assert (record["num_train"], record["num_holdout"], payload["num_test"]) == (55000, 5000, 10000)
    assert trained.test_accuracy >= clf.CLASSIFIER_SPECS["fashion_mnist"].min_accuracy
    print(f"\nfashion_mnist_cnn on Debian's split: test accuracy {trained.test_accuracy:.4f} after "
          f"{record['steps']} steps, {payload['train_seconds']:.0f} s wall, "
          f"{payload['train_cpu_seconds']:.0f} CPU s on {payload['train_threads']} thread(s)")
