"""ONE training loop for every model kind; kinds differ only by their loss object.

A `TrainUnit` bundles what one model needs to train and resume: the network, Adam,
the per-step exponential learning-rate decay, an optional EMA of the weights, and the
loss (`trainables.losses`). `train_epoch` and `evaluate_nll` take any unit.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from trainables.quality.bpd import bits_per_dim

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # (x, x_noisy), each (B, C, H, W)


class DivergenceError(ValueError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class EMA:
    """Exponential moving average of a model's parameters and buffers, used for evaluation."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for avg, new in zip(self.model.state_dict().values(), model.state_dict().values()):
            if avg.dtype.is_floating_point:
                avg.lerp_(new, 1.0 - self.decay)
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
               mixed_precision: str = "off", compile: bool = False):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay)
        ema = EMA(model, ema_decay) if ema_decay > 0 else None
        on_cuda = next(model.parameters()).is_cuda
        use_bf16 = mixed_precision == "bf16" or (mixed_precision == "auto" and on_cuda)
        # The compiled module shares the parameters; state_dicts come from `model`, so
        # checkpoints do not depend on whether training was compiled.
        forward = torch.compile(model) if compile else None
        return cls(model, optimizer, scheduler, loss, ema, grad_clip, torch.bfloat16 if use_bf16 else None, forward)

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

    def bpd(self, continuous: bool) -> float:
        return float(bits_per_dim(self.nll_nats, self.num_dims, continuous=continuous))


def _to_device(batch, device):
    return tuple(t.to(device, non_blocking=True) for t in batch)


def train_epoch(unit: TrainUnit, batches: Batches, *, epoch: int, device) -> EpochStats:
    """One pass over `batches` with one optimizer and lr step per batch."""
    unit.model.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    dims = images = 0
    start = time.perf_counter()
    for step, batch in enumerate(batches, start=1):
        x, x_noisy = _to_device(batch, device)
        with torch.autocast(x.device.type, dtype=unit.autocast_dtype or torch.float32,
                            enabled=unit.autocast_dtype is not None):
            forward = unit.train_forward if unit.train_forward is not None else unit.model
            nll = unit.loss(forward, x, x_noisy)  # (B,) nats, float32
        loss = nll.mean() / x[0].numel()  # nats per dimension: lr does not depend on image size
        if not torch.isfinite(loss):  # one host sync per step; negligible next to a PixelCNN++ step
            raise DivergenceError(f"loss is {loss.item()} at epoch {epoch}, step {step}")
        unit.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if unit.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(unit.model.parameters(), unit.grad_clip)
        unit.optimizer.step()
        unit.scheduler.step()
        if unit.ema is not None:
            unit.ema.update(unit.model)
        total += nll.detach().sum()
        dims += x.numel()
        images += x.shape[0]
    return EpochStats(float(total), dims, images, time.perf_counter() - start)


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
        x, x_noisy = _to_device(batch, device)
        total += unit.loss(model, x, x_noisy).sum()
        dims += x.numel()
        images += x.shape[0]
    model.train(was_training)
    return EpochStats(float(total), dims, images, time.perf_counter() - start)
