"""Feature extractors for the Frechet distance and the Inception Score, by id.

An extractor maps images (B, C, H, W) in [-1, 1] to features (B, D) for the distance
and class probabilities (B, K) for the score. Its id is part of every metric name
(`search_spaces.metric_names`), so numbers of different extractors never share a name:

- `inception`: the TF-ported Inception-v3 of the literature through torch-fidelity
  (2048-d pool features, softmax of the 1008 bias-free logits as torch-fidelity's IS
  uses). Names `fid_inception`, `is_inception`, reserved for the standard weights file.
- `<dataset>_cnn`: a small CNN trained on that dataset's training split
  (`trainables/quality/classifiers.py`), for offline use. Names `fd_<id>`, `is_<id>`.

One id can stand for several networks: `mnist_cnn` trained on another training split (or
on other hardware) is another extractor with the same id. `extractor_tags` names the exact
one (`extractor_sha`: its weights; `extractor_accuracy`: a classifier's test accuracy); each
trial's MLflow run carries them, and analysis refuses to compare distances across them.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from search_spaces.metric_names import EXTRACTOR_ACCURACY_TAG, EXTRACTOR_SHA_TAG, default_extractor
from trainables.cache_files import INCEPTION_WEIGHTS_ENV_VAR, sha256_of_file
from trainables.quality.classifiers import load_classifier

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"
INCEPTION_WEIGHTS_FLAG = "--inception-weights"


@dataclass(frozen=True)
class FeatureExtractor:
    id: str                 # the id in the metric names
    fingerprint: str        # sha256 identifying the weights; keys the reference-statistics cache
    feature_dim: int        # D
    num_classes: int        # K
    device: torch.device    # where `compute` wants its input
    compute: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # (B,C,H,W) in [-1,1] -> (B,D), (B,K)
    accuracy: Optional[float] = None  # a dataset classifier's test accuracy; None for Inception

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return self.compute(images.to(self.device))


def build_extractor(extractor_id: str, dataset: str, *, data_dir: Optional[str] = None, cache_dir=None,
                    device=None, log: Callable = print, inception_weights: Optional[str] = None) -> FeatureExtractor:
    """Construct extractor `extractor_id` for images of `dataset` (registry: EXTRACTORS)."""
    if extractor_id not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {extractor_id!r}; valid: {sorted(EXTRACTORS)}")
    device = torch.device(device or "cpu")
    return EXTRACTORS[extractor_id](dataset, data_dir=data_dir, cache_dir=cache_dir, device=device, log=log,
                                    inception_weights=inception_weights)


def run_extractor(extractor: FeatureExtractor, images: torch.Tensor, *, batch_size: int = 256,
                  log: Callable = print, what: str = "images", progress_every_s: float = 10.0):
    """Features (N, D) and probabilities (N, K), float64 numpy, of images (N, C, H, W) in [-1, 1].

    Batches of `batch_size` go to the extractor's device; a progress line is logged at most
    every `progress_every_s` seconds, and a final one when the run took longer than that.
    """
    features, probs = [], []
    start = last = time.monotonic()
    for begin in range(0, len(images), batch_size):
        f, p = extractor(images[begin: begin + batch_size])  # (B, D), (B, K)
        features.append(f.double().cpu().numpy())
        probs.append(p.double().cpu().numpy())
        now = time.monotonic()
        if now - last >= progress_every_s:
            done = min(begin + batch_size, len(images))
            log(f"{extractor.id}: {done}/{len(images)} {what} ({now - start:.0f} s)")
            last = now
    if last != start:
        log(f"{extractor.id}: {len(images)} {what} done in {time.monotonic() - start:.1f} s")
    return np.concatenate(features), np.concatenate(probs)


def extractor_tags(extractor: FeatureExtractor) -> dict[str, str]:
    """The MLflow tags naming exactly this extractor: {extractor_sha, extractor_accuracy (classifiers)}."""
    tags = {EXTRACTOR_SHA_TAG: extractor.fingerprint[:16]}
    if extractor.accuracy is not None:
        tags[EXTRACTOR_ACCURACY_TAG] = f"{extractor.accuracy:.4f}"
    return tags


def trial_extractor_tags(extractor_id: str, dataset: str, *, data_dir: Optional[str] = None,
                         inception_weights: Optional[str] = None) -> dict[str, str]:
    """extractor_tags of the extractor a trial's evaluation uses ("" id: the dataset's default),
    built on the CPU from the same cache (after the trial's first evaluation: a cache hit)."""
    extractor = build_extractor(extractor_id or default_extractor(dataset), dataset, data_dir=data_dir,
                                device="cpu", log=lambda line: None, inception_weights=inception_weights)
    return extractor_tags(extractor)


# --- dataset classifiers ---------------------------------------------------------------

def _classifier_extractor(trained_on: str, dataset: str, *, data_dir, cache_dir, device, log,
                          inception_weights) -> FeatureExtractor:
    del inception_weights  # uniform factory signature; a classifier has its own weights
    if dataset != trained_on:
        alternatives = sorted({default_extractor(dataset), "inception"})
        raise ValueError(f"{trained_on}_cnn scores {trained_on} images only, not {dataset}; "
                         f"use {' or '.join(repr(a) for a in alternatives)}")
    classifier = load_classifier(dataset, data_dir=data_dir, cache_dir=cache_dir, device=device, log=log)
    model = classifier.model

    def compute(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, logits = model.features_and_logits(images)  # (B, F), (B, 10)
        return features, torch.softmax(logits.double(), dim=1)

    return FeatureExtractor(classifier.extractor_id, classifier.weights_sha, classifier.spec.feature_dim,
                            model.head[-1].out_features, device, compute, classifier.test_accuracy)


# --- Inception-v3 (torch-fidelity) -------------------------------------------------------

def resolve_inception_weights(path: Optional[str] = None) -> Path:
    """The weights file: `path` (CLI flag), else $SMOOTHING_STUDY_INCEPTION_WEIGHTS, else the
    torch hub cache, downloading it there where the network allows.

    Raises FileNotFoundError naming the file and the three places it can go.
    """
    chosen = path or os.environ.get(INCEPTION_WEIGHTS_ENV_VAR)
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    if chosen:
        if Path(chosen).is_file():
            return Path(chosen)
        raise FileNotFoundError(_missing_weights_message(f"{chosen} does not exist", hub_file))
    if hub_file.is_file():
        return hub_file
    try:
        _download(INCEPTION_WEIGHTS_URL, hub_file)
    except Exception as err:  # no network, proxy, unwritable cache
        raise FileNotFoundError(_missing_weights_message(f"download failed: {type(err).__name__}: {err}",
                                                         hub_file)) from err
    return hub_file


def _download(url: str, destination: Path) -> None:
    """torch.hub's downloader writes a temporary file and moves it into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(destination), progress=False)


def _missing_weights_message(reason: str, hub_file: Path) -> str:
    return (
        f"Inception-v3 weights file {INCEPTION_WEIGHTS_FILE} not available ({reason}). "
        f"Fetch it from {INCEPTION_WEIGHTS_URL} and either put it at {hub_file}, "
        f"or set {INCEPTION_WEIGHTS_ENV_VAR}=/path/to/{INCEPTION_WEIGHTS_FILE}, "
        f"or pass {INCEPTION_WEIGHTS_FLAG} /path/to/{INCEPTION_WEIGHTS_FILE}. "
        f"Offline alternative: a dataset classifier extractor such as 'digits_cnn' (metrics fd_*/is_*)."
    )


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> (B, 3, H, W) uint8 0..255, grey repeated to 3 channels.

    Inverts data.py's x = v / 127.5 - 1 exactly (rounding absorbs float error), which is
    the input torch-fidelity's Inception expects (it resizes to 299 and rescales itself).
    """
    levels = torch.round((images.clamp(-1.0, 1.0) + 1.0) * 127.5).to(torch.uint8)
    if levels.shape[1] == 1:
        levels = levels.repeat(1, 3, 1, 1)
    if levels.shape[1] != 3:
        raise ValueError(f"Inception needs 1 or 3 channels, got {tuple(images.shape)}")
    return levels


def _inception_extractor(dataset: str, *, data_dir, cache_dir, device, log, inception_weights) -> FeatureExtractor:
    del dataset, data_dir, cache_dir  # one network for every dataset
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = resolve_inception_weights(inception_weights)
    # torch-fidelity unpickles the file with weights_only=False; refuse anything that is not
    # a plain tensor dict before it gets there.
    torch.load(path, map_location="cpu", weights_only=True)
    fingerprint = sha256_of_file(path)
    log(f"inception: weights {path} (sha256 {fingerprint[:12]})")
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(path)).to(device)

    def compute(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, logits = net(to_uint8_rgb(images))  # (B, 2048), (B, 1008)
        return features, torch.softmax(logits.double(), dim=1)

    return FeatureExtractor("inception", fingerprint, 2048, 1008, device, compute)


# id -> factory(dataset, *, data_dir, cache_dir, device, log, inception_weights) -> FeatureExtractor;
# the ids are search_spaces.metric_names.EXTRACTOR_IDS (tests/search_spaces/test_metric_names.py).
EXTRACTORS = {
    "inception": _inception_extractor,
    "digits_cnn": functools.partial(_classifier_extractor, "digits"),
    "mnist_cnn": functools.partial(_classifier_extractor, "mnist"),
    "fashion_mnist_cnn": functools.partial(_classifier_extractor, "fashion_mnist"),
    "cifar10_cnn": functools.partial(_classifier_extractor, "cifar10"),
}