"""The names of the sample-quality metrics, the one definition every package imports.

A sample-quality metric names what it measures and with what (docs/architecture.md):
`fd_<E>[_<S>]` is the Frechet distance in feature extractor E's features
(`fid_inception[_<S>]` for the standard TF-Inception weights), `is_<E>[_<S>]` and
`is_<E>[_<S>]_std` the Inception Score with E's classifier, for samples of sampler S
(none: the trial's product samples); S may also be a diagnostic (DIAGNOSTICS, distances
only). Plain data and functions, no torch: `study` resolves objectives with them,
`trainables` names what it logs, `analysis` parses what it reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# Feature extractor ids (trainables/quality/extractors.py: EXTRACTORS holds a factory for each).
EXTRACTOR_IDS = ("inception", "digits_cnn", "mnist_cnn", "fashion_mnist_cnn", "cifar10_cnn")
# celeba and folder have no 10-class labels to train a classifier on: TF-Inception, as for CIFAR-10
# and as the literature reports FID on CelebA (its weights file must be at hand offline).
DEFAULT_EXTRACTORS = {"digits": "digits_cnn", "mnist": "mnist_cnn", "fashion_mnist": "fashion_mnist_cnn",
                      "cifar10": "inception", "celeba": "inception", "folder": "inception"}
# One id can name several networks (mnist_cnn trained on another training split, or on other
# hardware): these run tags name the exact one a trial's distances come from, its weights' sha256
# (16 hex digits) and a classifier's test accuracy (trainables/quality/extractors.py: extractor_tags);
# analysis compares distances only between trials with the same extractor_sha.
EXTRACTOR_SHA_TAG, EXTRACTOR_ACCURACY_TAG = "extractor_sha", "extractor_accuracy"
EXTRACTOR_TAGS = (EXTRACTOR_SHA_TAG, EXTRACTOR_ACCURACY_TAG)
SAMPLERS = ("onestep", "twostep", "direct")  # order of columns and rows; "" = the product samples
PRODUCT_SAMPLER = {"baseline": "direct", "smoothed": "twostep"}  # what `fd_E`/`is_E` repeat per kind
FAMILIES = ("distance", "score")
# Diagnostics of a smoothed trial (trainables/quality/diagnostics.py): which of its two models is at
# fault. Each is a distance `fd_<E>_<D>` (`fid_inception_<D>`) with its `_se`; x~ = x + sigma * eps of
# a fixed seeded choice of real test images and a fixed eps, the same in every trial at one sigma.
DIAGNOSTICS = {
    "realnoisy": "the real x~ themselves vs the clean test split: the floor, what the noise alone costs",
    "onestep_realnoisy": "one-step (gradient) denoising of the real x~ vs the clean test split: p(x~)'s score "
                         "on real input",
    "twostep_realnoisy": "the denoiser's samples given the real x~ vs the clean test split: p(x | x~) on real "
                         "input",
    "xtilde": "the smoothed model's own samples x~ (two-step's first step) vs real noisy test images at the "
              "same sigma: p(x~) alone",
}
# Suffixes a sample-quality name may end with, longest match first (`onestep_realnoisy` before `onestep`).
_SUFFIXES = tuple(sorted((*SAMPLERS, *DIAGNOSTICS), key=len, reverse=True))


def default_extractor(dataset: str) -> str:
    """The extractor id a dataset uses when none is configured."""
    if dataset not in DEFAULT_EXTRACTORS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {sorted(DEFAULT_EXTRACTORS)}")
    return DEFAULT_EXTRACTORS[dataset]


def sample_metric_name(family: str, extractor: str, sampler: str = "") -> str:
    """The metric name of (family distance | score, extractor id, sampler or "")."""
    if family == "distance":
        base = "fid_inception" if extractor == "inception" else f"fd_{extractor}"
    elif family == "score":
        base = f"is_{extractor}"
    else:
        raise ValueError(f"family must be distance or score, got {family!r}")
    return f"{base}_{sampler}" if sampler else base


def metric_names(extractor_id: str, sampler: str = "") -> dict[str, str]:
    """Metric names of one extractor (and optionally one sampler: direct | onestep | twostep).

    {"distance": "fid_inception" | "fd_<id>", "score": "is_<id>", "score_std": "is_<id>_std"},
    each followed by "_<sampler>" where a sampler is given.
    """
    if extractor_id not in EXTRACTOR_IDS:
        raise ValueError(f"unknown feature extractor {extractor_id!r}; valid: {sorted(EXTRACTOR_IDS)}")
    names = {family: sample_metric_name(family, extractor_id, sampler) for family in FAMILIES}
    return {**names, "score_std": names["score"] + "_std"}


def diagnostic_names(extractor_id: str) -> dict[str, str]:
    """{diagnostic: its distance's name} of one extractor, e.g. "xtilde" -> "fd_digits_cnn_xtilde"."""
    return {d: metric_names(extractor_id, d)["distance"] for d in DIAGNOSTICS}


@dataclass(frozen=True)
class SampleMetric:
    """A parsed sample-quality metric name: `fd_<E>[_<S>]`, `fid_inception[_<S>]`, `is_<E>[_<S>]`."""
    family: str      # "distance" | "score"
    extractor: str   # feature extractor id, e.g. digits_cnn, inception
    sampler: str     # onestep | twostep | direct | "" (the trial's product samples) | a key of DIAGNOSTICS

    @property
    def name(self) -> str:
        return sample_metric_name(self.family, self.extractor, self.sampler)


SE_SUFFIX = "_se"  # the standard error of a metric: `fd_digits_cnn_twostep` -> `fd_digits_cnn_twostep_se`


def standard_error_name(metric: str) -> str:
    """The name of a sample-quality metric's standard error (the suffix goes last, after the sampler)."""
    return f"{metric}{SE_SUFFIX}"


def standard_error_of(name: str) -> Optional[str]:
    """The sample-quality metric whose standard error `name` is (`fd_E_S_se` -> `fd_E_S`), else None."""
    if not name.endswith(SE_SUFFIX):
        return None
    base = name[: -len(SE_SUFFIX)]
    return base if parse_sample_metric(base) is not None else None


def parse_sample_metric(name: str) -> Optional[SampleMetric]:
    """SampleMetric of a sample-quality metric name; None for any other name (and for `is_*_std`, `*_se`)."""
    if name.endswith(SE_SUFFIX):
        return None
    if name.startswith("fid_inception"):
        family, rest = "distance", "inception" + name[len("fid_inception"):]
    elif name.startswith("fd_"):
        family, rest = "distance", name[3:]
    elif name.startswith("is_"):
        family, rest = "score", name[3:]
    else:
        return None
    if rest.endswith("_std") or not rest:
        return None
    sampler = ""
    for candidate in _SUFFIXES:
        if rest.endswith(f"_{candidate}"):
            sampler, rest = candidate, rest[: -len(candidate) - 1]
            break
    if family == "distance" and rest == "inception" and not name.startswith("fid_"):
        return None  # `fd_inception` is not a name: Inception distances are `fid_inception`
    return SampleMetric(family, rest, sampler) if rest else None
