"""The compiled gated-resnet pixel steps (native_blocks.cpp): built on first use, cached, loaded by ctypes.

On the CPU in float32, `fast_sample` runs each ul-stream level's chain of gated resnets at a pixel
as one call into native_blocks.cpp instead of ~8 torch operations per block: its matmuls are
register-tiled for the sampler's small rows (16 x 320 by 320 x 80 at ~190 GFLOP/s here, against
~80 for MKL's), and concat_elu, the gate and the biases are fused around them.

The library is compiled with the machine's C++ compiler ($CXX, else c++ or g++) for the machine it
runs on (-march=native), without torch's headers (about a second), into the cache directory
(trainables.cache_files: $SMOOTHING_STUDY_CACHE/native), named by a hash of the source, the
compiler, the flags and the CPU, so nodes of a cluster sharing a home directory each get their own
and a changed source is rebuilt. Parallel builds each write a complete file (atomic rename).

Where no compiler works, `load()` returns None and `unavailable_reason()` says why; the sampler then
runs the same steps on torch operations (set SMOOTHING_NATIVE_BLOCKS=0 to choose that). `library_for`
is that choice for one call of fast_sample, `pixel_steps_in_use` says it in words.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import threading
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from trainables.atomic_write import atomic_write_from
from trainables.cache_files import resolve_cache_dir
from trainables.cxx_compiler import build_key, find_cxx_compiler

SOURCE = Path(__file__).with_name("native_blocks.cpp")
ENV_VAR = "SMOOTHING_NATIVE_BLOCKS"  # "0": never use the compiled steps
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")
COMPILE_TIMEOUT_S = 300


class Block(ctypes.Structure):
    """native_blocks.cpp's `struct Block`, field for field."""

    _fields_ = [(name, ctypes.c_int64) for name in ("n", "f", "k_in", "k_out", "k_skip")] + [
        ("x_slot", ctypes.c_void_p), ("ld_x_slot", ctypes.c_int64),
        ("a_in", ctypes.c_void_p), ("ld_a_in", ctypes.c_int64),
        ("w_in", ctypes.c_void_p),
        ("term", ctypes.c_void_p), ("ld_term", ctypes.c_int64),
        ("skip_a", ctypes.c_void_p), ("ld_skip_a", ctypes.c_int64),
        ("skip_raw", ctypes.c_int64),
        ("w_skip", ctypes.c_void_p),
        ("h_slot", ctypes.c_void_p), ("ld_h_slot", ctypes.c_int64),
        ("a_out", ctypes.c_void_p), ("ld_a_out", ctypes.c_int64),
        ("w_out", ctypes.c_void_p),
        ("base_out", ctypes.c_void_p), ("ld_base_out", ctypes.c_int64),
        ("out", ctypes.c_void_p),
        ("scratch", ctypes.c_void_p),
    ]


class RowBlock(ctypes.Structure):
    """native_blocks.cpp's `struct RowBlock`, field for field."""

    _fields_ = [("n", ctypes.c_int64), ("m", ctypes.c_int64), ("f", ctypes.c_int64),
                ("x_row", ctypes.c_void_p), ("x_row_batch", ctypes.c_int64),
                ("x_win", ctypes.c_void_p)] + [(k, ctypes.c_int64) for k in ("x_win_batch", "x_win_row", "kh_in", "kw_in")] + [
                ("w_in", ctypes.c_void_p), ("bias_in", ctypes.c_void_p),
                ("h_row", ctypes.c_void_p), ("h_row_batch", ctypes.c_int64),
                ("h_win", ctypes.c_void_p)] + [(k, ctypes.c_int64) for k in ("h_win_batch", "h_win_row", "kh_out", "kw_out")] + [
                ("w_out", ctypes.c_void_p),
                ("base_out", ctypes.c_void_p), ("base_out_batch", ctypes.c_int64), ("base_out_ld", ctypes.c_int64),
                ("scratch", ctypes.c_void_p)]


_lock = threading.Lock()
_loaded: dict = {}  # flags -> (library or None, reason)


_compiler = find_cxx_compiler  # a module attribute, so that a test can replace it


def _build(compiler: str, flags: Sequence[str]) -> Path:
    """The library for these flags, compiled into the cache unless it is there already."""
    key = build_key(SOURCE.read_text(), compiler, flags)  # source, compiler, flags and CPU (cxx_compiler.py)
    target = resolve_cache_dir() / "native" / f"native_blocks-{key}.so"
    if target.exists():
        return target

    def compile_into(tmp: Path) -> None:
        done = subprocess.run([compiler, *flags, "-o", str(tmp), str(SOURCE)], capture_output=True, text=True,
                              timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"{Path(compiler).name} failed (exit {done.returncode}): {' | '.join(tail)}")

    return atomic_write_from(target, compile_into)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.smoothing_block_chain.argtypes = [ptr, i64, ptr, i64]
    lib.smoothing_block_chain.restype = None
    lib.smoothing_map.argtypes = [i64, ptr, ptr, i64]
    lib.smoothing_map.restype = None
    lib.smoothing_gemm.argtypes = [i64, i64, i64, ptr, i64, ptr, ptr]
    lib.smoothing_gemm.restype = None
    lib.smoothing_concat_elu.argtypes = [i64, i64, i64, ptr, i64, i64, ptr, i64, i64]
    lib.smoothing_concat_elu.restype = None
    lib.smoothing_conv_rows.argtypes = [i64, i64, ptr, i64, i64, i64, i64, i64, ptr, i64, i64, ptr, i64, i64, ptr, ptr]
    lib.smoothing_conv_rows.restype = None
    lib.smoothing_row_block.argtypes = [ptr, ptr, i64, i64, ptr, i64, i64, ptr, i64, i64, ptr]
    lib.smoothing_row_block.restype = None
    lib.smoothing_vector_width.argtypes = []
    lib.smoothing_vector_width.restype = i64
    return lib


def load(flags: Sequence[str] = FLAGS) -> Optional[ctypes.CDLL]:
    """The compiled library (built once per process and flags), or None where it cannot be built."""
    flags = tuple(flags)
    with _lock:
        if flags not in _loaded:
            if os.environ.get(ENV_VAR, "1") == "0":
                _loaded[flags] = (None, f"{ENV_VAR}=0")
            elif (compiler := _compiler()) is None:
                _loaded[flags] = (None, "no C++ compiler found ($CXX, c++, g++, clang++)")
            else:
                try:
                    _loaded[flags] = (_declare(ctypes.CDLL(str(_build(compiler, flags)))), "")
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    _loaded[flags] = (None, f"building {SOURCE.name} failed: {exc}")
                    portable = tuple(f for f in flags if f != "-march=native")
                    if portable != flags:  # a compiler that does not know -march=native: the generic build
                        try:
                            _loaded[flags] = (_declare(ctypes.CDLL(str(_build(compiler, portable)))), "")
                        except (OSError, RuntimeError, subprocess.SubprocessError):
                            pass
        return _loaded[flags][0]


def unavailable_reason(flags: Sequence[str] = FLAGS) -> str:
    """Why load() returned None ('' when it did not)."""
    load(flags)
    return _loaded[tuple(flags)][1]


_warned_native = False


def pixel_steps_in_use(device: torch.device, dtype: torch.dtype, cuda_graphs: bool = False) -> str:
    """What fast_sample's pixel steps run on by default for a model on `device` in `dtype`, in words
    (it builds the native library where it applies, so that the first batch does not wait for it)."""
    if device.type == "cuda":
        return "CUDA graphs" if cuda_graphs else "torch operations (CUDA)"
    if device.type != "cpu" or dtype != torch.float32:
        return f"torch operations (the native steps run float32 on the CPU, not {dtype} on {device.type})"
    if load() is None:
        return f"torch operations (native steps unavailable: {unavailable_reason()})"
    return "native (compiled trainables/sampling/native_blocks.cpp)"


def library_for(native: Optional[bool], param: Tensor, audit_steps: bool):
    """This library if fast_sample's pixel steps are to use it (see its `native`), else None."""
    global _warned_native
    eligible = param.device.type == "cpu" and param.dtype == torch.float32 and not audit_steps
    if native is False or (native is None and not eligible):
        return None
    if not eligible:
        raise ValueError(f"native pixel steps run a float32 model on the CPU without audit_steps, "
                         f"not {param.dtype} on {param.device}" + (" with audit_steps" if audit_steps else ""))
    lib = load()
    if lib is None:
        reason = unavailable_reason()
        if native:
            raise RuntimeError(f"native pixel steps unavailable: {reason}")
        if not _warned_native:
            _warned_native = True
            warnings.warn(f"fast_sample: native pixel steps unavailable ({reason}); sampling on torch operations, "
                          f"1.6-1.8x slower", RuntimeWarning, stacklevel=3)
    return lib
