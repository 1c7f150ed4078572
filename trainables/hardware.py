"""A one-line description of the hardware a trial trains on, for the timing tables."""
from __future__ import annotations

import platform

import torch


def describe_hardware(device: torch.device) -> str:
    """e.g. 'cuda: NVIDIA H200 x1' or 'cpu: Intel(R) Xeon(R) ... (2 torch threads)'."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda: {torch.cuda.get_device_name(index)} x{torch.cuda.device_count()} visible"
    return f"cpu: {_cpu_model()} ({torch.get_num_threads()} torch threads)"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
