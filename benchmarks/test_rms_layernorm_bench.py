"""RMS-matched LayerNorm forward and backward (32768x4096 bf16 on CUDA; 256x576 fp32 on CPU)."""
import torch
from harness import DEVICE, size

import lw_kernels

ROWS, D = size(32768, 256), size(4096, 576)
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32


def _inputs():
    x = torch.randn(ROWS, D, device=DEVICE, dtype=DTYPE, requires_grad=True)
    w = torch.randn(D, device=DEVICE, dtype=DTYPE, requires_grad=True)
    b = torch.randn(D, device=DEVICE, dtype=DTYPE, requires_grad=True)
    return x, w, b


def test_rms_layernorm_forward(run):
    x, w, b = _inputs()
    with torch.no_grad():
        out = run(lw_kernels.rms_matched_layer_norm, x, w, b, 0.02)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_rms_layernorm_backward(run):
    x, w, b = _inputs()
    out = lw_kernels.rms_matched_layer_norm(x, w, b, 0.02)
    g = torch.randn_like(out)
    grads = run(lambda: torch.autograd.grad(out, (x, w, b), g, retain_graph=True))
    assert all(torch.isfinite(t).all() for t in grads)
