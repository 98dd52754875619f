"""Pure-torch references for every op in lw_kernels; readable in a minute, used on the CPU and by tests.

Decisions shared with the Triton kernels (they must agree bit for bit where the tests say so):
- RMS-matched LayerNorm computes in fp32 and uses one `eps` for both the LayerNorm variance and
  the RMS of the affine output.
- Quantization is symmetric absmax per group of `group_size` consecutive values of the last dim;
  scale = fp16(absmax / qmax); code = clamp(floor(x / scale + 0.5), -qmax, qmax) + 2**(bits-1),
  i.e. round-half-up, chosen over torch.round's half-to-even because it is one exact fp32 formula
  that Triton evaluates identically. A group of zeros (or whose scale underflows fp16) gets scale 0
  and codes equal to the offset. Scales saturate at the fp16 maximum (65504).
- Byte layout of a group (GB = group_size * bits / 8 bytes, groups laid out in order):
  INT8: one code per byte. INT4: byte j = c[2j] | c[2j+1] << 4.
  INT6: two planes per group: a nibble plane of group_size/2 bytes holding the low 4 bits
  exactly as INT4 does, then a crumb plane of group_size/4 bytes, byte j holding the high 2 bits
  of c[4j + p] at bit 2p. Planes keep every load contiguous and every unpack a shift and a mask.
- dequantize_rms_match's `target_rms` is a float, a 1-element tensor, or one value per row of shape
  packed.shape[:-1] (or that shape + (1,)); `row_targets` checks it for both paths, so a per-row
  vector can never be broadcast along the value axis (rows == dim would otherwise pass silently).
- D % group_size != 0 raises ValueError (no padding: a padded packet would silently carry values
  the receiver never sent). INT4 needs an even group_size and INT6 one divisible by 4.
- Gated cross-attention: masked keys get probability 0; a query row with no valid key outputs 0
  (not the uniform average that a large-negative fill would give).
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

SUPPORTED_BITS = (4, 6, 8)
FP16_MAX = 65504.0


# ----------------------------------------------------------------------------- RMS-matched LN
def rms_matched_layer_norm_ref(x, weight=None, bias=None, target_rms=1.0, eps: float = 1e-5):
    """y = LayerNorm(x) * weight + bias; out = y * target_rms / sqrt(mean(y^2) + eps), per row."""
    xf = x.float()
    y = F.layer_norm(xf, (x.shape[-1],), None, None, eps)
    if weight is not None:
        y = y * weight.float()
    if bias is not None:
        y = y + bias.float()
    rms = torch.sqrt(y.pow(2).mean(-1, keepdim=True) + eps)
    t = target_rms
    if isinstance(t, torch.Tensor):
        t = t.float()
        t = t.reshape(()) if t.numel() == 1 else t.reshape(*x.shape[:-1], 1)
    return (y * (t / rms)).to(x.dtype)


# ----------------------------------------------------------------------------- quantization
def check_quant_args(dim: int, bits: int, group_size: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    if group_size <= 0:
        raise ValueError(f"group_size must be positive, got {group_size}")
    if bits == 4 and group_size % 2:
        raise ValueError(f"INT4 packs two codes per byte: group_size must be even, got {group_size}")
    if bits == 6 and group_size % 4:
        raise ValueError(f"INT6 packs four codes in three bytes: group_size must be a multiple of 4, got {group_size}")
    if dim % group_size:
        raise ValueError(
            f"last dim {dim} is not a multiple of group_size {group_size}; pad the row yourself or pick a divisor"
        )


def packed_row_bytes(dim: int, bits: int) -> int:
    """Bytes one row of `dim` values occupies once packed at `bits` bits per value."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    if (dim * bits) % 8:
        raise ValueError(f"{dim} values at {bits} bits do not fill whole bytes")
    return dim * bits // 8


def quantize_codes_ref(x, bits: int, group_size: int = 32):
    """Unsigned codes (int32, offset by 2**(bits-1)) and fp16 scales; shared by quantize/fake_quant."""
    dim = x.shape[-1]
    check_quant_args(dim, bits, group_size)
    qmax = 2 ** (bits - 1) - 1
    g = x.float().reshape(*x.shape[:-1], dim // group_size, group_size)
    absmax = g.abs().amax(-1, keepdim=True)
    # tensor / tensor: PyTorch's CUDA division by a Python scalar multiplies by its reciprocal,
    # which is not correctly rounded and would break bit-exactness with the kernels.
    scale16 = torch.clamp(absmax / torch.full_like(absmax, qmax), max=FP16_MAX).to(torch.float16)
    scale = scale16.float()
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.floor(g / safe + 0.5)
    q = torch.where(scale > 0, q, torch.zeros_like(q)).clamp(-qmax, qmax)
    codes = (q + 2 ** (bits - 1)).to(torch.int32).reshape(x.shape)
    return codes, scale16.squeeze(-1)


def pack_codes_ref(codes, bits: int, group_size: int):
    """int32 codes (..., D) -> uint8 (..., D*bits/8) in the layout described in the module docstring."""
    lead, dim = codes.shape[:-1], codes.shape[-1]
    c = codes.to(torch.int32).reshape(-1, dim // group_size, group_size)
    if bits == 8:
        packed = c
    elif bits == 4:
        packed = c[..., 0::2] | (c[..., 1::2] << 4)
    else:
        nib = (c[..., 0::2] & 15) | ((c[..., 1::2] & 15) << 4)
        hi = c >> 4
        crumb = hi[..., 0::4] | (hi[..., 1::4] << 2) | (hi[..., 2::4] << 4) | (hi[..., 3::4] << 6)
        packed = torch.cat([nib, crumb], dim=-1)
    return packed.to(torch.uint8).reshape(*lead, packed_row_bytes(dim, bits))


def unpack_codes_ref(packed, bits: int, group_size: int, dim: int):
    """Inverse of pack_codes_ref: uint8 (..., D*bits/8) -> int32 codes (..., D)."""
    lead = packed.shape[:-1]
    gb = group_size * bits // 8
    p = packed.to(torch.int32).reshape(-1, dim // group_size, gb)
    if bits == 8:
        c = p
    elif bits == 4:
        c = torch.stack([p & 15, p >> 4], dim=-1).flatten(-2)
    else:
        nib, crumb = p[..., : group_size // 2], p[..., group_size // 2 :]
        lo = torch.stack([nib & 15, nib >> 4], dim=-1).flatten(-2)
        hi = torch.stack([(crumb >> s) & 3 for s in (0, 2, 4, 6)], dim=-1).flatten(-2)
        c = lo | (hi << 4)
    return c.reshape(*lead, dim)


def quantize_ref(x, bits: int, group_size: int = 32):
    codes, scales = quantize_codes_ref(x, bits, group_size)
    return pack_codes_ref(codes, bits, group_size), scales


def dequantize_ref(packed, scales, bits: int, group_size: int = 32, dim: int | None = None, dtype=torch.float32):
    dim = scales.shape[-1] * group_size if dim is None else dim
    check_quant_args(dim, bits, group_size)
    if packed.shape[-1] != packed_row_bytes(dim, bits):
        raise ValueError(f"packed rows hold {packed.shape[-1]} bytes, expected {packed_row_bytes(dim, bits)}")
    if scales.shape[-1] != dim // group_size:
        raise ValueError(f"scales hold {scales.shape[-1]} groups per row, expected {dim // group_size}")
    codes = unpack_codes_ref(packed, bits, group_size, dim)
    q = (codes - 2 ** (bits - 1)).float().reshape(*codes.shape[:-1], dim // group_size, group_size)
    return (q * scales.float().unsqueeze(-1)).reshape(codes.shape).to(dtype)


def row_targets(target_rms, rows_shape: tuple[int, ...]):
    """``target_rms`` of dequantize_rms_match as one value for every row, checked against the rows.

    Accepted (the Triton path and this reference take exactly the same): a real number, any
    1-element tensor (broadcast to every row), or one value per row as a tensor of shape
    ``rows_shape`` (= packed.shape[:-1]) or ``(*rows_shape, 1)``. Returns a float, a 0-d fp32
    tensor, or an fp32 tensor of shape ``rows_shape``. Anything else raises: a flat (rows,) vector
    for batched rows, or a transposed one, would silently pair targets with the wrong rows.
    """
    if isinstance(target_rms, torch.Tensor):
        if target_rms.dtype == torch.bool or target_rms.is_complex():
            raise TypeError(f"target_rms must be a real tensor, got dtype {target_rms.dtype}")
        if target_rms.numel() == 1:
            return target_rms.float().reshape(())
        shape = tuple(target_rms.shape)
        if shape == tuple(rows_shape) or shape == (*rows_shape, 1):
            return target_rms.float().reshape(rows_shape)
        raise ValueError(
            f"target_rms of shape {shape} does not fit rows of shape {tuple(rows_shape)}: pass a float, "
            f"a 1-element tensor, or one value per row of shape {tuple(rows_shape)} or {(*rows_shape, 1)}"
        )
    if isinstance(target_rms, bool) or not isinstance(target_rms, numbers.Real):  # numpy scalars too
        raise TypeError(f"target_rms must be a float or a tensor, got {type(target_rms).__name__}")
    return float(target_rms)


def dequantize_rms_match_ref(packed, scales, bits, group_size=32, target_rms=1.0, dim=None, dtype=torch.float32, eps=1e-6):
    """dequantize, then each row (last dim) scaled to RMS t: y * t / sqrt(mean(y^2) + eps); t as in row_targets."""
    y = dequantize_ref(packed, scales, bits, group_size, dim, torch.float32)
    t = row_targets(target_rms, tuple(y.shape[:-1]))
    if isinstance(t, torch.Tensor):
        t = t.to(y.device).unsqueeze(-1)
    return (y * (t / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + eps))).to(dtype)


def fake_quant_ref(x, bits: int, group_size: int = 32):
    """Forward value of fake_quant (no STE here: the public fake_quant wraps it)."""
    codes, scales = quantize_codes_ref(x, bits, group_size)
    q = (codes - 2 ** (bits - 1)).float().reshape(*x.shape[:-1], -1, group_size)
    return (q * scales.float().unsqueeze(-1)).reshape(x.shape).to(x.dtype)


# ----------------------------------------------------------------------------- cross-attention
def gated_cross_attention_ref(q, k, v, key_padding_mask, gate, residual):
    """residual + tanh(gate) * merge_heads(softmax(q k^T / sqrt(Dh), masked) v); empty rows -> 0."""
    B, H, Lq, Dh = q.shape
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(Dh)
    valid = key_padding_mask.bool()[:, None, None, :]
    scores = scores.masked_fill(~valid, float("-inf"))
    any_valid = valid.any(-1, keepdim=True)
    probs = torch.softmax(torch.where(any_valid, scores, torch.zeros_like(scores)), dim=-1)
    probs = torch.where(valid, probs, torch.zeros_like(probs))
    attn = torch.matmul(probs, v.float())
    merged = attn.transpose(1, 2).reshape(B, Lq, H * Dh)
    out = residual.float() + torch.tanh(gate.float().reshape(())) * merged
    return out.to(residual.dtype)
