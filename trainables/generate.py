"""Images from a trained trial: its networks out of a checkpoint (or plain weight files),
drawn with the exact fast sampler in batches sized from the memory available.

Used by `python -m study.sample` and by the MLflow model (trainables/mlflow_model.py).
Samplers, by the names of the CLI (metric suffix in brackets):
- `direct` (direct): the baseline's autoregressive samples; baseline trials only.
- `two-step` (twostep): x~ from the smoothed model, then x ~ p(x | x~) from the denoiser.
- `one-step` (onestep): x~ from the smoothed model, denoised by one gradient step (Tweedie).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from trainables.checkpoint import load_checkpoint
from trainables.data import IMAGE_SHAPES
from trainables.pixelcnnpp import PixelCNNpp
from trainables.sampling.fast import fast_sample
from trainables.sampling.naive import gradient_denoise, to_image_range

SAMPLERS = {"two-step": "twostep", "one-step": "onestep", "direct": "direct"}  # name -> metric suffix
UNITS = {"baseline": ("baseline",), "smoothed": ("smoothed", "denoiser")}  # networks of a trial kind
CONFIG_FILE = "config.json"     # beside the weight files: the trial's flat TrialConfig
# Images per sampler call; memory bounds it first for large images. Larger batches amortize the
# per-pixel Python overhead a little: 1000 two-step digits, 1 thread, loaded 2-core CPU:
# 3.8 s in one batch of 1000, 4.2 s in batches of 256 (two runs each, interleaved).
MAX_BATCH = 1024
MEMORY_FRACTION = 0.5           # of the available memory a batch may plan to use
ACTIVATION_FACTOR = 3           # forward activations + their gradients (one-step) + temporaries


@dataclass
class TrialModels:
    config: dict                        # the trial's flat TrialConfig (to_flat keys)
    networks: dict[str, PixelCNNpp]     # unit name (UNITS) -> network in eval mode

    @property
    def kind(self) -> str:
        return self.config["kind"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return IMAGE_SHAPES[self.config["dataset"]]  # (C, H, W)

    @property
    def samplers(self) -> tuple[str, ...]:
        """Samplers this trial's models support; the first is its product (the objective's)."""
        return ("direct",) if self.kind == "baseline" else ("two-step", "one-step")

    def check_sampler(self, sampler: str) -> None:
        if sampler not in self.samplers:
            raise ValueError(f"a {self.kind} trial samples with {' or '.join(self.samplers)}, not {sampler!r}")

    def to(self, device) -> "TrialModels":
        for net in self.networks.values():
            net.to(device)
        return self


def build_network(config: dict, unit: str) -> PixelCNNpp:
    """The untrained network of one unit, the architecture trainables.experiment builds."""
    channels = IMAGE_SHAPES[config["dataset"]][0]
    denoiser = unit == "denoiser"  # its design is recorded in the config (a baseline's may predate the key)
    return PixelCNNpp(channels, config["nr_filters"], config["nr_resnet"], config["num_mixtures"],
                      config["dropout"], conditional=denoiser,
                      conditioning=config["denoiser_conditioning"] if denoiser else "encoder")


def _assemble(config: dict, states: dict[str, dict]) -> TrialModels:
    networks = {}
    for unit in UNITS[config["kind"]]:
        net = build_network(config, unit)
        net.load_state_dict(states[unit])
        networks[unit] = net.eval().requires_grad_(False)
    return TrialModels(dict(config), networks)


def from_checkpoint(directory) -> TrialModels:
    """The evaluation networks (EMA weights where the trial kept an EMA) of a trial checkpoint."""
    payload = load_checkpoint(directory, config=None)  # weights_only=True
    states = {unit: state["ema"] or state["model"] for unit, state in payload["units"].items()}
    return _assemble(payload["config"], states)


def save_weights(models: TrialModels, directory) -> list[Path]:
    """Plain files, no project format: <unit>.pt (a state_dict) per network and config.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for unit, net in models.networks.items():
        path = directory / f"{unit}.pt"
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, path)
        paths.append(path)
    (directory / CONFIG_FILE).write_text(json.dumps(models.config, indent=1, sort_keys=True))
    return [*paths, directory / CONFIG_FILE]


def from_weights(directory) -> TrialModels:
    """The networks written by save_weights, loaded with weights_only=True."""
    directory = Path(directory)
    config = json.loads((directory / CONFIG_FILE).read_text())
    states = {unit: torch.load(directory / f"{unit}.pt", map_location="cpu", weights_only=True)
              for unit in UNITS[config["kind"]]}
    return _assemble(config, states)


def activation_floats(models: TrialModels) -> int:
    """Floats of every module output (activations) in one forward pass of each network on one
    image; nested modules count again, so it overestimates, which a memory budget can afford."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    shape = (1, *models.image_shape)
    for net in models.networks.values():
        param = next(net.parameters())
        x = torch.zeros(shape, device=param.device, dtype=param.dtype)
        # parametrization modules output weights (weight norm), not activations: not counted
        hooks = [m.register_forward_hook(count) for name, m in net.named_modules() if "parametrizations" not in name]
        try:
            with torch.no_grad():
                net(x, x) if net.conditional else net(x)
        finally:
            for hook in hooks:
                hook.remove()
    return total


def pick_device(name: Optional[str] = None) -> torch.device:
    """`name` (cpu, cuda, cuda:1), else cuda where available, else cpu; ValueError for a bad name."""
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device here")
    return device


def set_threads(threads: int) -> None:
    """torch's intra-op CPU threads (0: leave them) for the work around the sampler (one-step's
    gradient, the encoder); the autoregressive loop takes its own (`draw(threads=)`). Its per-pixel
    ops are small: 1000 two-step digits took 3.7-4.7 s with 1 thread and 68-84 s with 2 on a
    loaded 2-core CPU."""
    if threads > 0:
        torch.set_num_threads(threads)


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def choose_batch_size(n: int, per_image_bytes: int, available: int, max_batch: int = MAX_BATCH) -> int:
    """Images per call: what MEMORY_FRACTION of `available` holds at `per_image_bytes`, in 1..min(n, max_batch).

    per_image_bytes: ACTIVATION_FACTOR x 4 bytes x activation_floats, an upper bound of what
    one image costs (the fast sampler keeps ~2/H of the activations; one-step keeps them all
    for the gradient)."""
    fits = int(available * MEMORY_FRACTION) // max(1, per_image_bytes)
    return max(1, min(n, max_batch, fits))


def auto_batch_size(models: TrialModels, n: int, device: torch.device) -> int:
    per_image = ACTIVATION_FACTOR * 4 * activation_floats(models)
    return choose_batch_size(n, per_image, available_bytes(device))


def draw(models: TrialModels, n: int, sampler: str, *, seed: int = 0, batch_size: int,
         progress: Optional[Callable[[float], None]] = None, threads: Optional[int] = None,
         cuda_graphs: bool = False) -> torch.Tensor:
    """n images (N, C, H, W) in [-1, 1] on the CPU, in batches of `batch_size`; the autoregressive
    sampling on `threads` CPU threads (None: the fast sampler's choice, sampling/fast.py CPU_THREADS),
    its pixel steps replayed as CUDA graphs with cuda_graphs on a CUDA device (fast_sample).

    One CPU generator seeded with `seed` feeds the batches in turn: the same (seed,
    batch_size) give the same uniforms on any device, and images equal to float rounding
    (docs/analysis.md). progress(k) is called as rows are
    drawn with the (fractional) images done since its last call: they sum to n."""
    models.check_sampler(sampler)
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got {n} and {batch_size}")
    generator = torch.Generator().manual_seed(int(seed))
    shape, nets = models.image_shape, models.networks
    # fast_sample logs every h // 4 rows: that many calls per sampler pass, two passes for two-step
    ticks = (2 if sampler == "two-step" else 1) * (shape[1] // max(1, shape[1] // 4))
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        log = None if progress is None else (lambda message, b=b: progress(b / ticks))
        if sampler == "direct":
            x = fast_sample(nets["baseline"], b, shape, discretized=True, generator=generator, log=log, threads=threads,
                            cuda_graphs=cuda_graphs)
        else:
            x_noisy = fast_sample(nets["smoothed"], b, shape, discretized=False, generator=generator, log=log,
                                  threads=threads, cuda_graphs=cuda_graphs)
            if sampler == "two-step":
                x = fast_sample(nets["denoiser"], b, shape, discretized=True, x_noisy=x_noisy, generator=generator,
                                log=log, threads=threads, cuda_graphs=cuda_graphs)
            else:
                x = gradient_denoise(nets["smoothed"], x_noisy, models.config["noise_std"],
                                     mode=models.config["gradient_mode"])
        out.append(to_image_range(x).cpu())
    return torch.cat(out)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, v = round((x + 1) * 127.5): the inverse of
    trainables.data's x = v / 127.5 - 1 on the 8-bit grid."""
    values = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return values.permute(0, 2, 3, 1).numpy()


def write_grid(images: torch.Tensor, path, max_images: int = 1024) -> Path:
    """A PNG grid of the first max_images images (N, C, H, W) in [-1, 1], about square."""
    from torchvision.utils import save_image

    grid = images[:max_images]
    save_image((grid + 1) / 2, path, nrow=math.ceil(math.sqrt(len(grid))), padding=1)
    return Path(path)


def score(images: torch.Tensor, models: TrialModels, extractor: str, sampler: str, log: Callable = print) -> dict:
    """Distance and IS of the images against the test split, in `extractor`'s features."""
    from trainables.quality.evaluate import evaluate_samples

    cfg = models.config
    return evaluate_samples(images, cfg["dataset"], extractor=extractor, sampler=SAMPLERS[sampler],
                            data_dir=cfg.get("data_dir"), inception_weights=cfg.get("inception_weights") or None,
                            log=log)
