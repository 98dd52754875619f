"""One call on a GPU: the translator's forward+backward with our Triton kernels vs eager PyTorch vs torch.compile.

Usage: python benchmarks/gpu_translator.py --out DIR   (writes DIR/gpu_translator.json and .md)

Setup: TranslatorConfig.preset("high_capacity", source_dim=4096, target_dim=4096, dropout=0.0)
(64 soft tokens, depth 8, 16 heads, bottleneck 1024), batch 16 x 256 source tokens, source rows
padded to random lengths (row 0 full). bf16 by `model.to(torch.bfloat16)`, not autocast: the
translator then runs on bf16 tensors end to end (its RMSNorms still compute in fp32), as at
inference, and autocast's per-op weight casts would add launches that are not the kernels' doing.
Gates are drawn in [0.3, 0.8] (at their zero init every branch is off and most gradients are 0).
Paths (the same weights throughout):
- triton: the model as it is; on CUDA it dispatches cross-attention and the output LayerNorm to lw_kernels' Triton.
- eager: lw_kernels.use_triton patched to return False, so the same model runs the torch references.
- compile: torch.compile of the eager path (default mode), and of the triton path where it traces.
- CUDA graphs: one fwd+bwd step captured with torch.cuda.graph (triton and eager), and
  torch.compile(mode="reduce-overhead") of the eager path; these remove host launch overhead.
Before timing: outputs and all parameter gradients of both bf16 paths vs an fp32 copy of the model
(relative RMS error); the triton path must not be more than 1.5x further from fp32 than eager is.
Timings: triton.testing.do_bench medians (L2 flushed per rep) of one step: forward, then
torch.autograd.grad of the output against all parameters with a fixed upstream gradient.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = "--smoke" in sys.argv  # CPU dry run: interpreter, tiny model; numbers mean nothing
if SMOKE:
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["LW_FORCE_TRITON"] = "1"
DEV = "cpu" if SMOKE else "cuda"

import triton  # noqa: E402
from benchmarks.timing import median_ms  # noqa: E402

import lw_kernels  # noqa: E402
from lw_runtime.translator import BottleneckedGatedTranslator, TranslatorConfig  # noqa: E402
from train.provenance import commit  # noqa: E402

RESULTS: dict = {"checks": [], "timings": [], "errors": [], "notes": []}
T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


@contextlib.contextmanager
def eager_references():
    """Route lw_kernels' public ops to the torch references (what LW_FORCE_TRITON/CUDA dispatch would skip)."""
    saved = lw_kernels.use_triton
    lw_kernels.use_triton = lambda t: False
    try:
        yield
    finally:
        lw_kernels.use_triton = saved


def rel_rms(a, b):
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def bench(fn):
    """Milliseconds per call (do_bench median, warmup 50, rep 300)."""
    return median_ms(fn, SMOKE, warmup=50, rep=300)


def record(impl, what, ms, flops=None, **extra):
    row = {"impl": impl, "what": what, "ms": round(ms, 3)}
    if flops:
        row["TFLOP/s"] = round(flops / ms / 1e9, 1)
    row.update(extra)
    RESULTS["timings"].append(row)
    log(f"{what:10s} {impl:58s} {ms:9.3f} ms " + (f"{row['TFLOP/s']} TFLOP/s" if flops else ""))


def check(name, value, bound):
    ok = bool(value <= bound)
    RESULTS["checks"].append({"name": name, "value": value, "bound": bound, "ok": ok})
    log(f"check {name}: {value:.3e} (<= {bound:.3e}) {'OK' if ok else 'FAIL'}")


def matmul_flops(cfg, B, T):
    """Forward matmul FLOPs (2 per multiply-add): projections plus attention scores and values."""
    d, K, tok_q, tok_s = cfg.bottleneck_dim, cfg.num_soft_tokens, B * cfg.num_soft_tokens, B * T
    hidden = int(cfg.ffn_mult * d)
    per_block = 2 * tok_q * (d * 3 * d + d * d + d * d + d * 2 * hidden + hidden * d) + 2 * tok_s * d * 2 * d
    per_block += 4 * B * K * K * d + 4 * B * K * T * d  # self- and cross-attention (all heads)
    src = 2 * tok_s * cfg.source_dim * d
    out = 2 * tok_q * d * cfg.target_dim
    fwd = cfg.depth * per_block + src + out
    # backward: 2x forward, except the source projection needs no input gradient (source is data)
    return fwd, fwd + 2 * (fwd - src) + src


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/kernels")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-deadline", type=float, default=420.0, help="skip compile variants started after this many seconds")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    assert SMOKE or torch.cuda.is_available(), "needs a CUDA GPU (or --smoke)"
    RESULTS["meta"] = {
        "device": "CPU smoke run" if SMOKE else torch.cuda.get_device_name(),
        "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
        "commit": commit(), "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
    }
    try:
        run(args)
    except Exception:
        RESULTS["errors"].append({"section": "main", "traceback": traceback.format_exc()})
        log(traceback.format_exc())
    finally:
        write(args.out)


def run(args):
    torch.manual_seed(0)
    if SMOKE:
        cfg = TranslatorConfig.preset("tiny", source_dim=64, target_dim=48, dropout=0.0)
        B, T = 2, 12
    else:
        cfg = TranslatorConfig.preset("high_capacity", source_dim=4096, target_dim=4096, dropout=0.0)
        B, T = args.batch, args.tokens
    RESULTS["meta"]["config"] = {"preset": "tiny" if SMOKE else "high_capacity", **{k: getattr(cfg, k) for k in (
        "source_dim", "target_dim", "num_soft_tokens", "depth", "num_heads", "bottleneck_dim", "ffn_mult")},
        "batch": B, "source_tokens": T, "dtype": "bf16 (model.to)"}
    ref32 = BottleneckedGatedTranslator(cfg).to(DEV)
    with torch.no_grad():
        for p in ref32.gate_parameters():
            p.uniform_(0.3, 0.8)
    ref32.set_target_rms(0.02)
    model = copy.deepcopy(ref32).to(torch.bfloat16)
    src = (torch.randn(B, T, cfg.source_dim, device=DEV) * 3).to(torch.bfloat16)
    lengths = torch.randint(T // 4, T + 1, (B,), device=DEV)
    lengths[0] = T
    mask = torch.arange(T, device=DEV)[None, :] < lengths[:, None]
    RESULTS["meta"]["valid_source_tokens"] = int(mask.sum())
    g_out = torch.randn(B, cfg.num_soft_tokens, cfg.target_dim, device=DEV, dtype=torch.bfloat16) * 0.1
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params32 = [p for p in ref32.parameters() if p.requires_grad]
    fwd_flops, step_flops = matmul_flops(cfg, B, T)
    RESULTS["meta"]["matmul_GFLOP"] = {"fwd": fwd_flops / 1e9, "fwd_bwd": step_flops / 1e9}

    def step(m):
        out = m(src, mask)
        return (out,) + torch.autograd.grad(out, params, g_out)

    # ---- correctness: both bf16 paths against fp32 eager
    with eager_references():
        out32 = ref32(src.float(), mask)
        grads32 = torch.autograd.grad(out32, params32, g_out.float())
        eager_res = step(model)
    triton_res = step(model)

    def errs(res):
        out, grads = res[0], res[1:]
        flat = torch.cat([g.double().flatten() for g in grads])
        flat32 = torch.cat([g.double().flatten() for g in grads32])
        per = {n: rel_rms(g, r) for n, g, r in zip(names, grads, grads32)}
        return rel_rms(out, out32), rel_rms(flat, flat32), per

    e_out, e_grad, e_per = errs(eager_res)
    t_out, t_grad, t_per = errs(triton_res)
    RESULTS["accuracy_vs_fp32"] = {
        "eager_bf16": {"out": e_out, "all_grads": e_grad, "worst_param": max(e_per.items(), key=lambda kv: kv[1])},
        "triton_bf16": {"out": t_out, "all_grads": t_grad, "worst_param": max(t_per.items(), key=lambda kv: kv[1])},
        "triton_vs_eager": {"out": rel_rms(triton_res[0], eager_res[0]),
                            "all_grads": rel_rms(torch.cat([g.double().flatten() for g in triton_res[1:]]),
                                                 torch.cat([g.double().flatten() for g in eager_res[1:]]))},
    }
    log("accuracy vs fp32:", json.dumps(RESULTS["accuracy_vs_fp32"]))
    check("triton out err vs fp32 <= 1.5x eager's", t_out, 1.5 * e_out + 1e-4)
    check("triton all-grads err vs fp32 <= 1.5x eager's", t_grad, 1.5 * e_grad + 1e-4)
    worst_ratio = max(t_per[n] / max(e_per[n], 1e-6) for n in names)
    RESULTS["accuracy_vs_fp32"]["worst_per_param_ratio_triton_over_eager"] = worst_ratio
    RESULTS["per_param_err_vs_fp32"] = {n: {"eager": e_per[n], "triton": t_per[n]} for n in names}
    del eager_res, triton_res, out32, grads32, ref32

    # ---- timing
    def fwd(m):
        with torch.no_grad():
            return m(src, mask)

    record("triton (lw_kernels)", "fwd", bench(lambda: fwd(model)), fwd_flops)
    with eager_references():
        record("eager (torch references)", "fwd", bench(lambda: fwd(model)), fwd_flops)
    t_triton = bench(lambda: step(model))
    record("triton (lw_kernels)", "fwd+bwd", t_triton, step_flops)
    with eager_references():
        t_eager = bench(lambda: step(model))
    record("eager (torch references)", "fwd+bwd", t_eager, step_flops)

    if not SMOKE:
        profile_step(lambda: step(model), "triton", t_triton)
        with eager_references():
            profile_step(lambda: step(model), "eager", t_eager)
        for name, ctx in (("triton (lw_kernels)", contextlib.nullcontext), ("eager (torch references)", eager_references)):
            try:
                with ctx():
                    graph, _ = capture(lambda: step(model))
                    record(name + " + CUDA graph (torch.cuda.graph)", "fwd+bwd", bench(graph.replay), step_flops)
                del graph
            except Exception:
                RESULTS["errors"].append({"section": f"cuda graph {name}", "traceback": traceback.format_exc()})
                log(traceback.format_exc())

    if args.no_compile or SMOKE:
        return
    variants = [
        ("torch.compile(eager)", eager_references, {}),
        ("torch.compile(triton)", contextlib.nullcontext, {}),
        ("torch.compile(eager, mode=reduce-overhead)", eager_references, {"mode": "reduce-overhead"}),
        ("torch.compile(triton, mode=reduce-overhead)", contextlib.nullcontext, {"mode": "reduce-overhead"}),
    ]
    for name, ctx, kw in variants:
        if time.time() - T0 > args.compile_deadline:
            RESULTS["notes"].append(f"{name} skipped: started after the {args.compile_deadline:.0f}s deadline")
            continue
        try:
            torch._dynamo.reset()
            from torch._dynamo.utils import counters

            counters.clear()
            with ctx():
                cm = torch.compile(model, **kw)
                t = time.time()

                def cstep():
                    if kw:
                        torch.compiler.cudagraph_mark_step_begin()
                    return step(cm)

                res = cstep()
                compile_s = time.time() - t
                res = cstep()
                err = rel_rms(res[0], fwd(model))
                record(name, "fwd+bwd", bench(cstep), step_flops, compile_s=round(compile_s, 1), out_rel_err_vs_uncompiled=err)
                from torch._dynamo.utils import counters

                breaks = {k: v for k, v in counters["graph_break"].items()}
                RESULTS["notes"].append(f"{name}: dynamo graph breaks {sum(breaks.values())}: {list(breaks)[:5]}")
            del cm, res
        except Exception:
            RESULTS["errors"].append({"section": name, "traceback": traceback.format_exc()})
            log(traceback.format_exc())


def capture(fn):
    """Whole-step CUDA graph: warm up on a side stream, then capture one call (PyTorch's recipe)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = fn()
    return graph, static


def profile_step(fn, label, wall_ms):
    """Device time per step by kernel family, to tell device-bound from host-bound."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    n = 5
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    fam: dict = {}
    launches = 0
    for ev in prof.key_averages():
        if ev.device_type.name != "CUDA" or getattr(ev, "device_time_total", 0) <= 0:
            continue
        k = ev.key.lower()
        if "gemm" in k or "sm90" in k or "cutlass" in k or "nvjet" in k:
            f = "matmul"
        elif "flash" in k or "fmha" in k or "attention" in k:
            f = "sdpa (self-attention)"
        elif "_xattn" in k:
            f = "triton cross-attention"
        elif "_rms_ln" in k:
            f = "triton rms-matched LN"
        elif "reduce" in k:
            f = "torch reductions"
        else:
            f = "torch elementwise/other"
        fam[f] = fam.get(f, 0.0) + ev.device_time_total / n / 1e3
        launches += ev.count
    total = sum(fam.values())
    RESULTS.setdefault("profile", {})[label] = {
        "device_ms_per_step": round(total, 3), "wall_ms_per_step": round(wall_ms, 3),
        "kernel_launches_per_step": launches // n,
        "device_ms_by_family": {k: round(v, 3) for k, v in sorted(fam.items(), key=lambda kv: -kv[1])},
    }
    log(f"profile {label}:", RESULTS["profile"][label])


def write(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "gpu_translator.json"), "w") as f:
        json.dump(RESULTS, f, indent=1, default=str)
    m = RESULTS["meta"]
    lines = [
        "# Translator forward+backward on the GPU",
        "",
        f"- device: {m['device']}; torch {m['torch']}; triton {m['triton']}; CUDA {m['cuda']}",
        f"- date (UTC): {m['date']}; commit: {m['commit']}",
        f"- command: `{m['command']}`",
        f"- config: {m.get('config')}; valid source tokens {m.get('valid_source_tokens')}",
        f"- matmul GFLOP per step: {m.get('matmul_GFLOP')}",
        f"- checks: {sum(c['ok'] for c in RESULTS['checks'])}/{len(RESULTS['checks'])} passed; errors: {len(RESULTS['errors'])}",
        "",
        "| what | implementation | ms | matmul TFLOP/s | notes |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for r in RESULTS["timings"]:
        extra = {k: v for k, v in r.items() if k not in ("impl", "what", "ms", "TFLOP/s")}
        lines.append(f"| {r['what']} | {r['impl']} | {r['ms']:.3f} | {r.get('TFLOP/s', '')} | {extra or ''} |")
    if "accuracy_vs_fp32" in RESULTS:
        lines += ["", "## Accuracy (relative RMS error vs the fp32 model)", "", "```",
                  json.dumps(RESULTS["accuracy_vs_fp32"], indent=1, default=str), "```"]
    if "profile" in RESULTS:
        lines += ["", "## Device time per step (torch.profiler)", "", "```", json.dumps(RESULTS["profile"], indent=1), "```"]
    for n in RESULTS["notes"]:
        lines.append(f"- note: {n}")
    for e in RESULTS["errors"]:
        lines += ["", f"## Error in {e['section']}", "", "```", e["traceback"][-3000:], "```"]
    with open(os.path.join(out_dir, "gpu_translator.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[:60]))


if __name__ == "__main__":
    main()
