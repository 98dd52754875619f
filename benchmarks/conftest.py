"""pytest-benchmark setup for lw_kernels: full sizes on CUDA (Triton path), small sizes on CPU (reference path).

Run: `python -m pytest benchmarks -q` (CPU) or on a GPU machine; GPU-side bandwidth tables with
copy-bandwidth ceilings come from benchmarks/gpu_kernels.py instead.
"""
import pytest
import torch

from harness import ON_CUDA


@pytest.fixture
def run(benchmark):
    """benchmark(fn) that waits for the device, so CUDA timings are not just launch times."""

    def timed(fn, *args):
        def call():
            out = fn(*args)
            if ON_CUDA:
                torch.cuda.synchronize()
            return out

        return benchmark(call)

    return timed
