"""The MNIST classifier reaches its stated floor from 5,000 real training images (issue 9):
trained on one half of the real MNIST test split, tested on the other half."""
import pytest
import torch

from trainables.quality import classifiers as clf

pytestmark = pytest.mark.slow  # one to two minutes on 2 quiet cores


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
