"""Checks of what goes into native_blocks.cpp: the compiled code reads and writes through raw
addresses with the sizes and strides it is handed, so every call in native_chains.py first checks
each tensor's shape, dtype, device and layout here. A mismatch raises ValueError with one line
naming the argument and what was expected against what was given (never an out-of-bounds read)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

# What a layout requires: "channels", the last dimension is contiguous (stride 1); "rows", a 3-D tensor's
# positions are evenly spaced over its first two dimensions (read as one run of rows); "contiguous", all of it.
LAYOUTS = ("channels", "rows", "contiguous")


def _shape_text(shape: Sequence[Optional[int]]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def expect(t: Tensor, name: str, shape: Sequence[Optional[int]], layout: str = "channels") -> Tensor:
    """t itself, if it is a float32 CPU tensor of `shape` (None: any size there) in `layout`; else ValueError."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name}: expected a float32 tensor of shape {_shape_text(shape)}, got {type(t).__name__}")
    got = tuple(t.shape)
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
        raise ValueError(f"{name}: expected shape {_shape_text(shape)}, got {got}")
    if t.dtype != torch.float32:
        raise ValueError(f"{name}: expected float32, got {t.dtype} (shape {got})")
    if t.device.type != "cpu":
        raise ValueError(f"{name}: expected a CPU tensor, got one on {t.device} (shape {got})")
    if layout == "contiguous" and not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor, got shape {got} with strides {t.stride()}")
    if layout in ("channels", "rows") and got[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name}: expected contiguous channels (last stride 1), got shape {got} "
                         f"with strides {t.stride()}")
    if layout == "rows" and got[0] > 1 and t.stride(0) != got[1] * t.stride(1):
        raise ValueError(f"{name}: expected evenly spaced rows (stride[0] = {got[1]} * stride[1]), got shape {got} "
                         f"with strides {t.stride()}")
    return t


def expect_int(value, name: str, low: int, high: Optional[int] = None) -> int:
    """value, if it is an int in [low, high) (high None: no upper bound); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value >= high):
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name}: expected an int in {bound}, got {value!r}")
    return value
