"""Sample-quality evaluation of a trial's models: draw samples, score them, keep grids.

Baseline trials are scored on direct samples; smoothed trials on one-step (gradient
denoised) and two-step (denoiser) samples. Metric names carry the feature extractor id
and the sampler (docs/architecture.md); `fd_E`/`is_E` repeat the product sampler's
numbers (direct or two-step) under a name every kind shares, the study objective.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from torchvision.utils import save_image

from trainables.config import TrialConfig
from trainables.data import epoch_generator
from trainables.sampling.fast import fast_sample
from trainables.quality.extractors import default_extractor, metric_names
from trainables.quality.evaluate import evaluate_samples
from trainables.sampling.naive import gradient_denoise, to_image_range

SAMPLE_STREAM = 2  # generator stream of evaluation samples: never the training streams


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
            samples = {"direct": fast_sample(models["baseline"], n, self.image_shape, discretized=True,
                                             generator=generator, log=self.log)}
            product = "direct"
        else:
            x_noisy = fast_sample(models["smoothed"], n, self.image_shape, discretized=False,
                                  generator=generator, log=self.log)
            onestep = gradient_denoise(models["smoothed"], x_noisy, cfg.data.noise_std, mode=cfg.eval.gradient_mode)
            twostep = fast_sample(models["denoiser"], n, self.image_shape, discretized=True, x_noisy=x_noisy,
                                  generator=generator, log=self.log)
            samples = {"onestep": onestep, "twostep": twostep}
            product = "twostep"
        metrics = {"sample_seconds": time.perf_counter() - start}
        self.last_samples = {k: to_image_range(v).cpu() for k, v in samples.items()}
        self.last_epoch = epoch
        start = time.perf_counter()
        for sampler, images in self.last_samples.items():
            scores = evaluate_samples(images, cfg.data.dataset, extractor=self.extractor,
                                      data_dir=cfg.data.data_dir, device=self.device, log=self.log,
                                      inception_weights=cfg.eval.inception_weights or None)
            for key in (self.names["distance"], self.names["score"]):
                metrics[f"{key}_{sampler}"] = scores[key]
                if sampler == product:
                    metrics[key] = scores[key]
        metrics["feature_seconds"] = time.perf_counter() - start  # features of the samples and their scores
        return metrics

    def write_grids(self, directory) -> list[Path]:
        """PNG grids of the latest evaluation, one per sampler: samples_<sampler>_epoch<E>.png."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for sampler, images in self.last_samples.items():
            path = directory / f"samples_{sampler}_epoch{self.last_epoch:04d}.png"
            grid = images[:64]
            save_image((grid + 1) / 2, path, nrow=int(len(grid) ** 0.5 + 0.999))
            paths.append(path)
        return paths
