"""The machine's C++ compiler, for the two things built on first use: the fast sampler's native
pixel steps (sampling/native_blocks.py) and inductor's fused training kernels (fused_elementwise.py);
and the key a -march=native build is cached under (`build_key`): the source, the compiler's identity,
the flags and the CPU (`cpu_description`), so that machines sharing a cache directory (a cluster's
nodes, two Macs with one home directory) never load each other's build."""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Optional, Sequence

# /proc/cpuinfo fields that name a CPU: x86 (vendor, family, model, stepping, name), ARM (implementer,
# architecture, variant, part, revision). Feature flags go in by hash (hundreds of words).
_CPUINFO_NAME = ("vendor_id", "cpu family", "model", "stepping", "model name", "Hardware",
                 "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "CPU revision")
_CPUINFO_FEATURES = ("flags", "Features", "isa")


def find_cxx_compiler() -> Optional[str]:
    """Path of $CXX, else c++, g++ or clang++, the first found on PATH; None where there is none."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _read_cpuinfo() -> str:
    """/proc/cpuinfo's text ('' where it cannot be read); a module attribute, so that a test can replace it."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _sysctl(*args: str) -> str:
    """`sysctl args`'s output ('' where it fails); a module attribute, so that a test can replace it."""
    try:
        done = subprocess.run(["sysctl", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _linux_cpu() -> str:
    name, features = [], set()
    for line in _read_cpuinfo().splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in _CPUINFO_NAME and f"{key}={value}" not in name:
            name.append(f"{key}={value}")
        elif key in _CPUINFO_FEATURES:
            features.add(" ".join(sorted(value.split())))
    if not name and not features:
        return ""
    return f"{'; '.join(name)}; features {_digest(chr(10).join(sorted(features)))}"


def _macos_cpu() -> str:
    brand = _sysctl("-n", "machdep.cpu.brand_string")
    # hw.optional.*: the instruction-set extensions (arm64 and x86); machdep.cpu.*features: x86's CPUID words
    features = "\n".join(filter(None, [_sysctl("hw.optional"), _sysctl("-n", "machdep.cpu.features"),
                                       _sysctl("-n", "machdep.cpu.leaf7_features")]))
    if not brand and not features:
        return ""
    return f"{brand}; features {_digest(features)}"


def cpu_description() -> str:
    """What a -march=native build depends on, naming the CPU: `system machine: <CPU>`, with the CPU's
    name fields and a hash of its feature flags from /proc/cpuinfo (Linux) or sysctl (macOS); elsewhere,
    or where those cannot be read, platform.processor() (and Windows' PROCESSOR_IDENTIFIER)."""
    system, machine = platform.system(), platform.machine()
    cpu = _linux_cpu() if system == "Linux" else _macos_cpu() if system == "Darwin" else ""
    if not cpu:
        named = [platform.processor(), os.environ.get("PROCESSOR_IDENTIFIER", "")]
        cpu = " ".join(filter(None, named)) or "unknown CPU"
    return f"{system} {machine}: {cpu}"


def compiler_identity(compiler: str) -> str:
    """The compiler's path and its `--version` text (a changed or updated compiler rebuilds)."""
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60)
        version = done.stdout.strip() or done.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        version = f"(--version failed: {type(exc).__name__})"
    return f"{compiler}\n{version}"


def build_key(source: str, compiler: str, flags: Sequence[str]) -> str:
    """20 hex digits naming a build of `source` by `compiler` with `flags` on this CPU."""
    parts = [source, compiler_identity(compiler), " ".join(flags), cpu_description()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]
