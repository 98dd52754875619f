"""LatentWire's fused kernels: RMS-matched LayerNorm, group-wise INT8/6/4 quantization, gated cross-attention.

Each op has a pure-torch reference (`reference.py`) and a Triton implementation (`<op>.py`: kernels,
launcher, autograd.Function). The public functions below dispatch: CUDA tensors go to Triton,
CPU tensors to the reference. `LW_FORCE_REFERENCE=1` sends CUDA tensors to the reference (to
compare training dynamics of the two paths). `LW_FORCE_TRITON=1` sends CPU tensors to Triton too (with
`TRITON_INTERPRET=1` that runs the interpreter; the kernel tests call the Triton entry points
directly instead). `TRITON_INTERPRET` alone never changes dispatch, so setting it for the kernel
tests cannot slow down other tests in the same process. Triton is imported only when a Triton
path runs, so `import lw_kernels` works where Triton is not installed (CPU users).
"""
from __future__ import annotations

import importlib.util
import os

import torch

from .reference import (
    SUPPORTED_BITS,
    dequantize_ref,
    dequantize_rms_match_ref,
    fake_quant_ref,
    gated_cross_attention_ref,
    packed_row_bytes,
    quantize_ref,
    rms_matched_layer_norm_ref,
)

HAS_TRITON = importlib.util.find_spec("triton") is not None

__all__ = [
    "rms_matched_layer_norm",
    "quantize",
    "dequantize",
    "dequantize_rms_match",
    "packed_row_bytes",
    "fake_quant",
    "gated_cross_attention",
    "SUPPORTED_BITS",
    "HAS_TRITON",
]


def use_triton(t: torch.Tensor) -> bool:
    """True when `t` should take the Triton path (CUDA tensor, or LW_FORCE_TRITON=1)."""
    if not HAS_TRITON or os.environ.get("LW_FORCE_REFERENCE", "") == "1":
        return False
    return t.is_cuda or os.environ.get("LW_FORCE_TRITON", "") == "1"


def rms_matched_layer_norm(x, weight=None, bias=None, target_rms=1.0, eps: float = 1e-5):
    """LayerNorm over the last dim (optional affine), then each row rescaled to RMS `target_rms`.

    out = y * target_rms / sqrt(mean(y^2) + eps), y = layer_norm(x) * weight + bias; fp32 math,
    output in x.dtype. `target_rms` is a float, a 1-element tensor or a tensor of shape x.shape[:-1].
    """
    if use_triton(x):
        from .rms_layernorm import rms_matched_layer_norm_triton

        return rms_matched_layer_norm_triton(x, weight, bias, target_rms, eps)
    return rms_matched_layer_norm_ref(x, weight, bias, target_rms, eps)


def quantize(x: torch.Tensor, bits: int, group_size: int = 32):
    """Symmetric absmax per group -> (packed uint8 (..., packed_row_bytes(D, bits)), fp16 scales (..., D/group_size))."""
    if use_triton(x):
        from .quant import quantize_triton

        return quantize_triton(x, bits, group_size)
    return quantize_ref(x, bits, group_size)


def dequantize(packed, scales, bits: int, group_size: int = 32, dim: int | None = None, dtype=torch.float32):
    """Packed codes + fp16 scales -> values (..., D) in `dtype`."""
    if use_triton(packed):
        from .quant import dequantize_triton

        return dequantize_triton(packed, scales, bits, group_size, dim, dtype)
    return dequantize_ref(packed, scales, bits, group_size, dim, dtype)


def dequantize_rms_match(packed, scales, bits, group_size=32, target_rms=1.0, dim=None, dtype=torch.float32, eps=1e-6):
    """Receiver path in one launch: unpack + dequantize + rescale each row to RMS `target_rms`."""
    if use_triton(packed):
        from .quant import dequantize_rms_match_triton

        return dequantize_rms_match_triton(packed, scales, bits, group_size, target_rms, dim, dtype, eps)
    return dequantize_rms_match_ref(packed, scales, bits, group_size, target_rms, dim, dtype, eps)


class _FakeQuantSTE(torch.autograd.Function):
    """quantize -> dequantize in forward; the gradient passes straight through (identity)."""

    @staticmethod
    def forward(ctx, x, bits, group_size):
        if use_triton(x):
            from .quant import fake_quant_triton

            return fake_quant_triton(x, bits, group_size)
        return fake_quant_ref(x, bits, group_size)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, None, None


def fake_quant(x: torch.Tensor, bits: int, group_size: int = 32) -> torch.Tensor:
    """Quantization-aware training: forward sees the quantized values, backward is the identity (STE)."""
    return _FakeQuantSTE.apply(x, bits, group_size)


def gated_cross_attention(q, k, v, key_padding_mask, gate, residual):
    """residual + tanh(gate) * merge_heads(softmax(q k^T / sqrt(Dh), key_padding_mask) v).

    q (B, H, Lq, Dh); k, v (B, H, Lk, Dh); key_padding_mask (B, Lk) bool, True = real key;
    gate 0-dim or 1-element tensor; residual (B, Lq, H*Dh). Rows with no valid key attend to
    nothing (their attention output is 0). Differentiable in q, k, v, gate and residual.
    """
    if use_triton(q):
        from .cross_attention import gated_cross_attention_triton

        return gated_cross_attention_triton(q, k, v, key_padding_mask, gate, residual)
    return gated_cross_attention_ref(q, k, v, key_padding_mask, gate, residual)
