"""Test-wide settings: the tests use tiny models, for which one intra-op thread is the
fastest choice and keeps timings stable on a shared 2-core CI machine."""
import torch

torch.set_num_threads(1)
