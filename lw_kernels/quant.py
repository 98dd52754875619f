"""Group-wise symmetric INT8/INT6/INT4 quantization in Triton: quantize, dequantize, fake-quant, fused receiver.

Layout and rounding are defined in reference.py (the packer there is the bit-exact spec). Decisions:
- Every op treats the tensor as a flat run of groups (D % group_size == 0 means no group crosses a
  row, and packed rows are whole groups), so one program handles BLOCK_G whole groups and all
  loads/stores are contiguous; non-contiguous inputs are copied first.
- Unpacking is shifts + masks + tl.join/reshape in registers, never gathers, so every byte moved
  from memory is read once with wide loads. INT6 uses the nibble + crumb plane layout for that.
- Codes match the torch reference (IEEE x / scale, + 0.5, floor) bit for bit, computed without the
  quarter-rate units that made the first version issue-bound on H100 (see `_codes`): a per-group
  reciprocal + fma correction instead of a division per value, and floor by a magic-number add.
- INT4/INT6 codes are ORed into 32-bit words in registers and stored as words (see _quantize_kernel).
- The fused receiver kernel (`dequantize_rms_match`) keeps a whole row in registers (one program
  per row), so rows up to MAX_FUSED_DIM values; longer rows fall back to dequantize + torch.
- The Triton path needs a power-of-two group_size >= 4 (tl.arange); others use the reference.
- `target_rms` is checked by the reference's `row_targets` on every path (float, 1-element tensor,
  or one value per row of shape packed.shape[:-1] or + (1,)), so the fallbacks accept the same.
"""
from __future__ import annotations

import os

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
    row_targets,
)

MAX_FUSED_DIM = 16384
VALUES_PER_PROGRAM = 4096
# Per-group reciprocal + fma correction instead of a division per value (see _codes). Module-level
# so benchmarks/gpu_kernels.py can time both; the interpreter always takes div_rn.
QUANT_FAST_DIV = True


def _fast_div() -> bool:
    return QUANT_FAST_DIV and os.environ.get("TRITON_INTERPRET", "0") != "1"


def _word_packing(bits: int, group_size: int) -> bool:
    """Mirrors the kernel's WORDS: INT4/INT6 groups written as whole 32-bit words."""
    return bits in (4, 6) and group_size % 16 == 0


@triton.jit
def _group_scale(absmax, BITS: tl.constexpr):
    """Per-group absmax -> (fp32 scale, fp16 scale) = fp16(min(absmax / qmax, 65504))."""
    QMAX: tl.constexpr = 2 ** (BITS - 1) - 1
    scale16 = tl.minimum(tl.math.div_rn(absmax, QMAX * 1.0), 65504.0).to(tl.float16)
    return scale16.to(tl.float32), scale16


@triton.jit
def _codes(x, scale, BITS: tl.constexpr, FAST_DIV: tl.constexpr):
    """fp32 values + per-group fp32 scale (broadcastable) -> offset codes int32 = clamp(floor(x/s + 0.5)) + 2^(b-1).

    Bit-identical to the reference's RN(RN(x / s) + 0.5), floor, clamp; but cheap: the H100 ran
    the first version issue-bound on MUFU/FRND/F2I (quarter-rate units), not on memory.
    - FAST_DIV: one correctly rounded reciprocal r = RN(1/s) per group, then per value the
      correction CUDA's own div.rn.f32 fast path uses (q = x r; e = fma(-s, q, x) exact;
      q += r e; Markstein 1990), with no MUFU/FCHK per value. Off under the interpreter, whose
      fma is not fused (it rounds twice); there div_rn is numpy's IEEE division.
    - floor without FRND/F2I: q is clamped to [-QMAX-1, QMAX+1] (the final clamp is unchanged by
      this), so u = RN(t + 1.5*2^23) holds RNE(t) in its low mantissa bits; floor = RNE(t) - (RNE(t) > t).
    """
    QMAX: tl.constexpr = 2 ** (BITS - 1) - 1
    safe = tl.where(scale > 0, scale, 1.0)
    if FAST_DIV:
        r = tl.math.div_rn(tl.full(safe.shape, 1.0, tl.float32), safe)
        q0 = x * r
        q = tl.math.fma(r, tl.math.fma(-safe, q0, x), q0)
    else:
        q = tl.math.div_rn(x, safe)
    q = tl.minimum(tl.maximum(q, -QMAX - 1.0), QMAX + 1.0)
    t = q + 0.5
    u = t + 12582912.0
    rne = u - 12582912.0
    code = u.to(tl.int32, bitcast=True) - (0x4B400000 - (QMAX + 1)) - (rne > t).to(tl.int32)
    code = tl.minimum(tl.maximum(code, 1), 2 * QMAX + 1)
    return tl.where(scale > 0, code, QMAX + 1)


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
    BITS: tl.constexpr, G: tl.constexpr, BLOCK_G: tl.constexpr, FAKE: tl.constexpr, FAST_DIV: tl.constexpr,
):
    """FAKE=False: write packed codes + fp16 scales. FAKE=True: write the dequantized values instead.

    INT4 and INT6 with G % 16 == 0 load each group as [G/16, 2, 8] (8 contiguous values
    per thread, one 16-byte load at bf16) and OR codes into 32-bit words in registers
    (packed_ptr is then an int32 view): INT4 word k = codes 8k..8k+7 at bit 4i; INT6 = 4 such
    nibble words, then 2 crumb words, crumb word m = high 2 bits of codes 16m..16m+15 at bit 2i.
    That is the reference byte layout read little-endian, written with 4-byte stores.
    """
    QMAX: tl.constexpr = 2 ** (BITS - 1) - 1
    WORDS: tl.constexpr = (not FAKE) and (BITS == 4 or BITS == 6) and G % 16 == 0
    grp = tl.program_id(0).to(tl.int64) * BLOCK_G + tl.arange(0, BLOCK_G)
    gmask = grp < n_groups
    if WORDS:
        C: tl.constexpr = G // 16
        WPG: tl.constexpr = G * BITS // 32  # 32-bit words per group
        g3 = grp[:, None, None]
        a3 = tl.arange(0, C)[None, :, None]
        b3 = tl.arange(0, 2)[None, None, :]
        i = tl.arange(0, 8)[None, None, None, :]
        x = tl.load(x_ptr + (g3 * G + a3 * 16 + b3 * 8)[:, :, :, None] + i,
                    mask=gmask[:, None, None, None], other=0.0).to(tl.float32)
        scale, scale16 = _group_scale(tl.max(tl.max(tl.max(tl.abs(x), axis=3), axis=2), axis=1), BITS)
        tl.store(scale_ptr + grp, scale16, mask=gmask)
        codes = _codes(x, scale[:, None, None, None], BITS, FAST_DIV)
        nib = tl.sum((codes & 15) << (4 * i), axis=3)  # [BG, C, 2]: word 2a + b of the group
        tl.store(packed_ptr + g3 * WPG + a3 * 2 + b3, nib, mask=gmask[:, None, None])
        if BITS == 6:
            crumb = tl.sum(tl.sum((codes >> 4) << (2 * (8 * b3[:, :, :, None] + i)), axis=3), axis=2)  # [BG, C]
            tl.store(packed_ptr + grp[:, None] * WPG + G // 8 + tl.arange(0, C)[None, :], crumb, mask=gmask[:, None])
    else:
        offs = grp[:, None] * G + tl.arange(0, G)[None, :]
        x = tl.load(x_ptr + offs, mask=gmask[:, None], other=0.0).to(tl.float32)
        scale, scale16 = _group_scale(tl.max(tl.abs(x), axis=1), BITS)
        codes = _codes(x, scale[:, None], BITS, FAST_DIV)
        if FAKE:
            val = (codes - (QMAX + 1)).to(tl.float32) * scale[:, None]
            tl.store(out_ptr + offs, val.to(out_ptr.dtype.element_ty), mask=gmask[:, None])
        else:
            GB: tl.constexpr = G * BITS // 8
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
    # Word packing writes int32 words; each group is a whole number of them, and torch allocations are aligned.
    packed_out = packed.view(-1).view(torch.int32) if _word_packing(bits, group_size) and packed.numel() else packed
    if n_groups:
        _quantize_kernel[(triton.cdiv(n_groups, bg),)](
            xc, packed_out, scales, xc, n_groups, BITS=bits, G=group_size, BLOCK_G=bg, FAKE=False,
            FAST_DIV=_fast_div(), num_warps=num_warps,
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
            xc, xc, xc, out, n_groups, BITS=bits, G=group_size, BLOCK_G=bg, FAKE=True,
            FAST_DIV=_fast_div(), num_warps=num_warps,
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
    t = row_targets(target_rms, tuple(packed.shape[:-1]))  # the reference's rule, checked before any launch
    pc, sc = packed.contiguous(), scales.contiguous()
    rows = sc.numel() // (dim // group_size)
    out = torch.empty(*packed.shape[:-1], dim, dtype=dtype, device=packed.device)
    if isinstance(t, torch.Tensor):
        # 0-d: one value for every row (stride 0); else one per row, in packed's row-major row order
        t_ptr, t_stride, t_value, has_t = t.to(packed.device).reshape(-1), (0 if t.dim() == 0 else 1), 0.0, True
    else:
        t_ptr, t_stride, t_value, has_t = sc, 0, t, False
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
