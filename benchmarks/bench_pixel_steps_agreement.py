"""Do the fast sampler's pixel steps draw the same images on torch operations and compiled (native_blocks.cpp),
and does the compiler's contraction of multiply-adds into FMAs change them?

    python benchmarks/bench_pixel_steps_agreement.py [--n 64] [--size 28]

Same seed, same model (random weights at the study's default size: 32 filters, nr_resnet 2, 5 mixtures;
random biases), three pixel-step routes: torch operations, the native build with the default flags
(-O3 -march=native: GCC contracts a * b + c into FMAs, -ffp-contract=fast), and a native build with
-ffp-contract=off. For the direct sampler (discretized) and the two-step sampler (a continuous x~ from
the smoothed model, then the denoiser's discretized x given it; x~ is compared too) it prints, for each pair of routes,
whether the float samples are bitwise equal, their max |difference| and how many 8-bit pixels differ
(v = round((x + 1) * 127.5), generate.to_uint8). One CPU thread, as the sampler runs.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.generate import to_uint8  # noqa: E402
from trainables.pixelcnnpp import PixelCNNpp  # noqa: E402
from trainables.sampling import native_blocks  # noqa: E402
from trainables.sampling.fast import fast_sample  # noqa: E402

ROUTES = {"torch": (False, native_blocks.FLAGS), "native": (True, native_blocks.FLAGS),
          "native -ffp-contract=off": (True, native_blocks.FLAGS + ("-ffp-contract=off",))}


def _model(conditional: bool, seed: int) -> PixelCNNpp:
    torch.manual_seed(seed)
    model = PixelCNNpp(1, 32, 2, 5, conditional=conditional).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3)
    return model


def _draw(route: str, models: dict, n: int, size: int, seed: int) -> dict:
    """{"direct": x, "two-step x~": the continuous x~, "two-step": x given x~}, each (n, 1, size, size)."""
    native, flags = ROUTES[route]
    load = native_blocks.load
    native_blocks.load = functools.partial(load, flags)  # what fast_sample's library_for loads
    try:
        shape, g = (1, size, size), torch.Generator().manual_seed(seed)
        direct = fast_sample(models["baseline"], n, shape, discretized=True, generator=g, native=native)
        g = torch.Generator().manual_seed(seed)
        x_noisy = fast_sample(models["smoothed"], n, shape, discretized=False, generator=g, native=native)
        x = fast_sample(models["denoiser"], n, shape, discretized=True, x_noisy=x_noisy, generator=g, native=native)
        return {"direct": direct, "two-step x~": x_noisy, "two-step": x}
    finally:
        native_blocks.load = load


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="images per sampler")
    parser.add_argument("--size", type=int, default=28, help="image height and width (1 channel)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 1 or args.size < 2:
        print(f"bench_pixel_steps_agreement: --n must be >= 1 and --size >= 2, got {args.n} and {args.size}",
              file=sys.stderr)
        return 2
    for flags in {f for _, f in ROUTES.values()}:
        if native_blocks.load(flags) is None:
            print(f"bench_pixel_steps_agreement: native build {' '.join(flags)} unavailable: "
                  f"{native_blocks.unavailable_reason(flags)}", file=sys.stderr)
            return 1
    torch.set_num_threads(1)
    models = {"baseline": _model(False, 0), "smoothed": _model(False, 1), "denoiser": _model(True, 2)}
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.n} images of "
          f"{args.size}x{args.size}, seed {args.seed}")
    drawn = {route: _draw(route, models, args.n, args.size, args.seed) for route in ROUTES}
    for sampler in drawn["torch"]:
        for a, b in itertools.combinations(ROUTES, 2):
            x, y = drawn[a][sampler], drawn[b][sampler]
            pixels = int((to_uint8(x) != to_uint8(y)).sum())
            print(f"{sampler:11s} {a} vs {b}: bitwise equal {torch.equal(x, y)}, max |diff| "
                  f"{(x - y).abs().max().item():.3g}, 8-bit pixels differing {pixels} of {x.numel()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
