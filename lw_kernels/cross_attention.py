"""Fused gated cross-attention in Triton: out = residual + tanh(gate) * merge_heads(softmax(q k^T / sqrt(Dh)) v).

The translator's K soft-token queries (8-64) attend over a source LLM's hidden states (hundreds of
keys, padded per batch row). Decisions:
- Flash-style forward (FlashAttention-2, Dao 2023): one program per (query block, batch*head),
  online softmax over key blocks in the exp2 domain, never materialising the Lq x Lk scores.
  The gate's tanh, the head merge and the residual add happen in the epilogue, so the op writes
  its output once, already in (B, Lq, H*Dh) layout.
- Masked keys get probability 0; a row with no valid key keeps l = 0 and outputs 0 (the running
  max is clamped to 0 while it is still -inf so no NaN appears). Its LSE is stored as +inf, which
  makes every recomputed probability 0 in the backward.
- Forward also stores the unscaled attention output (B, Lq, H*Dh) and the LSE (B*H, Lq): the gate's
  gradient needs sum(g * attn) even when tanh(gate) = 0 (the usual zero init), which (out -
  residual) / tanh(gate) could not give.
- Backward recomputes probabilities from the LSE in two kernels without atomics: dQ (which also
  writes delta = rowsum(g * attn)), then dK/dV looping over query blocks.
- Loop trip counts are constexpr powers of two of the block count, with a runtime skip of blocks
  past the end: few compiled variants, and no runtime loop bound, which the Triton 3.6 interpreter
  cannot take under numpy >= 2.3.
- fp32 inputs use IEEE fp32 dots (exact, slower); bf16/fp16 use the tensor cores with fp32 accumulation.
  Under TRITON_INTERPRET=1, bf16 dot operands are upcast to fp32 (the interpreter's bf16 dot is wrong).
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _dot(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _tanh(x):
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _batch_head(H):
    """Grid axis 1 is batch * heads: (that index, batch, head), the last two int64 for offsets."""
    bh = tl.program_id(1)
    return bh, (bh // H).to(tl.int64), (bh % H).to(tl.int64)


@triton.jit
def _tile(ptr, base, rows, offs_d, rmask, dmask, s_r, s_d):
    """A [rows, D] tile of a strided (.., rows, D) tensor; zeros off the edges."""
    return tl.load(ptr + base + rows[:, None] * s_r + offs_d[None, :] * s_d, mask=rmask[:, None] & dmask[None, :], other=0.0)


@triton.jit
def _tile_t(ptr, base, rows, offs_d, rmask, dmask, s_r, s_d):
    """The transpose [D, rows] of ``_tile``'s tile, loaded directly. (One helper with a constexpr
    TRANS flag and two returns does not compile: Triton requires every return of a jit function
    to have one type, and [D, rows] differs from [rows, D]; the interpreter does not check this.)"""
    return tl.load(ptr + base + rows[None, :] * s_r + offs_d[:, None] * s_d, mask=rmask[None, :] & dmask[:, None], other=0.0)


@triton.jit
def _key_valid(mask_ptr, b, sm_b, offs_n, nmask, HAS_MASK: tl.constexpr):
    """Keys inside the sequence and not padded (the uint8 key padding mask, 1 = attend)."""
    if HAS_MASK:
        return nmask & (tl.load(mask_ptr + b * sm_b + offs_n, mask=nmask, other=0) != 0)
    return nmask


@triton.jit
def _xattn_fwd_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, gate_ptr, res_ptr, out_ptr, attn_ptr, lse_ptr,
    sq_b, sq_h, sq_m, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d, sm_b,
    sr_b, sr_m, sr_c, H, Lq, Lk, Dh, qk_scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, K_BLOCKS: tl.constexpr,
    HAS_MASK: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    # Under torch.compile these floats arrived as fp64 (Inductor, H100 run 2): keep the math fp32.
    qk_scale_log2 = tl.cast(qk_scale_log2, tl.float32)
    pid_m = tl.program_id(0)
    bh, b, h = _batch_head(H)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mmask = offs_m < Lq
    dmask = offs_d < Dh
    q = _tile(q_ptr, b * sq_b + h * sq_h, offs_m, offs_d, mmask, dmask, sq_m, sq_d)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for blk in range(K_BLOCKS):
        start = blk * BLOCK_N
        if start < Lk:
            offs_n = start + tl.arange(0, BLOCK_N)
            nmask = offs_n < Lk
            kt = _tile_t(k_ptr, b * sk_b + h * sk_h, offs_n, offs_d, nmask, dmask, sk_n, sk_d)
            v = _tile(v_ptr, b * sv_b + h * sv_h, offs_n, offs_d, nmask, dmask, sv_n, sv_d)
            valid = _key_valid(mask_ptr, b, sm_b, offs_n, nmask, HAS_MASK)
            s = _dot(q, kt, PREC, UPCAST) * qk_scale_log2
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.math.exp2(m_i - m_safe)
            p = tl.math.exp2(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PREC, UPCAST)
            m_i = m_new
    has_key = l_i > 0
    attn = acc / tl.where(has_key, l_i, 1.0)[:, None]
    lse = tl.where(has_key, m_i + tl.math.log2(tl.where(has_key, l_i, 1.0)), float("inf"))
    tl.store(lse_ptr + bh.to(tl.int64) * Lq + offs_m, lse, mask=mmask)
    tg = _tanh(tl.load(gate_ptr).to(tl.float32))
    io_mask = mmask[:, None] & dmask[None, :]
    cols = h * Dh + offs_d
    merged = b * Lq * H * Dh + offs_m[:, None] * (H * Dh) + cols[None, :]
    attn_lo = attn.to(attn_ptr.dtype.element_ty)
    tl.store(attn_ptr + merged, attn_lo, mask=io_mask)
    res = tl.load(res_ptr + b * sr_b + offs_m[:, None] * sr_m + cols[None, :] * sr_c, mask=io_mask, other=0.0)
    out = res.to(tl.float32) + tg * attn
    tl.store(out_ptr + merged, out.to(out_ptr.dtype.element_ty), mask=io_mask)


@triton.jit
def _xattn_bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, gate_ptr, g_ptr, attn_ptr, lse_ptr, delta_ptr, dq_ptr,
    sq_b, sq_h, sq_m, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d, sm_b,
    sg_b, sg_m, sg_c, H, Lq, Lk, Dh, qk_scale_log2, sm_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, K_BLOCKS: tl.constexpr,
    HAS_MASK: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """dQ = sm_scale * sum_n dS K with dS = P (dP - delta), dP = dO V^T, dO = tanh(gate) g; writes rowsum(g*attn)."""
    # Under torch.compile these floats arrived as fp64 (Inductor, H100 run 2): keep the math fp32.
    qk_scale_log2 = tl.cast(qk_scale_log2, tl.float32)
    sm_scale = tl.cast(sm_scale, tl.float32)
    pid_m = tl.program_id(0)
    bh, b, h = _batch_head(H)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mmask = offs_m < Lq
    dmask = offs_d < Dh
    io_mask = mmask[:, None] & dmask[None, :]
    q = _tile(q_ptr, b * sq_b + h * sq_h, offs_m, offs_d, mmask, dmask, sq_m, sq_d)
    cols = h * Dh + offs_d
    g = tl.load(g_ptr + b * sg_b + offs_m[:, None] * sg_m + cols[None, :] * sg_c, mask=io_mask, other=0.0).to(tl.float32)
    attn = tl.load(attn_ptr + b * Lq * H * Dh + offs_m[:, None] * (H * Dh) + cols[None, :], mask=io_mask, other=0.0)
    tg = _tanh(tl.load(gate_ptr).to(tl.float32))
    delta_raw = tl.sum(g * attn.to(tl.float32), axis=1)
    tl.store(delta_ptr + bh.to(tl.int64) * Lq + offs_m, delta_raw, mask=mmask)
    delta = tg * delta_raw
    do = (tg * g).to(q.dtype)
    lse = tl.load(lse_ptr + bh.to(tl.int64) * Lq + offs_m, mask=mmask, other=float("inf"))
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for blk in range(K_BLOCKS):
        start = blk * BLOCK_N
        if start < Lk:
            offs_n = start + tl.arange(0, BLOCK_N)
            nmask = offs_n < Lk
            kt = _tile_t(k_ptr, b * sk_b + h * sk_h, offs_n, offs_d, nmask, dmask, sk_n, sk_d)
            vt = _tile_t(v_ptr, b * sv_b + h * sv_h, offs_n, offs_d, nmask, dmask, sv_n, sv_d)
            valid = _key_valid(mask_ptr, b, sm_b, offs_n, nmask, HAS_MASK)
            s = _dot(q, kt, PREC, UPCAST) * qk_scale_log2
            p = tl.where(valid[None, :], tl.math.exp2(s - lse[:, None]), 0.0)
            dp = _dot(do, vt, PREC, UPCAST)
            ds = p * (dp - delta[:, None])
            dq += _dot(ds.to(q.dtype), tl.trans(kt), PREC, UPCAST)
    dq = dq * sm_scale
    tl.store(dq_ptr + bh.to(tl.int64) * Lq * Dh + offs_m[:, None] * Dh + offs_d[None, :],
             dq.to(dq_ptr.dtype.element_ty), mask=io_mask)


@triton.jit
def _xattn_bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, gate_ptr, g_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    sq_b, sq_h, sq_m, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d, sm_b,
    sg_b, sg_m, sg_c, H, Lq, Lk, Dh, qk_scale_log2, sm_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, Q_BLOCKS: tl.constexpr,
    HAS_MASK: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """dV = P^T dO, dK = sm_scale * dS^T Q, for one key block, looping over query blocks (transposed tiles)."""
    # Under torch.compile these floats arrived as fp64 (Inductor, H100 run 2): keep the math fp32.
    qk_scale_log2 = tl.cast(qk_scale_log2, tl.float32)
    sm_scale = tl.cast(sm_scale, tl.float32)
    pid_n = tl.program_id(0)
    bh, b, h = _batch_head(H)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    nmask = offs_n < Lk
    dmask = offs_d < Dh
    kv_mask = nmask[:, None] & dmask[None, :]
    k = _tile(k_ptr, b * sk_b + h * sk_h, offs_n, offs_d, nmask, dmask, sk_n, sk_d)
    v = _tile(v_ptr, b * sv_b + h * sv_h, offs_n, offs_d, nmask, dmask, sv_n, sv_d)
    valid = _key_valid(mask_ptr, b, sm_b, offs_n, nmask, HAS_MASK)
    tg = _tanh(tl.load(gate_ptr).to(tl.float32))
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    cols = h * Dh + offs_d
    for blk in range(Q_BLOCKS):
        start = blk * BLOCK_M
        if start < Lq:
            offs_m = start + tl.arange(0, BLOCK_M)
            mmask = offs_m < Lq
            qt = _tile_t(q_ptr, b * sq_b + h * sq_h, offs_m, offs_d, mmask, dmask, sq_m, sq_d)
            g = tl.load(g_ptr + b * sg_b + offs_m[:, None] * sg_m + cols[None, :] * sg_c,
                        mask=mmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)
            do = (tg * g).to(k.dtype)
            lse = tl.load(lse_ptr + bh.to(tl.int64) * Lq + offs_m, mask=mmask, other=float("inf"))
            delta = tg * tl.load(delta_ptr + bh.to(tl.int64) * Lq + offs_m, mask=mmask, other=0.0)
            st = _dot(k, qt, PREC, UPCAST) * qk_scale_log2
            pt = tl.where(valid[:, None] & mmask[None, :], tl.math.exp2(st - lse[None, :]), 0.0)
            dv += _dot(pt.to(k.dtype), do, PREC, UPCAST)
            dpt = _dot(v, tl.trans(do), PREC, UPCAST)
            dst = pt * (dpt - delta[None, :])
            dk += _dot(dst.to(k.dtype), tl.trans(qt), PREC, UPCAST)
    base = bh.to(tl.int64) * Lk * Dh + offs_n[:, None] * Dh + offs_d[None, :]
    tl.store(dk_ptr + base, (dk * sm_scale).to(dk_ptr.dtype.element_ty), mask=kv_mask)
    tl.store(dv_ptr + base, dv.to(dv_ptr.dtype.element_ty), mask=kv_mask)


def _upcast(q) -> bool:
    # The Triton 3.6 interpreter computes bf16 tl.dot wrongly (numpy has no bf16); it upcasts there.
    return q.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET", "0") == "1"


def _blocks(Lq: int, Lk: int, Dh: int):
    block_m = min(64, max(16, triton.next_power_of_2(Lq)))
    block_n = 64
    block_d = max(16, triton.next_power_of_2(Dh))
    return block_m, block_n, block_d


def _mask_u8(key_padding_mask, B, Lk, device):
    if key_padding_mask is None:
        return None
    if key_padding_mask.shape != (B, Lk):
        raise ValueError(f"key_padding_mask must have shape ({B}, {Lk}), got {tuple(key_padding_mask.shape)}")
    m = key_padding_mask.to(device)
    if m.dtype == torch.bool and not torch.compiler.is_compiling():
        return m.contiguous().view(torch.uint8)  # free reinterpretation in eager
    # Inductor cannot lower a bool -> uint8 dtype view; under torch.compile a cast fuses anyway.
    return (m != 0).to(torch.uint8).contiguous()


class GatedCrossAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask_u8, gate, residual):
        B, H, Lq, Dh = q.shape
        Lk = k.shape[2]
        block_m, block_n, block_d = _blocks(Lq, Lk, Dh)
        out = torch.empty((B, Lq, H * Dh), dtype=residual.dtype, device=q.device)
        attn = torch.empty((B, Lq, H * Dh), dtype=q.dtype, device=q.device)
        lse = torch.empty((B * H, Lq), dtype=torch.float32, device=q.device)
        sm_scale = 1.0 / math.sqrt(Dh)
        prec = "ieee" if q.dtype == torch.float32 else "tf32"
        grid = (triton.cdiv(Lq, block_m), B * H)
        if q.numel() and residual.numel():
            _xattn_fwd_kernel[grid](
                q, k, v, mask_u8 if mask_u8 is not None else q, gate, residual, out, attn, lse,
                *q.stride(), *k.stride(), *v.stride(), mask_u8.stride(0) if mask_u8 is not None else 0,
                *residual.stride(), H, Lq, Lk, Dh, sm_scale * LOG2E,
                BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
                K_BLOCKS=triton.next_power_of_2(max(1, triton.cdiv(Lk, block_n))),
                HAS_MASK=mask_u8 is not None, PREC=prec, UPCAST=_upcast(q), num_warps=4,
            )
        ctx.save_for_backward(q, k, v, mask_u8, gate, attn, lse)
        ctx.residual_dtype = residual.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, mask_u8, gate, attn, lse = ctx.saved_tensors
        B, H, Lq, Dh = q.shape
        Lk = k.shape[2]
        block_m, block_n, block_d = _blocks(Lq, Lk, Dh)
        sm_scale = 1.0 / math.sqrt(Dh)
        prec = "ieee" if q.dtype == torch.float32 else "tf32"
        g = grad_out
        dq = torch.empty((B, H, Lq, Dh), dtype=q.dtype, device=q.device)
        dk = torch.empty((B, H, Lk, Dh), dtype=k.dtype, device=q.device)
        dv = torch.empty((B, H, Lk, Dh), dtype=v.dtype, device=q.device)
        delta_raw = torch.empty((B * H, Lq), dtype=torch.float32, device=q.device)
        common = (*q.stride(), *k.stride(), *v.stride(), mask_u8.stride(0) if mask_u8 is not None else 0,
                  *g.stride(), H, Lq, Lk, Dh, sm_scale * LOG2E, sm_scale)
        mask_arg = mask_u8 if mask_u8 is not None else q
        _xattn_bwd_dq_kernel[(triton.cdiv(Lq, block_m), B * H)](
            q, k, v, mask_arg, gate, g, attn, lse, delta_raw, dq, *common,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
            K_BLOCKS=triton.next_power_of_2(max(1, triton.cdiv(Lk, block_n))),
            HAS_MASK=mask_u8 is not None, PREC=prec, UPCAST=_upcast(q), num_warps=4,
        )
        _xattn_bwd_dkdv_kernel[(triton.cdiv(Lk, block_n), B * H)](
            q, k, v, mask_arg, gate, g, lse, delta_raw, dk, dv, *common,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
            Q_BLOCKS=triton.next_power_of_2(max(1, triton.cdiv(Lq, block_m))),
            HAS_MASK=mask_u8 is not None, PREC=prec, UPCAST=_upcast(q), num_warps=4,
        )
        dgate = None
        if ctx.needs_input_grad[4]:
            tg = torch.tanh(gate.float())
            dgate = ((1 - tg * tg) * delta_raw.sum()).to(gate.dtype).reshape(gate.shape)
        dres = grad_out.to(ctx.residual_dtype) if ctx.needs_input_grad[5] else None
        return dq, dk, dv, None, dgate, dres


def gated_cross_attention_triton(q, k, v, key_padding_mask, gate, residual):
    if q.dim() != 4 or k.shape != v.shape or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(f"expected q (B,H,Lq,Dh), k=v (B,H,Lk,Dh); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, Lq, Dh = q.shape
    if residual.shape != (B, Lq, H * Dh):
        raise ValueError(f"residual must have shape ({B}, {Lq}, {H * Dh}), got {tuple(residual.shape)}")
    if gate.numel() != 1:
        raise ValueError(f"gate must hold one value, got shape {tuple(gate.shape)}")
    mask_u8 = _mask_u8(key_padding_mask, B, k.shape[2], q.device)
    return GatedCrossAttentionFunction.apply(q, k, v, mask_u8, gate, residual)
