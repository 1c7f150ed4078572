"""Sample-quality evaluation of a trial's models: draw samples, score them, keep grids.

Baseline trials are scored on direct samples; smoothed trials on one-step (gradient
denoised) and two-step (denoiser) samples. Metric names carry the feature extractor id
and the sampler (docs/architecture.md); `fd_E`/`is_E` repeat the product sampler's
numbers (direct or two-step) under a name every kind shares, the study objective. Each
distance and score comes with its standard error, `<name>_se` (quality/uncertainty.py);
the sample count is the trial's `num_eval_samples`. A smoothed trial's evaluation also
logs the diagnostics (quality/diagnostics.py, cfg.eval.diagnostics), from the same x~
samples the two-step sampler drew.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from search_spaces.metric_names import PRODUCT_SAMPLER, default_extractor, metric_names, standard_error_name
from trainables.config import TrialConfig
from trainables.data import epoch_generator
from trainables.sampling.fast import fast_sample
from trainables.quality.diagnostics import diagnostics_enabled, smoothed_diagnostics
from trainables.quality.evaluate import evaluate_samples
from trainables.sampling.naive import gradient_denoise, to_image_range, two_step_sample

SAMPLE_STREAM = 2  # generator stream of evaluation samples: never the training streams
DIAGNOSTIC_STREAM = 3  # generator stream of the denoiser's draws given real x~ (diagnostics)
# The sampler of every evaluation: the exact fast one (naive.sample is its tested reference).
SAMPLER = fast_sample
GRID_MIN_WIDTH = 256  # px: a grid of 8x8 digits is 82 px wide, too small to see in MLflow's artifact view


def upscaled_grid(images: torch.Tensor, min_width: int = GRID_MIN_WIDTH) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> the (C, H', W') grid, each pixel repeated k x k times (nearest, no
    smoothing: the model's pixels stay visible) with the smallest integer k that makes it min_width wide."""
    from torchvision.utils import make_grid  # here: torchvision.utils imports torch._dynamo (2-3 CPU s)

    grid = make_grid(images, nrow=int(len(images) ** 0.5 + 0.999))  # (C, Hg, Wg), 2 px padding
    k = -(-min_width // grid.shape[-1])  # ceil
    return grid.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)


class SampleEvaluator:
    def __init__(self, cfg: TrialConfig, image_shape: tuple, device: torch.device, log: Callable[[str], None]):
        self.cfg, self.image_shape, self.device, self.log = cfg, image_shape, device, log
        self.extractor = cfg.eval.extractor or default_extractor(cfg.data.dataset)
        self.names = metric_names(self.extractor)
        self.last_samples: dict[str, torch.Tensor] = {}  # sampler -> (N, C, H, W) in [-1, 1]
        self.last_epoch = 0

    @torch.no_grad()
    def evaluate(self, models: dict[str, torch.nn.Module], epoch: int) -> dict[str, float]:
        """Sample `num_eval_samples` images per sampler and score them; returns metrics."""
        cfg = self.cfg
        n = cfg.eval.num_eval_samples
        generator = epoch_generator(cfg.train.seed, epoch, stream=SAMPLE_STREAM)
        start = time.perf_counter()
        self.log(f"epoch {epoch}: drawing {n} evaluation samples")
        if cfg.train.kind == "baseline":
            samples = {"direct": SAMPLER(models["baseline"], n, self.image_shape, discretized=True,
                                         generator=generator, log=self.log)}
        else:
            x_noisy, twostep = two_step_sample(models["smoothed"], models["denoiser"], n, self.image_shape,
                                               generator=generator, sampler=SAMPLER, log=self.log)
            onestep = gradient_denoise(models["smoothed"], x_noisy, cfg.data.noise_std, mode=cfg.eval.gradient_mode)
            samples = {"onestep": onestep, "twostep": twostep}
        product = PRODUCT_SAMPLER[cfg.train.kind]  # the samples `fd_E`/`is_E` repeat
        metrics = {"sample_seconds": time.perf_counter() - start}
        self.last_samples = {k: to_image_range(v).cpu() for k, v in samples.items()}
        self.last_epoch = epoch
        start = time.perf_counter()
        for sampler, images in self.last_samples.items():
            scores = evaluate_samples(images, cfg.data.dataset, extractor=self.extractor,
                                      data_dir=cfg.data.data_dir, device=self.device, log=self.log,
                                      inception_weights=cfg.eval.inception_weights or None,
                                      image_size=cfg.data.image_size)
            for key in (self.names["distance"], self.names["score"]):
                named = {f"{key}_{sampler}": key, **({key: key} if sampler == product else {})}
                for name, source in named.items():  # the number and its standard error
                    metrics[name] = scores[source]
                    metrics[standard_error_name(name)] = scores[standard_error_name(source)]
        metrics["feature_seconds"] = time.perf_counter() - start  # features of the samples and their scores
        if diagnostics_enabled(cfg):  # validate() allows it for smoothed trials only
            metrics.update(smoothed_diagnostics(
                models["smoothed"], models["denoiser"], cfg, x_noisy, device=self.device, log=self.log,
                generator=epoch_generator(cfg.train.seed, epoch, stream=DIAGNOSTIC_STREAM), sampler=SAMPLER))
        return metrics

    def write_grids(self, directory) -> list[Path]:
        """PNG grids of the latest evaluation, one per sampler: samples_<sampler>_epoch<E>.png."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for sampler, images in self.last_samples.items():
            path = directory / f"samples_{sampler}_epoch{self.last_epoch:04d}.png"
            from torchvision.utils import save_image

            save_image(upscaled_grid((images[:64] + 1) / 2), path)
            paths.append(path)
        return paths
