"""One trial, epoch by epoch: a baseline model, or a smoothed model with its denoiser.

`Experiment` knows nothing of Ray or MLflow: `run_epoch()` returns the epoch's metrics
(names in docs/architecture.md), `save`/`restore` checkpoint everything needed to
continue exactly as if never stopped.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from trainables.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from trainables.config import TrialConfig
from trainables.distributed import SINGLE, Shard, dropout_seed
from trainables.data import epoch_batches, epoch_generator, load_dataset
from trainables.quality.trial_evaluation import SampleEvaluator
from trainables.losses import DenoiserNLL, DiscretizedNLL, SmoothedNLL
from trainables.pixelcnnpp import PixelCNNpp
from trainables.pair_evaluation import evaluate_pair
from trainables.training import TrainUnit, evaluate_nll, train_epoch

TEST_NOISE_EPOCH = -1  # the test split's noise comes from generator (seed, -1): the same every epoch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Experiment:
    """Train and evaluate the models of one trial configuration.

    Data-parallel (`shard` of an initialized process group, one Experiment per process):
    every rank trains on its rows of each global batch; rank 0 alone evaluates (bits/dim of
    the test split, samples), and its `run_epoch` metrics are the trial's.
    """

    def __init__(self, cfg: TrialConfig, device=None, log: Callable[[str], None] = print, shard: Shard = SINGLE):
        cfg.validate()
        self.cfg, self.log, self.shard = cfg, log, shard
        self.device = torch.device(device) if device is not None else default_device()
        d = cfg.data
        # Subsets are one fixed seeded choice (data.SUBSET_SEED), not the trial's seed: every
        # trial of a study trains and is evaluated on the same images.
        self.train_images = load_dataset(d.dataset, "train", d.data_dir, image_size=d.image_size,
                                         subset=d.train_subset)  # (N, C, H, W) on CPU
        self.test_images = load_dataset(d.dataset, "test", d.data_dir, image_size=d.image_size,
                                        subset=cfg.eval.max_eval_images)
        self.image_shape = tuple(self.train_images.shape[1:])
        torch.manual_seed(cfg.train.seed)
        self.units = self._build_units()
        self.epoch = 0
        self.evaluator = SampleEvaluator(cfg, self.image_shape, self.device, log)

    def _build_units(self) -> dict[str, TrainUnit]:
        m, t = self.cfg.model, self.cfg.train
        kinds = {"baseline": [("baseline", DiscretizedNLL(), False)],
                 "smoothed": [("smoothed", SmoothedNLL(), False),
                              ("denoiser", DenoiserNLL(t.denoiser_likelihood), True)]}[t.kind]
        units = {}
        for name, loss, conditional in kinds:
            net = PixelCNNpp(self.image_shape[0], m.nr_filters, m.nr_resnet, m.num_mixtures, m.dropout, conditional,
                             m.denoiser_conditioning)
            units[name] = TrainUnit.create(net.to(self.device), loss, lr=t.lr, lr_decay=t.lr_decay,
                                           ema_decay=t.ema_decay, grad_clip=t.grad_clip,
                                           mixed_precision=t.mixed_precision, compile=t.compile, shard=self.shard)
        return units

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.train.max_epochs

    def run_epoch(self) -> dict[str, float]:
        """Train every model one epoch, evaluate bits/dim, and sample metrics when due."""
        epoch, t = self.epoch + 1, self.cfg.train
        noise_std = self.cfg.data.noise_std
        metrics: dict[str, float] = {"epoch": epoch}
        seconds = images = 0.0
        if self.shard.distributed:  # the ranks' dropout masks differ; a resumed epoch redraws the same
            torch.manual_seed(dropout_seed(t.seed, epoch, self.shard.rank))
        for name, unit in self.units.items():
            batches = epoch_batches(self.train_images, t.unit_batch_size(name), noise_std, t.seed, epoch)
            stats = train_epoch(unit, batches, epoch=epoch, device=self.device, shard=self.shard)
            seconds, images = seconds + stats.seconds, images + stats.num_images
            metrics[self._bpd_name("train", name)] = stats.bpd(unit.loss.continuous)
        metrics["images_per_s"] = images / seconds
        metrics["epoch_seconds"] = seconds
        if not self.shard.is_main:  # evaluation is rank 0's; the others wait at the next step's all-reduce
            self.epoch = epoch
            return metrics
        start = time.perf_counter()
        evaluating = epoch % self.cfg.eval.eval_every == 0 or epoch == t.max_epochs
        if t.kind == "baseline":
            test = evaluate_nll(self.units["baseline"], self._test_batches(), device=self.device)
            metrics["test_bpd"] = metrics["bpd_bound"] = test.bpd(continuous=False)
        else:  # "eval": the bound with the samples' metrics only
            metrics.update(self._test_bpd_and_bound(self.cfg.eval.bound_every == "epoch" or evaluating))
        metrics["bpd_seconds"] = time.perf_counter() - start  # test bits/dim and the two-step bound
        if evaluating:
            eval_models = {name: unit.eval_model for name, unit in self.units.items()}
            metrics.update(self.evaluator.evaluate(eval_models, epoch))
        self.epoch = epoch
        self.log(f"epoch {epoch}/{t.max_epochs}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"))
        return metrics

    def _bpd_name(self, split: str, unit_name: str) -> str:
        return f"{split}_bpd" if unit_name == "baseline" else f"{split}_bpd_{unit_name}"

    def _test_batches(self):
        t = self.cfg.train
        return epoch_batches(self.test_images, 256, self.cfg.data.noise_std, t.seed, TEST_NOISE_EPOCH, shuffle=False)

    def _test_bpd_and_bound(self, with_bound: bool) -> dict[str, float]:
        """Test bits/dim of the smoothed model and the denoiser and, `with_bound`, the two-step bound of
        clean test data, in one pass over the test batches (pair_evaluation.evaluate_pair)."""
        smoothed, denoiser = self.units["smoothed"], self.units["denoiser"]
        generator = epoch_generator(self.cfg.train.seed, TEST_NOISE_EPOCH, stream=1)  # draws beyond the first
        draws = self.cfg.eval.bound_noise_draws if with_bound else 0
        stats = evaluate_pair(smoothed, denoiser, self._test_batches(), device=self.device,
                              noise_std=self.cfg.data.noise_std, bound_draws=draws, generator=generator)
        metrics = {self._bpd_name("test", name): stats[name].bpd(unit.loss.continuous)
                   for name, unit in (("smoothed", smoothed), ("denoiser", denoiser))}
        if with_bound:
            metrics["bpd_bound"] = stats["bound"].bpd(continuous=False)
        return metrics

    def save(self, directory) -> Path:
        units = {name: unit.state_dict() for name, unit in self.units.items()}
        return save_checkpoint(directory, config=self.cfg.to_flat(), epoch=self.epoch, units=units, rng=rng_state())

    def restore(self, directory) -> None:
        payload = load_checkpoint(directory, config=self.cfg.to_flat())  # CPU: RNG states must stay there
        for name, unit in self.units.items():
            unit.load_state_dict(payload["units"][name])
        restore_rng_state(payload["rng"])
        self.epoch = payload["epoch"]
        self.log(f"restored epoch {self.epoch} from {directory}")

    def write_sample_grids(self, directory) -> list[Path]:
        return self.evaluator.write_grids(directory)
