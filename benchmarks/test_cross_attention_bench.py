"""Gated cross-attention forward and forward+backward at the translator's shape (CUDA) or a small one (CPU)."""
import torch
from harness import DEVICE, size

import lw_kernels

B, H, LQ, LK, DH = size(16, 2), size(16, 4), 64, size(256, 128), 64
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32


def _inputs():
    q = torch.randn(B, H, LQ, DH, device=DEVICE, dtype=DTYPE, requires_grad=True)
    k = torch.randn(B, H, LK, DH, device=DEVICE, dtype=DTYPE, requires_grad=True)
    v = torch.randn(B, H, LK, DH, device=DEVICE, dtype=DTYPE, requires_grad=True)
    mask = torch.arange(LK, device=DEVICE)[None, :] < torch.randint(1, LK + 1, (B, 1), device=DEVICE)
    gate = torch.tensor(0.3, device=DEVICE, dtype=DTYPE, requires_grad=True)
    res = torch.randn(B, LQ, H * DH, device=DEVICE, dtype=DTYPE, requires_grad=True)
    return q, k, v, mask, gate, res


def test_cross_attention_forward(run):
    args = _inputs()
    with torch.no_grad():
        out = run(lw_kernels.gated_cross_attention, *args)
    assert torch.isfinite(out).all()


def test_cross_attention_forward_backward(run):
    q, k, v, mask, gate, res = _inputs()
    g = torch.randn(B, LQ, H * DH, device=DEVICE, dtype=DTYPE)

    def step():
        out = lw_kernels.gated_cross_attention(q, k, v, mask, gate, res)
        return torch.autograd.grad(out, (q, k, v, gate, res), g)

    grads = run(step)
    assert all(torch.isfinite(t).all() for t in grads)
