"""One call on a GPU: check every lw_kernels kernel against its reference, then time it.

Usage: python benchmarks/gpu_kernels.py --out DIR   (writes DIR/gpu_kernels.json and DIR/gpu_kernels.md)

Timings are triton.testing.do_bench medians (L2 flushed before each rep); bandwidth counts each
input read once and each output written once, and is compared with a device-to-device copy
measured in the same run. Baselines: eager PyTorch, torch.compile of the same eager code, and
Liger-Kernel's LayerNorm where importable. Sections fail independently (the traceback is recorded).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = "--smoke" in sys.argv  # CPU dry run of the whole script: interpreter, tiny sizes, one-shot timing
if SMOKE:
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["LW_FORCE_TRITON"] = "1"
DEV = "cpu" if SMOKE else "cuda"
COMPILE_DEADLINE_S = 300  # torch.compile baselines are skipped once the run is this old

import triton  # noqa: E402
from benchmarks.timing import median_ms  # noqa: E402

import lw_kernels  # noqa: E402
from lw_kernels import cross_attention, quant, reference, rms_layernorm  # noqa: E402
from train.provenance import commit  # noqa: E402

RESULTS: dict = {"checks": [], "timings": [], "errors": []}
T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def bench(fn, graph=False):
    """Microseconds per call (graph: CUDA-graph replay, rep 50; else do_bench, warmup 25, rep 100)."""
    return median_ms(fn, SMOKE, warmup=25, rep=50 if graph else 100, graph=graph) * 1e3


def rel_rms(a, b):
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check(name, value, bound):
    ok = bool(value <= bound)
    RESULTS["checks"].append({"name": name, "value": value, "bound": bound, "ok": ok})
    log(f"check {name}: {value:.3e} (<= {bound:.1e}) {'OK' if ok else 'FAIL'}")


def record(section, impl, us, nbytes=None, copy_gbs=None, **extra):
    row = {"section": section, "impl": impl, "us": round(us, 2)}
    if nbytes:
        gbs = nbytes / us / 1e3
        row["GB/s"] = round(gbs, 1)
        if copy_gbs:
            row["pct_copy"] = round(100 * gbs / copy_gbs, 1)
    row.update(extra)
    RESULTS["timings"].append(row)
    log(f"{section:42s} {impl:28s} {us:10.2f} us " + (f"{row.get('GB/s', '')} GB/s {row.get('pct_copy', '')}%" if nbytes else ""))


def section(fn):
    def run(*a, **k):
        try:
            return fn(*a, **k)
        except Exception:
            tb = traceback.format_exc()
            RESULTS["errors"].append({"section": fn.__name__, "traceback": tb})
            log(f"ERROR in {fn.__name__}:\n{tb}")
    return run


def try_compile(fn):
    if time.time() - T0 > COMPILE_DEADLINE_S:
        RESULTS.setdefault("notes", []).append(f"torch.compile baseline skipped at {time.time() - T0:.0f}s (deadline)")
        return None
    try:
        return torch.compile(fn, dynamic=False)
    except Exception:
        return None


def copy_bandwidth():
    n = 1024 * 1024 if SMOKE else 512 * 1024 * 1024
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device=DEV)
    dst = torch.empty_like(src)
    us = bench(lambda: dst.copy_(src))
    gbs = 2 * n / us / 1e3
    record("device copy 512 MiB", "torch copy_", us, 2 * n)
    return gbs


# ----------------------------------------------------------------------------- RMS-matched LN
@section
def rms_ln(copy_gbs, with_compile):
    for rows, D, dt in [(4099, 576, torch.float32), (2053, 4096, torch.bfloat16), (517, 5120, torch.float16)]:
        rows = 5 if SMOKE else rows
        x = torch.randn(rows, D, device=DEV).to(dt) * 2 + 0.3
        w = torch.randn(D, device=DEV).to(dt)
        b = torch.randn(D, device=DEV).to(dt)
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        out = lw_kernels.rms_matched_layer_norm(*leaves, target_rms=0.7)
        dl = [t.double().requires_grad_() for t in (x, w, b)]
        ref = reference.rms_matched_layer_norm_ref(*dl, target_rms=0.7)
        g = torch.randn_like(out)
        out.backward(g)
        ref.backward(g.double())
        tol = 1e-5 if dt == torch.float32 else 8e-3
        check(f"rmsln fwd {rows}x{D} {dt}", rel_rms(out, ref), tol)
        for n, a, r in zip("xwb", leaves, dl):
            check(f"rmsln d{n} {rows}x{D} {dt}", rel_rms(a.grad, r.grad), 2 * tol)

    rows, D = (64 if SMOKE else 32768), 4096
    x = torch.randn(rows, D, device=DEV, dtype=torch.bfloat16)
    w = torch.randn(D, device=DEV, dtype=torch.bfloat16)
    b = torch.randn(D, device=DEV, dtype=torch.bfloat16)
    nbytes_fwd = 2 * rows * D * 2
    sec = "rmsln fwd 32768x4096 bf16"
    best = None
    for cfg in [None, (4096, 1, 4), (4096, 1, 8), (4096, 1, 16), (4096, 2, 8), (4096, 2, 16), (4096, 4, 16)]:
        us = bench(lambda: rms_layernorm.rms_matched_layer_norm_triton(x, w, b, 1.0, 1e-5, fwd_config=cfg))
        name = "triton default" if cfg is None else f"triton rows={cfg[1]} warps={cfg[2]}"
        record(sec, name, us, nbytes_fwd, copy_gbs)
        best = min(best or us, us)
    record(sec, "triton best config", best, nbytes_fwd, copy_gbs)

    def eager(x, w, b):
        return reference.rms_matched_layer_norm_ref(x, w, b, 1.0)

    record(sec, "eager torch (fp32 math)", bench(lambda: eager(x, w, b)), nbytes_fwd, copy_gbs)
    if with_compile:
        ce = try_compile(eager)
        if ce is not None:
            record(sec, "torch.compile", bench(lambda: ce(x, w, b)), nbytes_fwd, copy_gbs)
    try:
        from liger_kernel.ops.layer_norm import LigerLayerNormFunction

        record(sec, "Liger LayerNorm (plain LN only)",
               bench(lambda: LigerLayerNormFunction.apply(x, w, b, 1e-5)), nbytes_fwd, copy_gbs)
    except Exception as e:
        RESULTS.setdefault("notes", []).append(f"Liger-Kernel not importable: {e!r}")

    # backward: dx, dw, db from saved stats; bytes = read x, g + write dx
    sec = "rmsln bwd 32768x4096 bf16"
    nbytes_bwd = 3 * rows * D * 2
    g = torch.randn(rows, D, device=DEV, dtype=torch.bfloat16)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    best = None
    defaults = (rms_layernorm.BWD_PROGRAMS_PER_SM, rms_layernorm.BWD_NUM_WARPS, rms_layernorm.BWD_ROWS_PER_STEP,
                rms_layernorm.BWD_PREFETCH)
    configs = [defaults, (2, 16, 2, True), (1, 16, 2, False), (1, 16, 1, True), (1, 8, 1, True), (1, 16, 4, True)]
    for pps, warps, step, prefetch in configs:
        (rms_layernorm.BWD_PROGRAMS_PER_SM, rms_layernorm.BWD_NUM_WARPS, rms_layernorm.BWD_ROWS_PER_STEP,
         rms_layernorm.BWD_PREFETCH) = pps, warps, step, prefetch
        out = rms_layernorm.rms_matched_layer_norm_triton(*leaves, 1.0)
        us = bench(lambda: torch.autograd.grad(out, leaves, g, retain_graph=True))
        name = f"triton progs/SM={pps} warps={warps or 'auto'} rows/step={step or 'auto'} prefetch={prefetch}"
        record(sec, ("default: " if (pps, warps, step, prefetch) == defaults else "") + name, us, nbytes_bwd, copy_gbs)
        best = min(best or us, us)
    record(sec, "triton best config", best, nbytes_bwd, copy_gbs)
    (rms_layernorm.BWD_PROGRAMS_PER_SM, rms_layernorm.BWD_NUM_WARPS, rms_layernorm.BWD_ROWS_PER_STEP,
     rms_layernorm.BWD_PREFETCH) = defaults
    # kernel alone (no dw/db partial sums, no autograd): what the 5-way fused kernel itself reaches
    out = rms_layernorm.rms_matched_layer_norm_triton(*leaves, 1.0)
    from torch.profiler import ProfilerActivity, profile

    if not SMOKE:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                torch.autograd.grad(out, leaves, g, retain_graph=True)
            torch.cuda.synchronize()
        per = {ev.key[:50]: round(ev.device_time_total / 10, 2) for ev in prof.key_averages()
               if ev.device_type.name == "CUDA" and getattr(ev, "device_time_total", 0) > 0}
        RESULTS["rmsln_bwd_kernel_us_per_call"] = per
        log("rmsln bwd device us/call:", per)
    out_e = eager(*leaves)
    record(sec, "eager torch autograd", bench(lambda: torch.autograd.grad(out_e, leaves, g, retain_graph=True)),
           nbytes_bwd, copy_gbs)
    if with_compile:
        ce = try_compile(eager)
        out_c = ce(*leaves) if ce is not None else None
        if out_c is not None:
            record(sec, "torch.compile autograd", bench(lambda: torch.autograd.grad(out_c, leaves, g, retain_graph=True)),
               nbytes_bwd, copy_gbs)


# ----------------------------------------------------------------------------- quantization
@section
def quantization(copy_gbs, with_compile):
    for bits in (4, 6, 8):
        for dt in (torch.float32, torch.bfloat16):
            nr = 7 if SMOKE else 1031
            x = torch.randn(nr, 640, device=DEV).to(dt) * torch.rand(nr, 1, device=DEV).to(dt) * 4
            p, s = lw_kernels.quantize(x, bits)
            pr, sr = reference.quantize_ref(x, bits)
            check(f"quant INT{bits} {dt} packed bytes differ", float((p != pr).sum() + (s != sr).sum()), 0)
            y = lw_kernels.dequantize(p, s, bits, dtype=torch.float32)
            half = s.float().repeat_interleave(32, -1) / 2
            check(f"quant INT{bits} {dt} |err| - scale/2 > 0 count",
                  float(((y - x.float()).abs() > half * (1 + 1e-6)).sum()), 0)
            check(f"dequant INT{bits} {dt} vs ref", rel_rms(y, reference.dequantize_ref(p, s, bits)), 0)
            yb = lw_kernels.dequantize(p, s, bits, dtype=torch.bfloat16)
            check(f"dequant INT{bits} bf16-out vs ref", rel_rms(yb, reference.dequantize_ref(p, s, bits, dtype=torch.bfloat16)), 0)
            f = lw_kernels.fake_quant(x, bits)
            check(f"fake_quant INT{bits} {dt} vs ref", rel_rms(f, reference.fake_quant_ref(x, bits)), 0)
            z = lw_kernels.dequantize_rms_match(p, s, bits, target_rms=0.02, dtype=torch.bfloat16)
            check(f"dequant_rms_match INT{bits} {dt}", rel_rms(z, reference.dequantize_rms_match_ref(p, s, bits, target_rms=0.02)), 5e-3)

    # Adversarial: every value within 4 ulps of a rounding boundary x/scale = k + 0.5, fp32 and bf16,
    # both division paths; codes must match the reference bit for bit.
    for bits in (4, 6, 8):
        qmax = 2 ** (bits - 1) - 1
        n_g = 64 if SMOKE else 1 << 16
        amax = torch.exp(torch.randn(n_g, 1, device=DEV) * 2).clamp(1e-3, 1e3)
        s16 = (amax / torch.full_like(amax, qmax)).to(torch.float16).float()
        k = torch.randint(-qmax, qmax, (n_g, 32), device=DEV).float()  # |x| < amax: the pinned absmax stays the max
        xa = ((k + 0.5) * s16).view(torch.int32) + torch.randint(-4, 5, (n_g, 32), device=DEV, dtype=torch.int32)
        xa = xa.view(torch.float32)
        xa[:, 0] = amax[:, 0]  # pin each group's absmax, so its scale is s16
        for fast_div in (True, False):
            quant.QUANT_FAST_DIV = fast_div
            for dt in (torch.float32, torch.bfloat16):
                xin = xa.to(dt).reshape(-1, 4096 if not SMOKE else 256)
                p, s = quant.quantize_triton(xin, bits)
                pr, sr = reference.quantize_ref(xin, bits)
                check(f"quant INT{bits} {dt} near-tie bytes differ fast_div={fast_div}",
                      float((p != pr).sum() + (s != sr).sum()), 0)
        quant.QUANT_FAST_DIV = True

    n = (64 * 1024 if SMOKE else 64 * 1024 * 1024)
    rows, D = n // 4096, 4096
    x = torch.randn(rows, D, device=DEV, dtype=torch.bfloat16)
    for bits in (4, 6, 8):
        p, s = quant.quantize_triton(x, bits)
        n_scale_bytes = s.numel() * 2
        q_bytes = n * 2 + p.numel() + n_scale_bytes
        dq_bytes = p.numel() + n_scale_bytes + n * 2
        sec_q, sec_d = f"quantize INT{bits} 64M bf16", f"dequantize INT{bits} 64M -> bf16"
        best_q = best_d = None
        for fast_div in (True, False):
            quant.QUANT_FAST_DIV = fast_div
            for vpp, warps in ((2048, 4), (4096, 4), (4096, 8), (8192, 4), (8192, 8)):
                bg = vpp // 32
                us = bench(lambda: quant.quantize_triton(x, bits, 32, block_groups=bg, num_warps=warps))
                default = fast_div and vpp == quant.VALUES_PER_PROGRAM and warps == 4
                record(sec_q, ("default: " if default else "") + f"triton {vpp} vals/prog warps={warps} fast_div={fast_div}",
                       us, q_bytes, copy_gbs)
                best_q = min(best_q or us, us)
        quant.QUANT_FAST_DIV = True
        for vpp in (2048, 4096):
            for warps in (4, 8):
                bg = vpp // 32
                us = bench(lambda: quant.dequantize_triton(p, s, bits, 32, None, torch.bfloat16, block_groups=bg, num_warps=warps))
                record(sec_d, f"triton {vpp} vals/prog warps={warps}", us, dq_bytes, copy_gbs)
                best_d = min(best_d or us, us)
        record(sec_q, "triton best config", best_q, q_bytes, copy_gbs)
        record(sec_d, "triton best config", best_d, dq_bytes, copy_gbs)
        record(sec_q, "eager torch", bench(lambda: reference.quantize_ref(x, bits)), q_bytes, copy_gbs)
        record(sec_d, "eager torch", bench(lambda: reference.dequantize_ref(p, s, bits, dtype=torch.bfloat16)), dq_bytes, copy_gbs)
        if with_compile and bits in (4, 6):
            cq = try_compile(lambda t: reference.quantize_ref(t, bits))
            if cq is not None:
                record(sec_q, "torch.compile", bench(lambda: cq(x)), q_bytes, copy_gbs)
            cd = try_compile(lambda a, b: reference.dequantize_ref(a, b, bits, dtype=torch.bfloat16))
            if cd is not None:
                record(sec_d, "torch.compile", bench(lambda: cd(p, s)), dq_bytes, copy_gbs)
        us = bench(lambda: quant.fake_quant_triton(x, bits))
        record(f"fake_quant INT{bits} 64M bf16", "triton", us, 4 * n, copy_gbs)

    # one 64 x 4096 packet -> soft tokens (latency: tiny data, launch-bound)
    pkt = torch.randn(64, 4096, device=DEV, dtype=torch.bfloat16)
    for bits in (4, 6, 8):
        p, s = quant.quantize_triton(pkt, bits)
        sec = f"packet 64x4096 INT{bits} -> soft tokens"
        fn = lambda: quant.dequantize_rms_match_triton(p, s, bits, 32, 0.015, None, torch.bfloat16)
        record(sec, "triton fused (do_bench, incl. launch)", bench(fn))
        if not SMOKE:
            record(sec, "triton fused (CUDA graph replay)", bench(fn, graph=True))
        for warps in (2, 4, 8) if not SMOKE else ():
            fnw = lambda: quant.dequantize_rms_match_triton(p, s, bits, 32, 0.015, None, torch.bfloat16, num_warps=warps)
            record(sec, f"triton fused warps={warps} (graph)", bench(fnw, graph=True))
        eager = lambda: reference.dequantize_rms_match_ref(p, s, bits, 32, 0.015, None, torch.bfloat16)
        record(sec, "eager torch", bench(eager))
        if with_compile and bits in (4, 6):
            ce = try_compile(lambda a, b: reference.dequantize_rms_match_ref(a, b, bits, 32, 0.015, None, torch.bfloat16))
            if ce is not None:
                record(sec, "torch.compile", bench(lambda: ce(p, s)))
                record(sec, "torch.compile (CUDA graph replay)", bench(lambda: ce(p, s), graph=True))


# ----------------------------------------------------------------------------- cross-attention
def xattn_eager(q, k, v, mask, gate, res):
    """What one would write in eager PyTorch at bf16: bf16 matmuls, fp32 softmax, empty rows -> 0."""
    s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    valid = mask[:, None, None, :]
    p = torch.softmax(s.float().masked_fill(~valid, float("-inf")), -1)
    p = torch.nan_to_num(p, nan=0.0).to(q.dtype)
    a = torch.matmul(p, v).transpose(1, 2).reshape(res.shape)
    return res + torch.tanh(gate) * a


@section
def xattn(copy_gbs, with_compile):
    for B, H, Lq, Lk, Dh, dt in [(3, 4, 8, 300, 64, torch.float32), (4, 8, 64, 257, 64, torch.bfloat16), (2, 4, 33, 129, 48, torch.float16)]:
        q = torch.randn(B, H, Lq, Dh, device=DEV).to(dt)
        k = torch.randn(B, H, Lk, Dh, device=DEV).to(dt)
        v = torch.randn(B, H, Lk, Dh, device=DEV).to(dt)
        mask = torch.rand(B, Lk, device=DEV) > 0.3
        mask[1] = False
        gate = torch.tensor(0.4, device=DEV).to(dt)
        res = torch.randn(B, Lq, H * Dh, device=DEV).to(dt)
        ours = [t.clone().requires_grad_() for t in (q, k, v, gate, res)]
        theirs = [t.double().requires_grad_() for t in (q, k, v, gate, res)]
        out = lw_kernels.gated_cross_attention(ours[0], ours[1], ours[2], mask, ours[3], ours[4])
        ref = reference.gated_cross_attention_ref(theirs[0], theirs[1], theirs[2], mask, theirs[3], theirs[4])
        g = torch.randn_like(out)
        out.backward(g)
        ref.backward(g.double())
        tol = 1e-5 if dt == torch.float32 else 1e-2
        rounding = rel_rms(ref.to(dt).double() - res.double(), ref - res.double())
        check(f"xattn fwd {B}x{H}x{Lq}x{Lk}x{Dh} {dt}", rel_rms(out.double() - res.double(), ref - res.double()), 2 * rounding + tol)
        check(f"xattn empty row == residual {dt}", float((out[1] != res[1]).sum()), 0)
        for n, a, r in zip(["dq", "dk", "dv", "dgate", "dres"], ours, theirs):
            check(f"xattn {n} {dt}", rel_rms(a.grad, r.grad), 3 * tol)

    B, H, Lq, Lk, Dh = (2, 2, 64, 256, 64) if SMOKE else (16, 16, 64, 256, 64)
    dt = torch.bfloat16
    q = torch.randn(B, H, Lq, Dh, device=DEV, dtype=dt, requires_grad=True)
    k = torch.randn(B, H, Lk, Dh, device=DEV, dtype=dt, requires_grad=True)
    v = torch.randn(B, H, Lk, Dh, device=DEV, dtype=dt, requires_grad=True)
    lengths = torch.randint(Lk // 4, Lk + 1, (B,), device=DEV)
    mask = torch.arange(Lk, device=DEV)[None, :] < lengths[:, None]
    gate = torch.tensor(0.3, device=DEV, dtype=dt, requires_grad=True)
    res = torch.randn(B, Lq, H * Dh, device=DEV, dtype=dt, requires_grad=True)
    g = torch.randn(B, Lq, H * Dh, device=DEV, dtype=dt)
    leaves = [q, k, v, gate, res]
    flops_fwd = 4 * B * H * Lq * Lk * Dh
    impls = {"triton fused": lambda *a: cross_attention.gated_cross_attention_triton(*a), "eager torch bf16": xattn_eager}
    if with_compile:
        impls["torch.compile"] = try_compile(xattn_eager)
    for name, fn in impls.items():
        if fn is None:
            continue
        with torch.no_grad():
            us = bench(lambda: fn(q, k, v, mask, gate, res))
        record("xattn fwd B16 H16 Lq64 Lk256 Dh64 bf16", name, us, tflops=round(flops_fwd / us / 1e6, 2))

        def fwd_bwd():
            out = fn(q, k, v, mask, gate, res)
            return torch.autograd.grad(out, leaves, g)

        us = bench(fwd_bwd)
        record("xattn fwd+bwd B16 H16 Lq64 Lk256 Dh64 bf16", name, us, tflops=round(3.5 * flops_fwd / us / 1e6, 2))
        if name == "triton fused" and not SMOKE:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(10):
                    fwd_bwd()
                torch.cuda.synchronize()
            kernels = {}
            for ev in prof.key_averages():
                if ev.device_type.name == "CUDA" and getattr(ev, "device_time_total", 0) > 0:
                    kernels[ev.key[:60]] = round(ev.device_time_total / 10, 2)
            RESULTS["xattn_fwd_bwd_kernel_us_per_call"] = kernels
            log("xattn per-kernel device us/call:", kernels)


def write(out_dir, args):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "gpu_kernels.json"), "w") as f:
        json.dump(RESULTS, f, indent=1)
    m = RESULTS["meta"]
    lines = [
        "# lw_kernels GPU results",
        "",
        f"- device: {m['device']}; torch {m['torch']}; triton {m['triton']}; CUDA {m['cuda']}",
        f"- date (UTC): {m['date']}",
        f"- command: `{m['command']}`",
        f"- device copy bandwidth (read+write, same run): {m['copy_GBps']:.0f} GB/s",
        f"- checks: {sum(c['ok'] for c in RESULTS['checks'])}/{len(RESULTS['checks'])} passed; errors: {len(RESULTS['errors'])}",
        "",
        "| section | implementation | µs | GB/s | % of copy | TFLOP/s |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in RESULTS["timings"]:
        lines.append(f"| {r['section']} | {r['impl']} | {r['us']:.2f} | {r.get('GB/s', '')} | {r.get('pct_copy', '')} | {r.get('tflops', '')} |")
    failed = [c for c in RESULTS["checks"] if not c["ok"]]
    if failed:
        lines += ["", "## Failed checks", ""] + [f"- {c['name']}: {c['value']:.3e} > {c['bound']:.1e}" for c in failed]
    for e in RESULTS["errors"]:
        lines += ["", f"## Error in {e['section']}", "", "```", e["traceback"], "```"]
    with open(os.path.join(out_dir, "gpu_kernels.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/kernels")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile baselines (they take minutes)")
    ap.add_argument("--only", default="rmsln,quant,xattn")
    ap.add_argument("--smoke", action="store_true", help="CPU dry run (interpreter, tiny sizes); numbers mean nothing")
    args = ap.parse_args()
    assert SMOKE or torch.cuda.is_available(), "needs a CUDA GPU (or --smoke)"
    if SMOKE:
        args.no_compile = True
    torch.manual_seed(0)
    RESULTS["meta"] = {
        "device": "CPU smoke run" if SMOKE else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "commit": commit(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
    }
    copy_gbs = copy_bandwidth()
    RESULTS["meta"]["copy_GBps"] = copy_gbs
    only = args.only.split(",")
    try:
        if "rmsln" in only:
            rms_ln(copy_gbs, not args.no_compile)
            write(args.out, args)
        if "quant" in only:
            quantization(copy_gbs, not args.no_compile)
            write(args.out, args)
        if "xattn" in only:
            xattn(copy_gbs, not args.no_compile)
    finally:
        write(args.out, args)
    print("\n".join(open(os.path.join(args.out, "gpu_kernels.md")).read().splitlines()[:400]))


if __name__ == "__main__":
    main()
