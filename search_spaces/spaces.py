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

# The authors' architectures (Sec. 5 and their code): 5 resnets per stage, 10 mixtures,
# 160 filters and dropout 0.5 on CIFAR-10, 40 filters on MNIST (digits and Fashion-MNIST
# use the MNIST setting), Adam lr 2e-4.
_PAPER_MNIST = {"noise_std": 0.5, "num_mixtures": 10, "nr_filters": 40, "nr_resnet": 5, "lr": 2e-4}
_PAPER_CIFAR10 = {"noise_std": 0.3, "num_mixtures": 10, "nr_filters": 160, "nr_resnet": 5, "dropout": 0.5, "lr": 2e-4}
# CelebA 32x32: their configs/pixelcnnpp_smoothed_train_celeba.yml (sigma 0.3, batch 80, no dropout set).
_PAPER_CELEBA = {"noise_std": 0.3, "num_mixtures": 10, "nr_filters": 160, "nr_resnet": 5, "lr": 2e-4, "batch_size": 80}

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
