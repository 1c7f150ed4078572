"""The gated resnet's element-wise work as fused kernels (torch.compile), with its own backward.

What a training step spends outside the convolutions is mostly concat_elu: in eager torch it is a
cat, a neg, an elu over 2C channels (two expm1 per input value) and a pad, each a pass over memory,
and in the backward an elu_backward (an exp per value) and more passes. Here

    concat_elu_pad(x, pad, add)  = F.pad(concat_elu(x + add), pad)   (N, C, H, W) -> (N, 2C, H', W')
    gate(x, h, cond)             = x + a * sigmoid(b), (a, b) = (h + cond).chunk(2, dim=1)

are one kernel each way. Of x and -x at most one is negative, so elu's negative branch needs one
expm1 per value: e = expm1(-|x|), concat_elu(x) = [x > 0 ? x : e, x < 0 ? -x : e], the same floats
as torch's elu (the same vectorized expm1; tests/trainables/test_fused_elementwise.py). The backward
uses the saved e: elu'(x) = exp(x) = e + 1 for x <= 0 (1 at 0, as torch), no transcendental call.

The kernels take float32 CPU tensors in channels-last layout (inputs are converted: one layout, no
recompiles) and give channels-last outputs, so the convolutions between them read channels-last
activations too, oneDNN's faster layout here (converting every convolution's input as well gained
nothing more: benchmarks/README.md). Inductor compiles them with symbolic sizes, one compile per
(kernel, padding, thread count), cached on disk by torch for later processes (a cold compile took
47 s on this 2-core machine, a warm one 15 s). Without a C++ compiler (inductor needs one on the
CPU), or when SMOOTHING_FUSED_ELEMENTWISE=0, or where compiling fails, `available()` is False and
layers.py uses the torch operations (one warning line). Anything else (CUDA, bf16, inside an outer torch.compile)
takes the torch operations too: there the outer compiler or the GPU does the fusing.
"""
from __future__ import annotations

import os
import threading
import types
import warnings
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from trainables.cxx_compiler import find_cxx_compiler

ENV_VAR = "SMOOTHING_FUSED_ELEMENTWISE"  # "0": never compile, always the torch operations
CHANNELS_LAST = torch.channels_last
# Inputs with fewer values take the torch operations: a kernel call's overhead (autograd.Function,
# guards) eats the gain. Measured (one thread, concat_elu + pad with its backward): 1.06x at 65,536
# values (64 x 16 x 8 x 8) and slower in the digits model, 1.56x at 125,440, 2.1x at 802,816. Small
# models (the digits study size, the tests') therefore never compile.
MIN_NUMEL = 100_000
Pad = tuple[int, int, int, int]  # (left, right, top, bottom), F.pad's order for the last two dims

_lock = threading.Lock()
# enabled: the fused path is taken; compiled: its kernels are torch.compile'd (False runs the same
# functions uncompiled, slower: tests check the math and the autograd wiring without inductor);
# checked: the environment and the compiler were looked at; reason: why compiling is unavailable ('': it is).
_state = {"enabled": True, "compiled": True, "checked": False, "reason": "", "warned": False}
_compiled: dict = {}  # (kernel name, static args, torch threads) -> compiled callable


_cxx_compiler = find_cxx_compiler  # a module attribute, so that a test can replace it


def available() -> bool:
    """Whether the fused kernels are in use in this process (False: torch operations, warned once)."""
    if not _state["enabled"]:
        return False
    if not _state["compiled"]:
        return True
    if not _state["checked"]:  # once per process
        _state["checked"] = True
        if os.environ.get(ENV_VAR, "1") == "0":
            _disable(f"{ENV_VAR}=0")
        elif _cxx_compiler() is None:
            _disable("no C++ compiler found for torch.compile ($CXX, c++, g++, clang++)")
    return not _state["reason"]


def applies(x: Tensor) -> bool:
    """Whether `x` goes through the fused kernels: float32 on the CPU, at least MIN_NUMEL values,
    outside an outer compile."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.numel() >= MIN_NUMEL
            and not torch.compiler.is_compiling() and available())


def set_enabled(enabled: bool, compiled: bool = True) -> None:
    """Switch the fused path on or off for this process (benchmarks and tests compare both);
    compiled=False runs its functions uncompiled (tests)."""
    _state["enabled"], _state["compiled"] = enabled, compiled


def _disable(reason: str) -> None:
    _state["reason"] = reason
    if not _state["warned"] and reason != f"{ENV_VAR}=0":
        _state["warned"] = True
        warnings.warn(f"fused element-wise kernels unavailable ({reason}); training uses torch operations",
                      RuntimeWarning, stacklevel=3)


def cl(x: Tensor) -> Tensor:
    """x in channels-last layout (a no-op when it is already)."""
    return x.contiguous(memory_format=CHANNELS_LAST)


# --- the kernels, as plain torch code for inductor to fuse ---------------------------------------

def _concat_elu_pad_fwd(x: Tensor, add: Optional[Tensor], pad: Pad):
    """-> (F.pad(concat_elu(s), pad) (N, 2C, H', W'), s, e = expm1(-|s|)), s = x [+ add] (N, C, H, W)."""
    s = x if add is None else x + add
    e = torch.expm1(-s.abs())  # elu's negative branch for whichever of s, -s is <= 0
    y = torch.cat([torch.where(s > 0, s, e), torch.where(s < 0, -s, e)], dim=1)
    return F.pad(y, pad), s, e


def _concat_elu_pad_bwd(grad: Tensor, s: Tensor, e: Tensor, pad: Pad) -> Tensor:
    """d/ds of <grad, F.pad(concat_elu(s), pad)>: grad (N, 2C, H', W') -> (N, C, H, W)."""
    left, right, top, bottom = pad
    h, w = grad.shape[2], grad.shape[3]
    grad = grad[:, :, top : h - bottom, left : w - right]
    c = s.shape[1]
    g_pos, g_neg = grad[:, :c], grad[:, c:]
    slope = e + 1.0  # exp(-|s|): elu'(v) = exp(v) for v <= 0, 1 at v = 0 like torch's elu
    return torch.where(s > 0, g_pos, g_pos * slope) - torch.where(s < 0, g_neg, g_neg * slope)


def _gate_fwd(x: Tensor, h: Tensor, cond: Optional[Tensor]):
    """-> (x + a * sigmoid(b), a, sigmoid(b)), (a, b) = (h [+ cond]).chunk(2): x (N, F, H, W), h (N, 2F, H, W)."""
    if cond is not None:
        h = h + cond
    a, b = h.chunk(2, dim=1)
    sig = torch.sigmoid(b)
    return x + a * sig, a, sig


def _gate_bwd(grad: Tensor, a: Tensor, sig: Tensor) -> Tensor:
    """d/dh of <grad, x + a * sigmoid(b)>: (N, F, H, W) -> (N, 2F, H, W); d/dx is grad itself."""
    return torch.cat([grad * sig, grad * a * sig * (1.0 - sig)], dim=1)


def _kernel(fn: Callable, *static) -> Callable:
    """fn compiled with its trailing arguments `static` fixed, sizes symbolic: one compile per key.

    The key holds torch's thread count: inductor's CPU kernels are generated for the count at
    compile time, and a compiled function would keep them when the count changes (the sampler
    runs on one thread, training on all). Each key gets its own code object: dynamo keeps at most
    `recompile_limit` (8) versions per code object, and these are distinct kernels."""
    key = (fn.__name__, static, torch.get_num_threads())
    with _lock:
        if key not in _compiled:
            def kernel(*args):
                return fn(*args, *static)

            name = "_".join([fn.__name__.strip("_")] + [str(v) for v in _flatten(key[1:])])
            code = kernel.__code__.replace(co_name=name)
            specialized = types.FunctionType(code, kernel.__globals__, name, None, kernel.__closure__)
            _compiled[key] = torch.compile(specialized, dynamic=True, fullgraph=True)
        return _compiled[key]


def _flatten(values) -> list:
    return [v for item in values for v in (_flatten(item) if isinstance(item, tuple) else [item])]


def _run(fn: Callable, static: tuple, *tensors):
    """The compiled kernel on `tensors` (detached, channels-last: one layout, no recompiles);
    where compiling fails, the same function uncompiled (the same values) and no kernels after."""
    args = [None if t is None else cl(t.detach()) for t in tensors]
    if _state["compiled"] and available():
        try:
            return _kernel(fn, *static)(*args)
        except Exception as exc:  # inductor's errors have no common base; any failure means no kernels
            _disable(f"torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return fn(*args, *static)


class _ConcatEluPad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, add, pad):
        y, s, e = _run(_concat_elu_pad_fwd, (pad,), x, add)
        ctx.save_for_backward(s, e)
        ctx.pad, ctx.has_add = pad, add is not None
        return y

    @staticmethod
    def backward(ctx, grad):
        s, e = ctx.saved_tensors
        grad_s = _run(_concat_elu_pad_bwd, (ctx.pad,), grad, s, e)
        return grad_s, (grad_s if ctx.has_add else None), None


class _Gate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h, cond):
        out, a, sig = _run(_gate_fwd, (), x, h, cond)
        ctx.save_for_backward(a, sig)
        ctx.has_cond = cond is not None
        return out

    @staticmethod
    def backward(ctx, grad):
        a, sig = ctx.saved_tensors
        grad_h = _run(_gate_bwd, (), grad, a, sig)
        return grad, grad_h, (grad_h if ctx.has_cond else None)


def concat_elu_pad(x: Tensor, pad: Pad = (0, 0, 0, 0), add: Optional[Tensor] = None) -> Tensor:
    """F.pad(concat_elu(x [+ add]), pad) as one kernel: (N, C, H, W) -> (N, 2C, H + top + bottom,
    W + left + right), channels-last. Callers check applies(x) first."""
    return _ConcatEluPad.apply(x, add, tuple(pad))


def gate(x: Tensor, h: Tensor, cond: Optional[Tensor] = None) -> Tensor:
    """x + a * sigmoid(b), (a, b) = (h [+ cond]).chunk(2, dim=1), as one kernel: x (N, F, H, W),
    h and cond (N, 2F, H, W) -> (N, F, H, W), channels-last. Callers check applies(x) first."""
    return _Gate.apply(x, h, cond)
