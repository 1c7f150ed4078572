"""The study's search spaces (Meng et al., ICLR 2021, "Improved autoregressive
modeling with distribution smoothing").

noise_std is on the [-1, 1] data scale, as in the paper (CIFAR-10 sigma = 0.3,
MNIST sigma = 0.5).

The sigma = 0 baseline of `noise_sweep` is a reference trial, not a point of the
Optuna search: it is a different model (discretized likelihood, no denoiser), so
telling TPE about it would put a sigma = 0 observation outside the searched range
[0.1, 0.8] and bias the density estimate toward the boundary. It runs as its own Tune
trial beside the search and is reported next to it.
"""
from __future__ import annotations

from search_spaces.domains import Float, Int, SearchSpace

BASELINE = {"kind": "baseline", "noise_std": 0.0}

# The authors' setup (Sec. 5 and their code, chenlin9/Autoregressive-Modeling-with-Distribution-
# Smoothing: configs/pixelcnnpp_{smoothed,conditioned}_train_{mnist,cifar10}.yml, pixelcnnpp/
# layers.py, runners/pixelcnnpp_conditioned_train_runner.py): 5 resnets per stage, 10 mixtures,
# 160 filters on CIFAR-10 and 40 on MNIST (digits and Fashion-MNIST use the MNIST setting),
# channel-wise dropout 0.5 in every gated resnet on every dataset, Adam lr 2e-4, batch 80 for the
# smoothed model and 50 for the denoiser, whose loss is the continuous density of x + 0.01 N(0, 1),
# the denoiser run on x~ stacked above x (their conditioned runner; at depth 5 every clean pixel sees
# all of x~ at 28x28 and 32x32, which config validation checks per image size), and one-step
# denoising with the network's output held fixed (runners/pixelcnnpp_gradient_sampler_runner.py).
# What still differs, and why: docs/science.md.
_PAPER_COMMON = {"num_mixtures": 10, "nr_resnet": 5, "dropout": 0.5, "lr": 2e-4, "batch_size": 80,
                 "denoiser_batch_size": 50, "denoiser_likelihood": "continuous", "gradient_mode": "fixed_output",
                 "denoiser_conditioning": "stacked"}
_PAPER_MNIST = {**_PAPER_COMMON, "noise_std": 0.5, "nr_filters": 40}
_PAPER_CIFAR10 = {**_PAPER_COMMON, "noise_std": 0.3, "nr_filters": 160}
# CelebA 32x32: their configs/pixelcnnpp_smoothed_train_celeba.yml (sigma 0.3, 160 filters, batch 80).
_PAPER_CELEBA = {**_PAPER_COMMON, "noise_std": 0.3, "nr_filters": 160}

NOISE_SWEEP = SearchSpace(
    name="noise_sweep",
    description="noise_std in [0.1, 0.8] (holds the paper's 0.3 and 0.5), plus the sigma = 0 baseline as reference",
    params={"noise_std": Float(0.1, 0.8)},
    fixed={"kind": "smoothed"},
    fixed_trials=(BASELINE,),
    default_num_samples=6,
)

MIXTURE_SWEEP = SearchSpace(
    name="mixture_sweep",
    description="num_mixtures in 1..20 at the paper's CIFAR-10 sigma 0.3",
    params={"num_mixtures": Int(1, 20)},
    fixed={"kind": "smoothed", "noise_std": 0.3},
    default_num_samples=8,
)

JOINT = SearchSpace(
    name="joint",
    description="noise_std, num_mixtures and lr together",
    params={"noise_std": Float(0.1, 0.8), "num_mixtures": Int(1, 20), "lr": Float(1e-4, 1e-2, log=True)},
    fixed={"kind": "smoothed"},
    default_num_samples=16,
)

PAPER = SearchSpace(
    name="paper",
    description="the paper's settings per dataset (smoothed model + denoiser, and the baseline); nothing searched",
    params={},
    fixed={},
    fixed_per_dataset={"cifar10": _PAPER_CIFAR10, "mnist": _PAPER_MNIST,
                       "fashion_mnist": _PAPER_MNIST, "digits": _PAPER_MNIST, "celeba": _PAPER_CELEBA},
    fixed_trials=({"kind": "smoothed"}, BASELINE),
    default_num_samples=1,
)

SPACES: dict[str, SearchSpace] = {s.name: s for s in (NOISE_SWEEP, MIXTURE_SWEEP, JOINT, PAPER)}
