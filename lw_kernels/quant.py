"""Group-wise symmetric INT8/INT6/INT4 quantization in Triton: quantize, dequantize, fake-quant, fused receiver.

Layout and rounding are defined in reference.py (the packer there is the bit-exact spec). Decisions:
- Every op treats the tensor as a flat run of groups (D % group_size == 0 means no group crosses a
  row, and packed rows are whole groups), so one program handles BLOCK_G whole groups and all
  loads/stores are contiguous; non-contiguous inputs are copied first.
- Unpacking is shifts + masks + tl.join/reshape in registers, never gathers, so every byte moved
  from memory is read once with wide loads. INT6 uses the nibble + crumb plane layout for that.
- Division is tl.math.div_rn (IEEE) so codes match the torch reference bit for bit.
- The fused receiver kernel (`dequantize_rms_match`) keeps a whole row in registers (one program
  per row), so rows up to MAX_FUSED_DIM values; longer rows fall back to dequantize + torch.
- The Triton path needs a power-of-two group_size >= 4 (tl.arange); others use the reference.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import (
    check_quant_args,
    dequantize_ref,
    dequantize_rms_match_ref,
    fake_quant_ref,
    packed_row_bytes,
    quantize_ref,
)

MAX_FUSED_DIM = 16384
VALUES_PER_PROGRAM = 4096


@triton.jit
def _codes(x, BITS: tl.constexpr):
    """fp32 groups [BG, G] -> (offset codes int32 [BG, G], fp32 scales [BG], fp16 scales [BG])."""
    QMAX: tl.constexpr = 2 ** (BITS - 1) - 1
    absmax = tl.max(tl.abs(x), axis=1)
    scale16 = tl.minimum(tl.math.div_rn(absmax, QMAX * 1.0), 65504.0).to(tl.float16)
    scale = scale16.to(tl.float32)
    safe = tl.where(scale > 0, scale, 1.0)
    q = tl.math.floor(tl.math.div_rn(x, safe[:, None]) + 0.5)
    q = tl.where(scale[:, None] > 0, q, 0.0)
    q = tl.minimum(tl.maximum(q, -QMAX * 1.0), QMAX * 1.0)
    return q.to(tl.int32) + (QMAX + 1), scale, scale16


@triton.jit
def _unpack(packed_ptr, grp, gmask, BITS: tl.constexpr, G: tl.constexpr, BLOCK_G: tl.constexpr):
    """Load BLOCK_G packed groups (int64 group ids `grp`) -> int32 offset codes [BLOCK_G, G]."""
    GB: tl.constexpr = G * BITS // 8
    base = packed_ptr + grp[:, None] * GB
    if BITS == 8:
        codes = tl.load(base + tl.arange(0, G)[None, :], mask=gmask[:, None], other=0).to(tl.int32)
    elif BITS == 4:
        b = tl.load(base + tl.arange(0, G // 2)[None, :], mask=gmask[:, None], other=0).to(tl.int32)
        codes = tl.reshape(tl.join(b & 15, b >> 4), [BLOCK_G, G])
    else:
        nib = tl.load(base + tl.arange(0, G // 2)[None, :], mask=gmask[:, None], other=0).to(tl.int32)
        crumb = tl.load(base + G // 2 + tl.arange(0, G // 4)[None, :], mask=gmask[:, None], other=0).to(tl.int32)
        lo = tl.reshape(tl.join(nib & 15, nib >> 4), [BLOCK_G, G])
        # join(join(c0, c2), join(c1, c3)) flattens to c0 c1 c2 c3 (index 2r + p).
        hi = tl.join(tl.join(crumb & 3, (crumb >> 4) & 3), tl.join((crumb >> 2) & 3, (crumb >> 6) & 3))
        codes = lo | (tl.reshape(hi, [BLOCK_G, G]) << 4)
    return codes


@triton.jit
def _quantize_kernel(
    x_ptr, packed_ptr, scale_ptr, out_ptr, n_groups,
    BITS: tl.constexpr, G: tl.constexpr, BLOCK_G: tl.constexpr, FAKE: tl.constexpr,
):
    """FAKE=False: write packed codes + fp16 scales. FAKE=True: write the dequantized values instead."""
    QMAX: tl.constexpr = 2 ** (BITS - 1) - 1
    GB: tl.constexpr = G * BITS // 8
    grp = tl.program_id(0).to(tl.int64) * BLOCK_G + tl.arange(0, BLOCK_G)
    gmask = grp < n_groups
    offs = grp[:, None] * G + tl.arange(0, G)[None, :]
    x = tl.load(x_ptr + offs, mask=gmask[:, None], other=0.0).to(tl.float32)
    codes, scale, scale16 = _codes(x, BITS)
    if FAKE:
        val = (codes - (QMAX + 1)).to(tl.float32) * scale[:, None]
        tl.store(out_ptr + offs, val.to(out_ptr.dtype.element_ty), mask=gmask[:, None])
    else:
        tl.store(scale_ptr + grp, scale16, mask=gmask)
        base = packed_ptr + grp[:, None] * GB
        if BITS == 8:
            tl.store(base + tl.arange(0, G)[None, :], codes.to(tl.uint8), mask=gmask[:, None])
        elif BITS == 4:
            lo, hi = tl.split(tl.reshape(codes, [BLOCK_G, G // 2, 2]))
            tl.store(base + tl.arange(0, G // 2)[None, :], (lo | (hi << 4)).to(tl.uint8), mask=gmask[:, None])
        else:
            lo, hi = tl.split(tl.reshape(codes & 15, [BLOCK_G, G // 2, 2]))
            tl.store(base + tl.arange(0, G // 2)[None, :], (lo | (hi << 4)).to(tl.uint8), mask=gmask[:, None])
            even, odd = tl.split(tl.reshape(codes >> 4, [BLOCK_G, G // 4, 2, 2]))
            h0, h2 = tl.split(even)
            h1, h3 = tl.split(odd)
            crumb = h0 | (h1 << 2) | (h2 << 4) | (h3 << 6)
            tl.store(base + G // 2 + tl.arange(0, G // 4)[None, :], crumb.to(tl.uint8), mask=gmask[:, None])


@triton.jit
def _dequantize_kernel(
    packed_ptr, scale_ptr, out_ptr, n_groups,
    BITS: tl.constexpr, G: tl.constexpr, BLOCK_G: tl.constexpr,
):
    QMAX: tl.constexpr = 2 ** (BITS - 1) - 1
    grp = tl.program_id(0).to(tl.int64) * BLOCK_G + tl.arange(0, BLOCK_G)
    gmask = grp < n_groups
    codes = _unpack(packed_ptr, grp, gmask, BITS, G, BLOCK_G)
    scale = tl.load(scale_ptr + grp, mask=gmask, other=0.0).to(tl.float32)
    val = (codes - (QMAX + 1)).to(tl.float32) * scale[:, None]
    offs = grp[:, None] * G + tl.arange(0, G)[None, :]
    tl.store(out_ptr + offs, val.to(out_ptr.dtype.element_ty), mask=gmask[:, None])


@triton.jit
def _dequantize_rms_match_kernel(
    packed_ptr, scale_ptr, out_ptr, t_ptr, t_stride, t_value, eps, groups_per_row,
    BITS: tl.constexpr, G: tl.constexpr, BLOCK_G: tl.constexpr, HAS_T_PTR: tl.constexpr,
):
    """One program per row: unpack + dequantize the row, then scale it to RMS t: y * t / sqrt(mean(y^2) + eps)."""
    QMAX: tl.constexpr = 2 ** (BITS - 1) - 1
    row = tl.program_id(0).to(tl.int64)
    local = tl.arange(0, BLOCK_G)
    gmask = local < groups_per_row
    grp = row * groups_per_row + local
    codes = _unpack(packed_ptr, grp, gmask, BITS, G, BLOCK_G)
    scale = tl.load(scale_ptr + grp, mask=gmask, other=0.0).to(tl.float32)
    y = (codes - (QMAX + 1)).to(tl.float32) * scale[:, None]
    y = tl.where(gmask[:, None], y, 0.0)
    mean_sq = tl.sum(tl.sum(y * y, axis=1), axis=0) / (groups_per_row * G)
    if HAS_T_PTR:
        t = tl.load(t_ptr + row * t_stride).to(tl.float32)
    else:
        t = t_value
    y = y * (t / tl.sqrt(mean_sq + eps))
    offs = grp[:, None] * G + tl.arange(0, G)[None, :]
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=gmask[:, None])


def _triton_group_ok(group_size: int) -> bool:
    return group_size >= 4 and group_size & (group_size - 1) == 0


def _block_groups(group_size: int, block_groups: int | None) -> int:
    return block_groups or max(1, VALUES_PER_PROGRAM // group_size)


def quantize_triton(x, bits: int, group_size: int = 32, block_groups: int | None = None, num_warps: int = 4):
    dim = x.shape[-1]
    check_quant_args(dim, bits, group_size)
    if not _triton_group_ok(group_size):
        return quantize_ref(x, bits, group_size)
    xc = x.contiguous()
    n_groups = xc.numel() // group_size
    packed = torch.empty(*x.shape[:-1], packed_row_bytes(dim, bits), dtype=torch.uint8, device=x.device)
    scales = torch.empty(*x.shape[:-1], dim // group_size, dtype=torch.float16, device=x.device)
    bg = _block_groups(group_size, block_groups)
    if n_groups:
        _quantize_kernel[(triton.cdiv(n_groups, bg),)](
            xc, packed, scales, xc, n_groups, BITS=bits, G=group_size, BLOCK_G=bg, FAKE=False, num_warps=num_warps
        )
    return packed, scales


def fake_quant_triton(x, bits: int, group_size: int = 32, block_groups: int | None = None, num_warps: int = 4):
    """Forward value of fake_quant in one launch (read x, write dequantized x); no autograd here."""
    check_quant_args(x.shape[-1], bits, group_size)
    if not _triton_group_ok(group_size):
        return fake_quant_ref(x, bits, group_size)
    xc = x.contiguous()
    out = torch.empty_like(xc)
    n_groups = xc.numel() // group_size
    bg = _block_groups(group_size, block_groups)
    if n_groups:
        _quantize_kernel[(triton.cdiv(n_groups, bg),)](
            xc, xc, xc, out, n_groups, BITS=bits, G=group_size, BLOCK_G=bg, FAKE=True, num_warps=num_warps
        )
    return out


def _check_packed(packed, scales, bits, group_size, dim):
    dim = scales.shape[-1] * group_size if dim is None else dim
    check_quant_args(dim, bits, group_size)
    if packed.dtype != torch.uint8:
        raise ValueError(f"packed must be uint8, got {packed.dtype}")
    if packed.shape[-1] != packed_row_bytes(dim, bits):
        raise ValueError(f"packed rows hold {packed.shape[-1]} bytes, expected {packed_row_bytes(dim, bits)}")
    if scales.shape[-1] != dim // group_size or scales.shape[:-1] != packed.shape[:-1]:
        raise ValueError(f"scales shape {tuple(scales.shape)} does not match packed {tuple(packed.shape)}")
    return dim


def dequantize_triton(packed, scales, bits, group_size=32, dim=None, dtype=torch.float32,
                      block_groups: int | None = None, num_warps: int = 4):
    dim = _check_packed(packed, scales, bits, group_size, dim)
    if not _triton_group_ok(group_size):
        return dequantize_ref(packed, scales, bits, group_size, dim, dtype)
    pc, sc = packed.contiguous(), scales.contiguous()
    out = torch.empty(*packed.shape[:-1], dim, dtype=dtype, device=packed.device)
    n_groups = sc.numel()
    bg = _block_groups(group_size, block_groups)
    if n_groups:
        _dequantize_kernel[(triton.cdiv(n_groups, bg),)](
            pc, sc, out, n_groups, BITS=bits, G=group_size, BLOCK_G=bg, num_warps=num_warps
        )
    return out


def dequantize_rms_match_triton(packed, scales, bits, group_size=32, target_rms=1.0, dim=None,
                                dtype=torch.float32, eps=1e-6, num_warps: int | None = None):
    dim = _check_packed(packed, scales, bits, group_size, dim)
    if not _triton_group_ok(group_size) or dim > MAX_FUSED_DIM:
        return dequantize_rms_match_ref(packed, scales, bits, group_size, target_rms, dim, dtype, eps)
    pc, sc = packed.contiguous(), scales.contiguous()
    rows = sc.numel() // (dim // group_size)
    out = torch.empty(*packed.shape[:-1], dim, dtype=dtype, device=packed.device)
    if isinstance(target_rms, torch.Tensor):
        t = target_rms.to(device=packed.device, dtype=torch.float32).reshape(-1)
        if t.numel() not in (1, rows):
            raise ValueError(f"target_rms must hold 1 or {rows} values, got {t.numel()}")
        t_ptr, t_stride, t_value, has_t = t, (0 if t.numel() == 1 else 1), 0.0, True
    else:
        t_ptr, t_stride, t_value, has_t = sc, 0, float(target_rms), False
    groups_per_row = dim // group_size
    if num_warps is None:
        num_warps = 4 if dim <= 4096 else 8
    if rows:
        _dequantize_rms_match_kernel[(rows,)](
            pc, sc, out, t_ptr, t_stride, t_value, eps, groups_per_row,
            BITS=bits, G=group_size, BLOCK_G=triton.next_power_of_2(groups_per_row), HAS_T_PTR=has_t,
            num_warps=num_warps,
        )
    return out
