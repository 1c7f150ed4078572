"""Cost of dropout in a PixelCNN++ training step: off, element-wise and channel-wise (0.5).

The gated resnets use channel-wise `nn.Dropout2d` (the authors' choice); element-wise
`nn.Dropout` is swapped in for comparison. The three models step in turn, so machine load
hits them alike; the claim is the ratio of medians, not the milliseconds.

    python benchmarks/bench_dropout.py               # MNIST paper size: 1x28x28, 40 filters, 5 resnets, batch 16
    python benchmarks/bench_dropout.py --steps 12 --device cuda --batch 80
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainables.losses import DiscretizedNLL
from trainables.pixelcnnpp import PixelCNNpp


def build(dropout: float, elementwise: bool, args) -> PixelCNNpp:
    model = PixelCNNpp(1, args.filters, args.resnets, 10, dropout=dropout)
    if elementwise:
        for module in model.modules():
            if isinstance(getattr(module, "dropout", None), torch.nn.Dropout2d):
                module.dropout = torch.nn.Dropout(dropout)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model (the first is warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--filters", type=int, default=40)
    parser.add_argument("--resnets", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = torch.round((torch.rand(args.batch, 1, 28, 28) * 2 - 1) * 127.5) / 127.5  # (B, 1, 28, 28) on the 8-bit grid
    x = x.to(device)
    models = {"off": build(0.0, False, args), "element-wise 0.5": build(0.5, True, args),
              "channel-wise 0.5": build(0.5, False, args)}
    models = {name: model.to(device) for name, model in models.items()}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in models.items()}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    loss = DiscretizedNLL()
    for _ in range(args.steps):
        for name, model in models.items():
            start = time.perf_counter()
            nll = loss(model, x, x).mean()
            optimizers[name].zero_grad()
            nll.backward()
            optimizers[name].step()
            if device.type == "cuda":
                torch.cuda.synchronize()  # time the step, not its launch
            seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(s[1:]) for name, s in seconds.items()}
    for name, median in medians.items():
        print(f"{name:>17}: median step {median * 1000:.0f} ms, {median / medians['off']:.3f} x off")


if __name__ == "__main__":
    main()
