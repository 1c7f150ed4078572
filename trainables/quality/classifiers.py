"""A small CNN trained on a dataset's own training split: the offline feature extractor.

Penultimate-layer activations give the Frechet-distance features, the softmax gives
the Inception-Score probabilities. The network is trained once per content hash
(training and test data, architecture, hyperparameters), cached under the cache dir
with its test accuracy, and refused when that accuracy is below the spec's threshold:
a metric computed with a poor classifier would be noise with a trustworthy name.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.cache_files import atomic_write, resolve_cache_dir, sha256_of_arrays
from trainables.data import IMAGE_SHAPES, load_dataset

CACHE_FORMAT = 2  # bump when the payload or the training procedure changes meaning
NUM_CLASSES = 10  # every supported dataset has 10 classes


class ClassifierAccuracyError(RuntimeError):
    """The cached or freshly trained classifier is below its stated test accuracy."""


@dataclass(frozen=True)
class ClassifierSpec:
    dataset: str                    # whose training split it learns; also fixes the input shape
    widths: tuple = (32, 64)        # channels of the two conv blocks
    feature_dim: int = 64           # penultimate width = dimension of the Frechet-distance features
    epochs: int = 15                # passes over the training split
    batch_size: int = 64            # images per Adam step
    lr: float = 2e-3                # Adam learning rate
    weight_decay: float = 1e-4      # L2 penalty (AdamW-style decoupled)
    seed: int = 0                   # seeds initialization and data order
    train_device: str = "cpu"       # "cpu": one thread (weights independent of the core count);
                                    # "auto": the caller's device (CPU is too slow for big sets)
    min_accuracy: float = 0.95      # refuse to serve below this test accuracy (not part of the hash)

    def hashed_fields(self) -> dict:
        """Everything that changes the trained weights; min_accuracy only gates serving."""
        fields = dataclasses.asdict(self)
        fields.pop("min_accuracy")
        fields["widths"] = list(self.widths)
        return fields


# The stated accuracy floors. Digits and MNIST are easy for this network (~98-99%);
# Fashion-MNIST and CIFAR-10 floors sit a few points under what it reaches without
# augmentation. Only digits is exercised offline; the others need their training split.
CLASSIFIER_SPECS = {
    "digits": ClassifierSpec("digits", epochs=15, batch_size=64, min_accuracy=0.95),  # ~98% in ~5 s on CPU
    "mnist": ClassifierSpec("mnist", epochs=3, batch_size=128, lr=1e-3, min_accuracy=0.98, train_device="auto"),
    "fashion_mnist": ClassifierSpec("fashion_mnist", epochs=8, batch_size=128, lr=1e-3, min_accuracy=0.88,
                                    train_device="auto"),
    "cifar10": ClassifierSpec("cifar10", widths=(64, 128), feature_dim=128, epochs=15, batch_size=128,
                              lr=1e-3, min_accuracy=0.70, train_device="auto"),
}


class SmallCNN(nn.Module):
    """Two conv blocks, a pooled linear layer (the features) and a ReLU + linear head.

    (N, C, H, W) -> block 1 (N, w1, H/2, W/2) -> block 2 (N, w2, H/4, W/4)
    -> adaptive average pool to 2x2 (N, 4 w2) -> features (N, F) -> ReLU -> logits (N, 10).
    The features are the penultimate layer's pre-activations: in three digits trainings
    their distance to noisy (sigma 0.5) digits, relative to the clean train-vs-test
    distance, was 1.4-1.9x that of the post-ReLU values, which zero out information.
    No batch norm or dropout, so train and eval mode compute the same function.
    """

    def __init__(self, in_channels: int, widths: tuple, feature_dim: int, num_classes: int = NUM_CLASSES):
        super().__init__()
        w1, w2 = widths

        def conv(cin: int, cout: int) -> nn.Module:
            return nn.Conv2d(cin, cout, kernel_size=3, padding=1)

        self.body = nn.Sequential(
            conv(in_channels, w1), nn.ReLU(), conv(w1, w1), nn.ReLU(), nn.MaxPool2d(2),
            conv(w1, w2), nn.ReLU(), conv(w2, w2), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(4 * w2, feature_dim),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, num_classes))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)  # (N, F), penultimate pre-activations
        return features, self.head(features)  # (N, F), (N, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]


@dataclass
class TrainedClassifier:
    model: SmallCNN                 # in eval mode, on the requested device, no grad
    spec: ClassifierSpec
    test_accuracy: float            # on the dataset's full test split
    content_hash: str               # sha256 of data + architecture + hyperparameters
    path: Path                      # the cache file it came from

    @property
    def extractor_id(self) -> str:
        return f"{self.spec.dataset}_cnn"


def _build(spec: ClassifierSpec) -> SmallCNN:
    return SmallCNN(IMAGE_SHAPES[spec.dataset][0], tuple(spec.widths), spec.feature_dim)


def content_hash(spec: ClassifierSpec, train, test) -> str:
    """sha256 of the cache format, hyperparameters, and the train/test images and labels."""
    arrays = [t.numpy() for t in (*train, *test)]  # images (N, C, H, W) float32, labels (N,) int64
    header = json.dumps({"format": CACHE_FORMAT, "spec": spec.hashed_fields()}, sort_keys=True)
    return hashlib.sha256((header + sha256_of_arrays(*arrays)).encode()).hexdigest()


@contextlib.contextmanager
def _threads(count: int):
    """Temporarily run torch's CPU ops on `count` threads (the reduction order, hence the
    trained weights, depends on the thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.enable_grad()  # callers may be inside no_grad (sample evaluation triggers the first training)
def _train(spec: ClassifierSpec, images, labels, device: torch.device, log: Callable) -> SmallCNN:
    """AdamW on cross-entropy; seeded init and order, global RNG state left untouched."""
    if spec.train_device == "cpu":
        with _threads(1):
            return _train_loop(spec, images, labels, torch.device("cpu"), log)
    return _train_loop(spec, images, labels, device, log)


def _train_loop(spec: ClassifierSpec, images, labels, device: torch.device, log: Callable) -> SmallCNN:
    with torch.random.fork_rng(devices=[]):  # do not disturb the calling trial's CPU RNG
        torch.manual_seed(spec.seed)
        model = _build(spec)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    order_gen = torch.Generator().manual_seed(spec.seed)
    start, report_every = time.monotonic(), max(1, spec.epochs // 5)
    for epoch in range(1, spec.epochs + 1):
        order = torch.randperm(len(images), generator=order_gen)
        total, count = 0.0, 0
        for begin in range(0, len(images), spec.batch_size):
            idx = order[begin: begin + spec.batch_size]
            x, y = images[idx].to(device), labels[idx].to(device)  # (B, C, H, W), (B,)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        if epoch % report_every == 0 or epoch == spec.epochs:
            log(f"{spec.dataset}_cnn: epoch {epoch}/{spec.epochs} train loss {total / count:.4f} "
                f"({time.monotonic() - start:.1f} s)")
    return model.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(model: SmallCNN, images, labels, device: torch.device, batch_size: int = 1024) -> float:
    """Fraction of images (N, C, H, W) whose argmax logit equals the label (N,)."""
    correct = 0
    for begin in range(0, len(images), batch_size):
        logits = model(images[begin: begin + batch_size].to(device))
        correct += int((logits.argmax(dim=1).cpu() == labels[begin: begin + batch_size]).sum())
    return correct / len(images)


def _load_cached(path: Path, expected_hash: str, spec: ClassifierSpec, log: Callable) -> Optional[dict]:
    """The cached payload if it exists, matches the hash and loads; else None (with a warning)."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("content_hash") != expected_hash:
            raise ValueError("content hash in the file differs from its name")
        model = _build(spec)
        model.load_state_dict(payload["state_dict"])
    except Exception as err:  # truncated, foreign or stale file: retrain and overwrite
        warnings.warn(f"ignoring unreadable classifier cache {path} ({type(err).__name__}: {err}); retraining")
        return None
    payload["model"] = model.eval().requires_grad_(False)
    log(f"{spec.dataset}_cnn: loaded {path.name} (test accuracy {payload['test_accuracy']:.4f})")
    return payload


def _train_and_store(spec: ClassifierSpec, train, test, digest: str, path: Path,
                     device: torch.device, log: Callable) -> dict:
    if spec.train_device == "cpu":
        device = torch.device("cpu")
    log(f"{spec.dataset}_cnn: training on {len(train[0])} {spec.dataset} train images "
        f"(hash {digest[:12]}, {spec.epochs} epochs, device {device})")
    start = time.monotonic()
    model = _train(spec, *train, device, log)
    test_accuracy = accuracy(model, *test, device)
    payload = {
        "format": CACHE_FORMAT,
        "content_hash": digest,
        "spec": json.dumps(dataclasses.asdict(spec)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "test_accuracy": float(test_accuracy),
        "num_train": len(train[0]),
        "num_test": len(test[0]),
        "train_seconds": time.monotonic() - start,
        "train_device": str(device),
    }
    atomic_write(path, lambda handle: torch.save(payload, handle))
    log(f"{spec.dataset}_cnn: test accuracy {test_accuracy:.4f} after {payload['train_seconds']:.1f} s, "
        f"cached at {path}")
    payload["model"] = model.cpu()
    return payload


def load_classifier(dataset: str, *, data_dir: Optional[str] = None, cache_dir=None,
                    device: Optional[torch.device] = None, log: Callable = print,
                    spec: Optional[ClassifierSpec] = None) -> TrainedClassifier:
    """The dataset's classifier from the cache, trained first where missing.

    Raises ClassifierAccuracyError when its recorded test accuracy is below
    spec.min_accuracy (the accuracy stays cached, so the refusal is cheap next time).
    """
    if spec is None:
        if dataset not in CLASSIFIER_SPECS:
            raise ValueError(f"no classifier spec for dataset {dataset!r}; known: {sorted(CLASSIFIER_SPECS)}")
        spec = CLASSIFIER_SPECS[dataset]
    if spec.dataset != dataset:
        raise ValueError(f"spec is for {spec.dataset!r}, not {dataset!r}")
    device = torch.device(device or "cpu")
    train = load_dataset(dataset, "train", data_dir, with_labels=True)
    test = load_dataset(dataset, "test", data_dir, with_labels=True)
    digest = content_hash(spec, train, test)
    path = resolve_cache_dir(cache_dir) / "classifiers" / f"{dataset}_cnn-{digest[:16]}.pt"
    payload = _load_cached(path, digest, spec, log) or _train_and_store(spec, train, test, digest, path, device, log)
    if payload["test_accuracy"] < spec.min_accuracy:
        raise ClassifierAccuracyError(
            f"{dataset}_cnn has test accuracy {payload['test_accuracy']:.4f} < required {spec.min_accuracy:.2f} "
            f"({path}); its features would not measure sample quality. Delete the file to retrain, or "
            f"choose another extractor."
        )
    return TrainedClassifier(payload["model"].to(device), spec, payload["test_accuracy"], digest, path)
