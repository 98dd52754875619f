"""Kernel-test setup: Triton's interpreter when there is no GPU, poisoned allocations, shared helpers.

TRITON_INTERPRET must be set before triton is first imported; lw_kernels imports it lazily, so
setting it here (conftest runs before the test modules import anything) is early enough.
Every torch.empty / torch.empty_like during a kernel test returns memory filled with NaN (floats)
or 0xA5 (integers), so an element a kernel forgets to write shows up in the comparison.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

_empty, _empty_like = torch.empty, torch.empty_like


def _poison(t):
    if t.dtype.is_floating_point:
        return t.fill_(float("nan"))
    if t.dtype == torch.bool:
        return t.fill_(True)
    return t.fill_(0xA5 if t.dtype == torch.uint8 else -0x5A5A)


@pytest.fixture(autouse=True)
def poisoned_allocations(monkeypatch):
    monkeypatch.setattr(torch, "empty", lambda *a, **k: _poison(_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _poison(_empty_like(*a, **k)))


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(1234)


def _rel_rms(out, ref):
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


@pytest.fixture
def rel_rms():
    """||out - ref|| / ||ref|| in float64; a NaN or inf anywhere in `out` gives inf (fails any bound)."""
    return _rel_rms
