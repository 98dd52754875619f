"""RMS-matched LayerNorm in Triton: forward, backward and the autograd.Function joining them.

out = y * t / sqrt(mean(y^2) + eps), y = (x - mean) * rstd * w + b: the translator's output is
normalised and then brought to the target model's embedding RMS t, in one pass over x.
Decisions:
- One row per program held whole in registers (BLOCK_D = next pow2 of D, D <= MAX_DIM), fp32 math;
  several rows per program when D is small so each program still moves ~16 KB.
- Forward saves per-row mean, rstd and 1/rms(y) (12 bytes a row) so backward recomputes y from x
  instead of storing it.
- Backward walks R rows per step as one [R, BLOCK_D] tile and loads the next tile before working
  on this one. With z = y / rms(y): dy = (t / rms) (g - z mean(g z)); then the LayerNorm backward
  dx = rstd (dxh - mean(dxh) - xh mean(dxh xh)), dxh = dy w. dw, db are reduced per program into
  fp32 partials [P, D] (P ~ 1 per SM, each a contiguous chunk of ROWS_PER_PROG rows, a power of two
  baked in as constexpr: few variants, and no runtime loop bound, which the Triton 3.6 interpreter
  cannot take under numpy >= 2.3), then summed over P by a second small kernel (torch's column
  sum and casts took 21 us of 321 on H100): no atomics, deterministic.
- target_rms may be a float (baked in, no tensor made), a 1-element tensor or one value per row;
  tensors get a gradient, sum(g z) per row.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import rms_matched_layer_norm_ref

MAX_DIM = 32768
# Backward launch shape; module-level so benchmarks/gpu_kernels.py can sweep them. Defaults are the
# best of the H100 sweep at 32768x4096 bf16 (results/kernels/h100_run3_*): 1 program/SM, 2 rows/step,
# 16 warps, prefetch on (128 registers a thread, so one 16-warp program fits an SM anyway).
BWD_PROGRAMS_PER_SM = 1
BWD_NUM_WARPS: int | None = None
BWD_ROWS_PER_STEP: int | None = None
BWD_PREFETCH = True


@triton.jit
def _rms_ln_fwd_kernel(
    x_ptr, x_row_stride, w_ptr, b_ptr, out_ptr, mean_ptr, rstd_ptr, rinv_ptr,
    t_ptr, t_stride, t_value, n_rows, D, eps,
    BLOCK_D: tl.constexpr, ROWS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_T_PTR: tl.constexpr,
):
    # Under torch.compile these floats arrived as fp64 (Inductor, H100 run 2): keep the math fp32.
    t_value = tl.cast(t_value, tl.float32)
    eps = tl.cast(eps, tl.float32)
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    rmask = rows < n_rows
    cmask = cols < D
    mask = rmask[:, None] & cmask[None, :]
    x = tl.load(x_ptr + rows[:, None] * x_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
    y = xc * rstd[:, None]
    if HAS_W:
        y = y * tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        y = y + tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        y = tl.where(mask, y, 0.0)
    rinv = 1.0 / tl.sqrt(tl.sum(y * y, axis=1) / D + eps)
    if HAS_T_PTR:
        t = tl.load(t_ptr + rows * t_stride, mask=rmask, other=0.0).to(tl.float32)
    else:
        t = t_value
    out = y * (t * rinv)[:, None]
    tl.store(out_ptr + rows[:, None] * D + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + rows, mean, mask=rmask)
    tl.store(rstd_ptr + rows, rstd, mask=rmask)
    tl.store(rinv_ptr + rows, rinv, mask=rmask)


@triton.jit
def _add5(a0, a1, a2, a3, a4, b0, b1, b2, b3, b4):
    return a0 + b0, a1 + b1, a2 + b2, a3 + b3, a4 + b4


@triton.jit
def _load_rows(x_ptr, x_row_stride, g_ptr, g_row_stride, mean_ptr, rstd_ptr, rinv_ptr, t_ptr, t_stride,
               rows, limit, cols, cmask, HAS_T_PTR: tl.constexpr):
    ok = rows < limit
    m = ok[:, None] & cmask[None, :]
    x = tl.load(x_ptr + rows[:, None] * x_row_stride + cols[None, :], mask=m, other=0.0)
    g = tl.load(g_ptr + rows[:, None] * g_row_stride + cols[None, :], mask=m, other=0.0)
    mean = tl.load(mean_ptr + rows, mask=ok, other=0.0)
    rstd = tl.load(rstd_ptr + rows, mask=ok, other=0.0)
    rinv = tl.load(rinv_ptr + rows, mask=ok, other=0.0)
    if HAS_T_PTR:
        t = tl.load(t_ptr + rows * t_stride, mask=ok, other=0.0).to(tl.float32)
    else:
        t = rinv  # unused
    return x, g, mean, rstd, rinv, t


@triton.jit
def _rms_ln_bwd_kernel(
    x_ptr, x_row_stride, g_ptr, g_row_stride, w_ptr, b_ptr, mean_ptr, rstd_ptr, rinv_ptr,
    t_ptr, t_stride, t_value, dx_ptr, dw_part_ptr, db_part_ptr, dt_ptr, n_rows, D,
    BLOCK_D: tl.constexpr, ROWS_PER_PROG: tl.constexpr, R: tl.constexpr, HAS_W: tl.constexpr,
    HAS_B: tl.constexpr, HAS_T_PTR: tl.constexpr, PREFETCH: tl.constexpr,
):
    """Each program walks ROWS_PER_PROG contiguous rows, R rows per step as one [R, BLOCK_D] tile.

    PREFETCH: the next step's x and g are loaded before this step's arithmetic, so loads stay in
    flight through the reductions (the version without it reached 70% of copy bandwidth on H100).
    All row sums come from one 5-way reduction (one round of cross-warp barriers, not three):
    with A = sum(g z), dxh = dy w = c (g w - z w A / D), c = t / rms(y), so
    sum(dxh) = c (sum(g w) - A/D sum(z w)) and sum(dxh xh) = c (sum(g w xh) - A/D sum(z w xh)).
    """
    # Under torch.compile these floats arrived as fp64 (Inductor, H100 run 2): keep the math fp32.
    t_value = tl.cast(t_value, tl.float32)
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    cmask = cols < D
    if HAS_W:
        w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    dw_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    first = pid.to(tl.int64) * ROWS_PER_PROG
    limit = tl.minimum(first + ROWS_PER_PROG, n_rows)
    rows_next = first + tl.arange(0, R)
    if PREFETCH:
        x_n, g_n, mean_n, rstd_n, rinv_n, t_n = _load_rows(
            x_ptr, x_row_stride, g_ptr, g_row_stride, mean_ptr, rstd_ptr, rinv_ptr, t_ptr, t_stride,
            rows_next, limit, cols, cmask, HAS_T_PTR)
    for i in range(ROWS_PER_PROG // R):
        rows = rows_next
        rows_next = rows + R
        if PREFETCH:
            x, g, mean, rstd, rinv, t = x_n, g_n, mean_n, rstd_n, rinv_n, t_n
            x_n, g_n, mean_n, rstd_n, rinv_n, t_n = _load_rows(
                x_ptr, x_row_stride, g_ptr, g_row_stride, mean_ptr, rstd_ptr, rinv_ptr, t_ptr, t_stride,
                rows_next, limit, cols, cmask, HAS_T_PTR)
        else:
            x, g, mean, rstd, rinv, t = _load_rows(
                x_ptr, x_row_stride, g_ptr, g_row_stride, mean_ptr, rstd_ptr, rinv_ptr, t_ptr, t_stride,
                rows, limit, cols, cmask, HAS_T_PTR)
        if not HAS_T_PTR:
            t = t_value
        ok = rows < limit
        m = ok[:, None] & cmask[None, :]
        x = x.to(tl.float32)
        g = g.to(tl.float32)
        xh = tl.where(m, (x - mean[:, None]) * rstd[:, None], 0.0)
        y = xh
        if HAS_W:
            y = y * w
        if HAS_B:
            y = tl.where(m, y + b, 0.0)
        z = y * rinv[:, None]
        if HAS_W:
            gw = g * w
            zw = z * w
        else:
            gw = g
            zw = z
        s_gz, s_gw, s_zw, s_gwx, s_zwx = tl.reduce((g * z, gw, zw, gw * xh, zw * xh), 1, _add5)
        if HAS_T_PTR:
            tl.store(dt_ptr + rows, s_gz, mask=ok)
        c = t * rinv
        a = s_gz / D
        dy = c[:, None] * (g - z * a[:, None])
        if HAS_W:
            dw_acc += tl.sum(dy * xh, axis=0)
        if HAS_B:
            db_acc += tl.sum(dy, axis=0)
        c1 = c * (s_gw - a * s_zw) / D
        c2 = c * (s_gwx - a * s_zwx) / D
        dxh = dy
        if HAS_W:
            dxh = dy * w
        dx = rstd[:, None] * (dxh - c1[:, None] - xh * c2[:, None])
        tl.store(dx_ptr + rows[:, None] * D + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m)
    if HAS_W:
        tl.store(dw_part_ptr + pid * D + cols, dw_acc, mask=cmask)
    if HAS_B:
        tl.store(db_part_ptr + pid * D + cols, db_acc, mask=cmask)


@triton.jit
def _sum_partials_kernel(dw_part_ptr, db_part_ptr, dw_ptr, db_ptr, n_parts, D,
                         BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, P_STEPS: tl.constexpr,
                         HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    """dw = sum over programs of dw_part (fp32), written in the parameter's dtype; db likewise."""
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < D
    acc_w = tl.zeros([BLOCK_C], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_C], dtype=tl.float32)
    for i in range(P_STEPS):
        parts = i * BLOCK_P + tl.arange(0, BLOCK_P)
        m = (parts < n_parts)[:, None] & cmask[None, :]
        offs = parts[:, None] * D + cols[None, :]
        if HAS_W:
            acc_w += tl.sum(tl.load(dw_part_ptr + offs, mask=m, other=0.0), axis=0)
        if HAS_B:
            acc_b += tl.sum(tl.load(db_part_ptr + offs, mask=m, other=0.0), axis=0)
    if HAS_W:
        tl.store(dw_ptr + cols, acc_w.to(dw_ptr.dtype.element_ty), mask=cmask)
    if HAS_B:
        tl.store(db_ptr + cols, acc_b.to(db_ptr.dtype.element_ty), mask=cmask)


def _fwd_config(D: int, elem_size: int):
    block_d = triton.next_power_of_2(D)
    rows = max(1, min(16, 4096 // block_d))
    num_warps = max(1, min(16, block_d * rows * elem_size // 1024))
    return block_d, rows, num_warps


def _n_sms(device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


def _as_rows(t: torch.Tensor, D: int) -> torch.Tensor:
    t2 = t.reshape(-1, D)
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


class RMSMatchedLayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, t_tensor, t_value, eps, fwd_config=None):
        D = x.shape[-1]
        x2 = _as_rows(x, D)
        n_rows = x2.shape[0]
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        rstd = torch.empty_like(mean)
        rinv = torch.empty_like(mean)
        t_ptr, t_stride = (t_tensor, 0 if t_tensor.numel() == 1 else 1) if t_tensor is not None else (mean, 0)
        block_d, rows, num_warps = fwd_config or _fwd_config(D, x.element_size())
        if n_rows:
            _rms_ln_fwd_kernel[(triton.cdiv(n_rows, rows),)](
                x2, x2.stride(0), weight if weight is not None else x2, bias if bias is not None else x2,
                out, mean, rstd, rinv, t_ptr, t_stride, t_value, n_rows, D, eps,
                BLOCK_D=block_d, ROWS=rows, HAS_W=weight is not None, HAS_B=bias is not None,
                HAS_T_PTR=t_tensor is not None, num_warps=num_warps,
            )
        ctx.save_for_backward(x2, weight, bias, t_tensor, mean, rstd, rinv)
        ctx.t_value = t_value
        ctx.x_shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x2, weight, bias, t_tensor, mean, rstd, rinv = ctx.saved_tensors
        n_rows, D = x2.shape
        g2 = _as_rows(grad_out, D)
        dx = torch.empty((n_rows, D), dtype=x2.dtype, device=x2.device)
        n_prog = max(1, min(n_rows, BWD_PROGRAMS_PER_SM * _n_sms(x2.device)))
        rows_per_prog = triton.next_power_of_2(triton.cdiv(n_rows, n_prog))
        n_prog = triton.cdiv(n_rows, rows_per_prog)
        block_d = triton.next_power_of_2(D)
        step = min(rows_per_prog, BWD_ROWS_PER_STEP or max(1, 8192 // block_d))
        dw_part = torch.empty((n_prog, D), dtype=torch.float32, device=x2.device) if weight is not None else None
        db_part = torch.empty((n_prog, D), dtype=torch.float32, device=x2.device) if bias is not None else None
        dt_rows = torch.empty(n_rows, dtype=torch.float32, device=x2.device) if t_tensor is not None else None
        t_ptr, t_stride = (t_tensor, 0 if t_tensor.numel() == 1 else 1) if t_tensor is not None else (mean, 0)
        if n_rows:
            _rms_ln_bwd_kernel[(n_prog,)](
                x2, x2.stride(0), g2, g2.stride(0), weight if weight is not None else x2,
                bias if bias is not None else x2, mean, rstd, rinv, t_ptr, t_stride, ctx.t_value,
                dx, dw_part if dw_part is not None else mean, db_part if db_part is not None else mean,
                dt_rows if dt_rows is not None else mean, n_rows, D,
                BLOCK_D=block_d, ROWS_PER_PROG=rows_per_prog, R=step, HAS_W=weight is not None, HAS_B=bias is not None,
                HAS_T_PTR=t_tensor is not None, PREFETCH=BWD_PREFETCH, num_warps=BWD_NUM_WARPS or max(1, min(16, block_d * step // 512)),
            )
        want_w = weight is not None and ctx.needs_input_grad[1]
        want_b = bias is not None and ctx.needs_input_grad[2]
        dw = torch.empty(D, dtype=weight.dtype, device=x2.device) if want_w else None
        db = torch.empty(D, dtype=bias.dtype, device=x2.device) if want_b else None
        if want_w or want_b:
            if n_rows:
                block_p, block_c = 32, 64
                _sum_partials_kernel[(triton.cdiv(D, block_c),)](
                    dw_part if want_w else mean, db_part if want_b else mean, dw if want_w else mean,
                    db if want_b else mean, n_prog, D, BLOCK_P=block_p, BLOCK_C=block_c,
                    P_STEPS=triton.cdiv(triton.next_power_of_2(n_prog), block_p), HAS_W=want_w, HAS_B=want_b,
                    num_warps=4,
                )
            else:
                dw = dw.zero_() if want_w else None
                db = db.zero_() if want_b else None
        dt = None
        if t_tensor is not None and ctx.needs_input_grad[3]:
            dt = (dt_rows.sum() if t_tensor.numel() == 1 else dt_rows).reshape(t_tensor.shape).to(t_tensor.dtype)
        return dx.reshape(ctx.x_shape), dw, db, dt, None, None, None


def rms_matched_layer_norm_triton(x, weight=None, bias=None, target_rms=1.0, eps: float = 1e-5, fwd_config=None):
    D = x.shape[-1]
    if D > MAX_DIM:
        return rms_matched_layer_norm_ref(x, weight, bias, target_rms, eps)
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (D,):
            raise ValueError(f"{name} must have shape ({D},), got {tuple(p.shape)}")
    weight = weight.contiguous() if weight is not None else None
    bias = bias.contiguous() if bias is not None else None
    t_tensor, t_value = None, 0.0
    if isinstance(target_rms, torch.Tensor):
        n_rows = x.numel() // D if D else 0
        if target_rms.numel() not in (1, n_rows):
            raise ValueError(f"target_rms must hold 1 or {n_rows} values, got {target_rms.numel()}")
        t_tensor = target_rms
        if t_tensor.device != x.device:
            t_tensor = t_tensor.to(x.device)
        t_tensor = t_tensor.contiguous()
    else:
        t_value = float(target_rms)
    return RMSMatchedLayerNormFunction.apply(x, weight, bias, t_tensor, t_value, eps, fwd_config)
