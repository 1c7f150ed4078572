"""ONE training loop for every model kind; kinds differ only by their loss object.

A `TrainUnit` bundles what one model needs to train and resume: the network, Adam,
the per-step exponential learning-rate decay, an optional EMA of the weights, and the
loss (`trainables.losses`). `train_epoch` and `evaluate_nll` take any unit.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from trainables.distributed import SINGLE, Shard
from trainables.quality.bpd import bits_per_dim

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # (x, x_noisy), each (B, C, H, W)


class DivergenceError(ValueError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class EMA:
    """Bias-corrected exponential moving average of a model's weights, used for evaluation.

    After t updates with weights w_1..w_t the average is

        sum_k d^(t-k) (1 - d) w_k / (1 - d^t)

    (Adam's bias correction): a weighted mean of the weights the model has had, in which the
    initial weights w_0 have no part. A plain EMA started at w_0 keeps d^t of them: at d = 0.99
    after 300 steps still 5%, enough to ruin samples (measured on MNIST: a 28x28 baseline scored
    1970 against 545 without averaging). The update count is the optimizer's step count, which
    checkpoints already hold (the lr scheduler's), so resuming continues the same average.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    def step_weight(self, updates: int) -> float:
        """Weight of the new weights at update number `updates` (1, 2, ...): (1 - d) / (1 - d^t)."""
        return (1.0 - self.decay) / (1.0 - self.decay ** updates)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, updates: int) -> None:
        """Fold in `model`'s weights as update number `updates` (1 for the first; 1 copies them)."""
        weight = self.step_weight(updates)
        for avg, new in zip(self.model.state_dict().values(), model.state_dict().values()):
            if avg.dtype.is_floating_point:
                avg.lerp_(new, weight)
            else:
                avg.copy_(new)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


@dataclass
class TrainUnit:
    """One model with its optimizer state; `eval_model` is the EMA copy when enabled."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss: object  # a trainables.losses object: (model, x, x_noisy) -> per-image NLL (N,) nats
    ema: Optional[EMA] = None
    grad_clip: float = 0.0
    autocast_dtype: Optional[torch.dtype] = None  # bf16 for mixed precision; None: full precision
    train_forward: Optional[torch.nn.Module] = None  # torch.compile'd model when enabled

    @classmethod
    def create(cls, model, loss, *, lr: float, lr_decay: float, ema_decay: float = 0.0, grad_clip: float = 0.0,
               mixed_precision: str = "off", compile: bool = False, shard: Shard = SINGLE):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay)
        ema = EMA(model, ema_decay) if ema_decay > 0 else None
        on_cuda = next(model.parameters()).is_cuda
        use_bf16 = mixed_precision == "bf16" or (mixed_precision == "auto" and on_cuda)
        # The DDP wrapper and the compiled module share the parameters; state_dicts come from
        # `model`, so checkpoints do not depend on how many processes trained or on compiling.
        forward = shard.wrap(model)
        forward = torch.compile(forward) if compile else forward
        return cls(model, optimizer, scheduler, loss, ema, grad_clip, torch.bfloat16 if use_bf16 else None,
                   None if forward is model else forward)

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.model if self.ema is not None else self.model

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


@dataclass(frozen=True)
class EpochStats:
    nll_nats: float  # summed over images and dimensions
    num_dims: int  # images x C x H x W
    num_images: int
    seconds: float
    step_losses: tuple = ()  # training only: the global batch's loss (nats/dim) of every step

    def bpd(self, continuous: bool) -> float:
        return float(bits_per_dim(self.nll_nats, self.num_dims, continuous=continuous))


def batch_to_device(batch, device) -> tuple[torch.Tensor, ...]:
    """A batch's tensors on `device` (non-blocking: pinned CPU memory to a GPU overlaps the copy)."""
    return tuple(t.to(device, non_blocking=True) for t in batch)


def train_epoch(unit: TrainUnit, batches: Batches, *, epoch: int, device, shard: Shard = SINGLE) -> EpochStats:
    """One pass over `batches` with one optimizer and lr step per batch.

    Data-parallel (shard.world_size > 1, unit built with the same shard): `batches` are the
    global batches, every rank trains on its rows, and the statistics and step losses are
    those of the global batches, the same on every rank (trainables/distributed.py).
    """
    unit.model.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    dims = images = 0
    losses = []
    start = time.perf_counter()
    for step, batch in enumerate(batches, start=1):
        global_rows = batch[0].shape[0]
        x, x_noisy = batch_to_device(shard.rows(batch), device)  # (b, C, H, W); b = B / world_size
        with torch.autocast(x.device.type, dtype=unit.autocast_dtype or torch.float32,
                            enabled=unit.autocast_dtype is not None):
            forward = unit.train_forward if unit.train_forward is not None else unit.model
            nll = unit.loss(forward, x, x_noisy)  # (b,) nats, float32
        # nats per dimension: lr does not depend on image size
        per_dim = math.prod(x.shape[1:])
        if shard.distributed:
            loss = nll.sum() * shard.loss_scale(x.shape[0], global_rows) / per_dim
            step_loss = float(shard.all_reduce(loss.detach())) / shard.world_size  # the global batch's
        else:
            loss = nll.mean() / per_dim
            step_loss = float(loss.detach())  # one host sync per step; negligible next to a PixelCNN++ step
        if not math.isfinite(step_loss):  # every rank sees the same global loss: all stop together
            raise DivergenceError(f"loss is {step_loss} at epoch {epoch}, step {step}")
        unit.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP: averages the ranks' gradients here
        if unit.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(unit.model.parameters(), unit.grad_clip)
        unit.optimizer.step()
        unit.scheduler.step()
        if unit.ema is not None:
            unit.ema.update(unit.model, updates=unit.scheduler.last_epoch)  # steps taken, this one included
        total += nll.detach().sum()
        dims += x.numel()
        images += x.shape[0]
        losses.append(step_loss)
    seconds = time.perf_counter() - start
    if shard.distributed:
        counts = shard.all_reduce(torch.tensor([float(total), dims, images], dtype=torch.float64, device=device))
        total, dims, images = counts[0], int(counts[1]), int(counts[2])
        seconds = float(shard.all_reduce(torch.tensor(seconds, dtype=torch.float64, device=device), op="max"))
    return EpochStats(float(total), dims, images, seconds, tuple(losses))


@torch.no_grad()
def evaluate_nll(unit: TrainUnit, batches: Batches, *, device) -> EpochStats:
    """Summed NLL of the evaluation model (EMA when enabled) over `batches`, in eval mode."""
    model = unit.eval_model
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    dims = images = 0
    start = time.perf_counter()
    for batch in batches:
        x, x_noisy = batch_to_device(batch, device)
        total += unit.loss(model, x, x_noisy).sum()
        dims += x.numel()
        images += x.shape[0]
    model.train(was_training)
    return EpochStats(float(total), dims, images, time.perf_counter() - start)
