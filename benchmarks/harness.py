"""Shared sizes for the pytest-benchmark files: full sizes on CUDA, small ones on CPU."""
import torch

ON_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if ON_CUDA else "cpu"


def size(cuda_value, cpu_value):
    return cuda_value if ON_CUDA else cpu_value
