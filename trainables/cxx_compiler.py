"""The machine's C++ compiler, for the two things built on first use: the fast sampler's native
pixel steps (sampling/native_blocks.py) and inductor's fused training kernels (fused_elementwise.py)."""
from __future__ import annotations

import os
import shutil
from typing import Optional


def find_cxx_compiler() -> Optional[str]:
    """Path of $CXX, else c++, g++ or clang++, the first found on PATH; None where there is none."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None
