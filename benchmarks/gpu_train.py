"""Training throughput and peak memory of ``train.loop.Trainer`` (the code ``python -m train.fsdp`` runs).

Usage (one GPU):   python benchmarks/gpu_train.py --out results/train/h100 [--source S --target T]
Several GPUs:      torchrun --nproc_per_node=N benchmarks/gpu_train.py --out DIR [--compare DIR1/gpu_train.json]
CPU dry run:       python benchmarks/gpu_train.py --quick --device cpu --out /tmp/gpu_train
Eager vs captured: python benchmarks/gpu_train.py --out DIR --source S --target T --no-shapes --compile off,on

Measurements (each in its own try/except; an error is recorded in the JSON and the next one runs):
- ``embedded``: the embedded default pair (or any --source/--target), its preset and real source
  cache, global batch 32; only when --source and --target are given.
- ``8b``: a Mistral-7B-shaped source -> Llama-3.1-8B-shaped target, random bf16 weights built on the
  GPU (``train.random_models``), the high_capacity preset (K = 64, depth 8, bottleneck 1024),
  global batch --batch-size (16) of 256 source tokens, target replicated vs sharded (FSDP2; with one
  GPU sharding is the same code path with a world of one), each without and with activation
  checkpointing of the target's blocks. Source states are random (B, 256, 4096) tensors standing in
  for the cache (training never runs the source once its states are cached); the source model
  still sits in GPU memory and one encode of 256-token texts is timed on its own.
Every measurement but --compile's: process group (world of one without torchrun), FSDP2 translator
with bf16 parameters and fp32 reduction, 2 untimed steps, then --steps timed optimizer steps
(median). Subnormals are flushed, as training does (on a CPU they slow the target's backward ~10x).
Peak memory: torch.cuda.max_memory_allocated per rank (reset per measurement); on CPU the process's
peak RSS, which only grows. Target prompts use a byte tokenizer (3-4x the tokens of a real one).
With ``--compile`` and one process the 8B shapes also get the --compile rows (global batch --batch-size,
plain modules: the step a one-GPU ``train.fsdp`` run takes).
``--compare`` takes a JSON from a run with fewer GPUs and adds scaling efficiency
(samples/s ratio / GPU ratio) for measurements of the same name.
``--compile off,on,...``: the eager step and the captured one (``train.captured``: fixed shapes,
``torch.compile``) timed on the same batches of the --source/--target pair (in --quick without them,
the tiny random pair), global batch --compile-batch-size (128), one process with plain modules (as
``python -m train.fsdp`` runs without torchrun), after --compile-warmup untimed steps that hold
the compiles. Entries: ``off``, ``on`` (the device's default: CUDA graphs on CUDA, pipelined: the
host prepares step N + 1 while the GPU runs step N, ``Trainer.step``), ``waited`` (``on`` reading its loss
values every step, as before pipelining), ``regions`` (``on`` with ``--compile-regions``: one compiled target block
stamped out for every block), ``mode:M`` or ``backend:B`` (``torch.compile``'s keywords). Each captured row records its speed-up over ``off``,
the shapes it compiled, dynamo's graph breaks and the warm-up seconds (``--profile N``: then N
profiled steps, ``benchmarks/step_profile.py``: GPU busy vs idle time, host regions, top kernels); its FLOPs come from the
padded shapes it ran (``CapturedStep.flops_by_part``: hooks would be traced into its graph).
FLOPs and MFU (``train.flops``): every timed step's model FLOPs are counted from the shapes it ran
(hooks on the translator, the target's decoder and LM head, the InfoNCE projection; summed over
ranks): frozen target forward + gradient to its activations only, LM head at the supervised
positions only, translator forward + backward; the cached source costs nothing per step; the
source encode counts its forward up to the layer read. Achieved TFLOP/s per GPU is the median over
timed steps of step FLOPs / step time / GPUs; MFU divides it by the device's dense bf16 peak
(``train.flops.BF16_DENSE_PEAK_TFLOPS``; an unknown device, the CPU included, gets no MFU and a
note; ``--peak-tflops`` sets the peak instead). Activation checkpointing's recompute is not model
work, so ac=on rows show a lower MFU for the same model FLOPs.
Writes DIR/gpu_train.json and DIR/gpu_train.md (device, commit, date, command) from rank 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.data import load_task  # noqa: E402
from lw_runtime.source import encode_source, resolve_layer  # noqa: E402
from train import distributed  # noqa: E402
from train.config import parse_args as train_args  # noqa: E402
from train.flops import DecoderShape, StepFlops, achieved, frozen_decoder_flops, significant  # noqa: E402
from train.loop import SourceCache, Trainer, matmul_precision, truncate_blocks  # noqa: E402
from train.random_models import build_random  # noqa: E402
from train.captured import block_regions  # noqa: E402

import gpu_train_report  # noqa: E402  (this folder, benchmarks/)

T0 = time.time()


def log(ctx, *a):
    if ctx.is_main:
        print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


class RandomSourceCache:
    """Stands in for ``SourceCache``: (B, T, D) random source states, all tokens real."""

    def __init__(self, dim: int, tokens: int, dtype=torch.float32):
        self.dim, self.tokens, self.dtype = dim, tokens, dtype
        self.gen = None

    def reset(self):
        self.gen = None

    def batch(self, examples, device):
        if self.gen is None:
            self.gen = torch.Generator(device=device).manual_seed(0)
        hidden = torch.randn(len(examples), self.tokens, self.dim, device=device, generator=self.gen, dtype=self.dtype)
        return hidden, torch.ones(len(examples), self.tokens, dtype=torch.bool, device=device)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})"


def free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def time_trainer(ctx, cfg, source, target, cache, examples, steps: int, peak: float | None, warmup: int = 2,
                 compile_options: dict | None = None, profile: int = 0) -> dict:
    """Build a Trainer (FSDP2 translator under a process group) and time ``steps`` optimizer steps
    after ``warmup`` untimed ones, counting each step's model FLOPs: by hooks on an eager step, from
    the shapes it ran on a captured one (a target whose shape ``train.flops`` cannot read is timed
    without them: ``flops_error``)."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)  # every measurement starts from the same translator: first losses must agree
    if hasattr(cache, "reset"):
        cache.reset()
    calib = cache.batch(examples[: min(64, len(examples))], ctx.device)
    counters.clear()
    # as train.fsdp sets it; the old value comes back whatever happens below
    with contextlib.ExitStack() as stack:
        precision = stack.enter_context(matmul_precision(cfg, ctx.device, next(target.model.parameters()).dtype))
        options = dict(compile_options or {})
        pipelined = options.pop("pipelined", None)
        if options.pop("regions", False):
            stack.enter_context(block_regions(target))
        trainer = Trainer(cfg, ctx, source, target, cache, calib, compile_options=options or None, pipelined=pipelined)
        captured, recorder, flops_error = trainer.captured, None, None
        try:
            if captured is None:
                recorder = StepFlops(trainer)
            else:
                DecoderShape.of(target.model)
        except Exception as exc:  # noqa: BLE001 - the timing is still worth having
            flops_error = f"{type(exc).__name__}: {exc}"
        records, parts, new_shapes = [], [], []
        pos = 0
        try:
            for step in range(steps + warmup):
                batch = [examples[(pos + i) % len(examples)] for i in range(cfg.batch_size)]
                pos += cfg.batch_size
                if recorder is not None:
                    recorder.reset()
                if captured is not None:
                    captured.calls.clear()
                    shapes_before = len(captured.shapes_seen)
                record = trainer.step(step + 1, batch)  # pipelined (the captured step on CUDA): the step before's
                if record is not None:
                    records.append(record)
                if recorder is not None:
                    parts.append(recorder.by_part())
                elif captured is not None:
                    new_shapes.append(len(captured.shapes_seen) - shapes_before)
                    if flops_error is None:
                        parts.append(captured.flops_by_part())
            last = trainer.flush()
            if last is not None:
                records.append(last)
        finally:
            if recorder is not None:
                recorder.close()
        if profile > 0:  # after the timed steps (compiles and graph captures done), at their matmul precision:
            from step_profile import profile_steps  # another would trip dynamo's guard and recompile

            profiled = profile_steps(trainer, examples, cfg.batch_size, profile, start=pos)
    timed = records[warmup:]
    step_s = statistics.median(r["step_s"] for r in timed)
    out = {
        "step_ms_median": round(1000 * step_s, 2),
        "step_ms_all": [round(1000 * r["step_s"], 2) for r in timed],
        "samples_per_s": round(cfg.batch_size / step_s, 2),
        "samples_per_s_per_gpu": round(cfg.batch_size / step_s / ctx.world, 2),
        "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in timed), 1),
        "peak_mem_gb_per_rank": [round(m / 1024, 2) for m in timed[-1]["peak_mem_mb"]],
        "loss_first_last": [round(records[0]["loss"], 4), round(records[-1]["loss"], 4)],
        "matmul_precision": precision,
        "pipelined": trainer.pipelined,
        "translator_params_m": round(sum(p.numel() for p in trainer.translator.parameters()) / 1e6, 2),
        **(step_flops_fields(ctx, parts[warmup:], [r["step_s"] for r in timed], peak) if flops_error is None
           else {"flops_error": flops_error}),
    }
    if profile > 0:
        out["profile"] = profiled
    if captured is not None:
        out.update(compiled_shapes=len(captured.shapes_seen), new_shapes_in_timed_steps=sum(new_shapes[warmup:]),
                   graph_breaks=sum(counters["graph_break"].values()), graphs=counters["stats"]["unique_graphs"],
                   warmup_s=round(sum(r["step_s"] for r in records[:warmup]), 1))
    del trainer, captured
    torch._dynamo.reset()  # drops the compiled graphs (and their CUDA-graph memory) with the trainer
    return out


def step_flops_fields(ctx, parts: list[dict], step_s: list[float], peak: float | None) -> dict:
    """Global FLOPs per timed step (each rank counted its share; summed in one collective, after the
    timing), the median step's split by part, and the median of FLOPs / step time as TFLOP/s per GPU
    and MFU."""
    names = sorted(parts[0])
    mine = [float(p[k]) for p in parts for k in names]
    summed = [sum(col) for col in zip(*ctx.all_gather_floats(mine))]
    steps = [dict(zip(names, summed[i * len(names) : (i + 1) * len(names)])) for i in range(len(parts))]
    totals = [sum(p.values()) for p in steps]
    middle = steps[totals.index(sorted(totals)[len(totals) // 2])]
    rate = statistics.median(f / s for f, s in zip(totals, step_s))
    return {
        "tflop_per_step": significant(statistics.median(totals) / 1e12),
        "tflop_per_step_by_part": {k: significant(v / 1e12) for k, v in middle.items()},
        **achieved(rate, 1.0, ctx.world, device_name(ctx.device), peak),
    }


# set by main on the writing rank: writes the report so far, so a run cut short (a time limit, a crash, a
# machine taken back) keeps every measurement it finished
_SAVE_PARTIAL = None


def measure(results, ctx, name, fn, budget_s):
    if time.time() - T0 > budget_s:
        results.append({"name": name, "error": f"skipped: past the {budget_s:.0f}s time budget"})
        log(ctx, name, "skipped (time budget)")
        return
    free(ctx.device)
    started = time.time()
    try:
        row = {"name": name, **fn()}
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, the next measurement runs
        row = {"name": name, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    row["wall_s"] = round(time.time() - started, 1)
    results.append(row)
    log(ctx, name, {k: v for k, v in row.items() if k not in ("traceback", "step_ms_all")})
    if _SAVE_PARTIAL is not None:
        try:
            _SAVE_PARTIAL()
        except Exception as exc:  # noqa: BLE001 - a failed partial write must not end the measurements
            log(ctx, f"partial report not written: {type(exc).__name__}: {exc}")


def shape_runs(args, ctx, results):
    dev, dtype = ctx.device, (torch.bfloat16 if ctx.device.type == "cuda" else torch.float32)
    source_shape, target_shape = ("tiny", "tiny-wide") if args.quick else ("mistral-7b", "llama-3.1-8b")
    preset = "tiny" if args.quick else "high_capacity"
    source_layer = -1 if args.quick else 16
    tokens = 32 if args.quick else args.source_tokens
    examples = load_task("relay_code", "train", 256, seed=0)
    log(ctx, f"building random {source_shape} (source) and {target_shape} (target) on {dev}")
    source = build_random(source_shape, device=dev, dtype=dtype, seed=1)

    def cfg(**kw):
        flags = ["--preset", preset, "--source-layer", str(source_layer), "--batch-size", str(args.batch_size),
                 "--warmup", "0", "--max-source-tokens", str(tokens), "--device", dev.type, "--no-progress"]
        flags += ["--shard-target"] if kw.get("shard") else []
        flags += ["--activation-checkpointing"] if kw.get("ac") else []
        return train_args(flags)

    def source_encode():
        text = " ".join(e.passage for e in examples[:8])
        texts = [text] * max(1, args.batch_size // ctx.world)
        times = []
        for _ in range(3):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            states = encode_source(source, texts, source_layer, tokens)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        shape = DecoderShape.of(source.model, layers=resolve_layer(source.num_layers, source_layer))
        flops = frozen_decoder_flops(shape, *states.mask.shape, head_rows=0, backward=False)
        return {"source_tokens": int(states.mask.sum(1)[0]), "batch_per_rank": len(texts),
                "encode_ms_median": round(1000 * statistics.median(times), 2),
                "samples_per_s_per_gpu": round(len(texts) / statistics.median(times), 2),
                "tflop_per_encode_per_rank": significant(flops / 1e12),
                **achieved(flops, statistics.median(times), 1, device_name(dev), args.peak_tflops)}

    measure(results, ctx, f"source_encode {source_shape}", source_encode, args.budget_s)
    cache = RandomSourceCache(source.hidden_size, tokens)
    for shard in (False, True):
        target = build_random(target_shape, device=dev, dtype=dtype, seed=2)
        if shard:
            distributed.shard_target(target, ctx)
        for ac in (False, True):
            undo = distributed.apply_activation_checkpointing(target) if ac else (lambda: None)
            name = f"{target_shape} {preset} target={'sharded' if shard else 'replicated'} ac={'on' if ac else 'off'}"
            try:
                measure(results, ctx, name, lambda: {"target": "sharded" if shard else "replicated", "activation_checkpointing": ac,
                                                       "global_batch": args.batch_size, "source_tokens": tokens,
                                                       **time_trainer(ctx, cfg(shard=shard, ac=ac), source, target, cache, examples, args.steps, args.peak_tflops)},
                        args.budget_s)
            finally:
                undo()
        if not shard and args.compile and ctx.world == 1:
            # the same 8B shapes, eager vs captured in one process (train.fsdp's default on one GPU), global batch
            # --batch-size: the MFU of the step a one-GPU run takes
            flags = ["--preset", preset, "--source-layer", str(source_layer), "--warmup", "0",
                     "--max-source-tokens", str(tokens), "--device", dev.type, "--no-progress"]
            compile_runs(args, ctx, results, target_shape, source, target, cache, examples, flags, batch=args.batch_size)
        del target
        free(dev)


def compile_entries(spec: str) -> list[tuple[str, str, dict | None]]:
    """``--compile`` entries -> (entry, --compile value, torch.compile keywords or None for the defaults)."""
    entries = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        key, _, value = item.partition(":")
        if item in ("off", "on"):
            entries.append((item, item, None))
        elif item == "waited":  # the captured step that waits for its loss values every step (not pipelined)
            entries.append((item, "on", {"pipelined": False}))
        elif item == "regions":  # --compile-regions: one compiled target block stamped out for every block
            entries.append((item, "on", {"regions": True}))
        elif key in ("mode", "backend") and value:
            entries.append((item, "on", {key: value}))
        else:
            raise ValueError(f"--compile entry {item!r}: off, on, waited, regions, mode:M or backend:B")
    return entries


def compile_runs(args, ctx, results, pair: str, source, target, cache, examples, flags: list[str],
                 batch: int | None = None) -> None:
    """Eager and captured steps of one pair on the same batches: one process, plain modules; global
    batch ``batch`` (default --compile-batch-size, 8 in --quick)."""
    if ctx.world > 1:
        results.append({"name": f"{pair} compile", "error": "the eager/captured comparison runs in one process"})
        return
    plain = distributed.DistContext(device=ctx.device)
    batch = batch or (8 if args.quick else args.compile_batch_size)
    rows = []
    for entry, value, options in compile_entries(args.compile):
        cfg = train_args(flags + ["--batch-size", str(batch), "--compile", value])
        name = f"{pair} {cfg.preset} compile={entry}"
        measure(results, ctx, name,
                lambda: {"compile": entry, "global_batch": batch,
                         **time_trainer(plain, cfg, source, target, cache, examples, args.steps, args.peak_tflops,
                                        warmup=args.compile_warmup, compile_options=options,
                                        profile=args.profile)}, args.budget_s)
        rows.append(results[-1])
    eager = next((r for r in rows if r.get("compile") == "off" and "samples_per_s" in r), None)
    for r in rows:
        if eager is not None and r is not eager and "samples_per_s" in r:
            r["speedup_vs_off"] = round(r["samples_per_s"] / eager["samples_per_s"], 2)


def embedded_runs(args, ctx, results):
    from lw_runtime.models import load_model

    dev = ctx.device
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    log(ctx, f"loading {args.source} -> {args.target}")
    source, target = load_model(args.source, dtype=dtype, device=dev), load_model(args.target, dtype=dtype, device=dev)
    batch = 8 if args.quick else 32
    flags = ["--source", args.source, "--target", args.target, "--batch-size", str(batch), "--warmup", "0", "--device", dev.type,
             "--no-progress", "--tf32", args.tf32]
    if args.quick:
        flags += ["--preset", "tiny", "--source-layer", "-1"]
    cfg0 = train_args(flags)
    examples = load_task(cfg0.task, "train", 256, seed=0)
    cache = SourceCache(source, cfg0.source_layer, cfg0.max_source_tokens, cfg0.protocol)
    cache.fill(examples)
    restore = truncate_blocks(target, cfg0.target_layers)
    try:
        if args.compile:
            compile_runs(args, ctx, results, "embedded", source, target, cache, examples, flags)
        for ac in (False, True):
            undo = distributed.apply_activation_checkpointing(target) if ac else (lambda: None)
            cfg = train_args(flags + (["--activation-checkpointing"] if ac else []))
            try:
                measure(results, ctx, f"embedded {cfg.preset} target=replicated ac={'on' if ac else 'off'}",
                        lambda: {"target": "replicated", "activation_checkpointing": ac, "global_batch": batch,
                                 **time_trainer(ctx, cfg, source, target, cache, examples, args.steps, args.peak_tflops)}, args.budget_s)
            finally:
                undo()
    finally:
        restore()


def tiny_compile_runs(args, ctx, results):
    """--compile in --quick without a pair: the tiny random pair, its source states cached as training does."""
    dtype = torch.bfloat16 if ctx.device.type == "cuda" else torch.float32
    source = build_random("tiny", device=ctx.device, dtype=dtype, seed=1)
    target = build_random("tiny-wide", device=ctx.device, dtype=dtype, seed=2)
    flags = ["--preset", "tiny", "--source-layer", "-1", "--warmup", "0", "--device", ctx.device.type, "--no-progress"]
    cfg = train_args(flags)
    examples = load_task(cfg.task, "train", 64, seed=0)
    cache = SourceCache(source, cfg.source_layer, cfg.max_source_tokens, cfg.protocol)
    cache.fill(examples)
    compile_runs(args, ctx, results, "tiny", source, target, cache, examples, flags)


def write(args, ctx, results, out: Path, partial: bool = False):
    gpu_train_report.write(args, ctx, results, out, device_name(ctx.device), T0, partial)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/train")
    p.add_argument("--source", default="", help="source model for the embedded-default measurement (with --target)")
    p.add_argument("--target", default="")
    p.add_argument("--batch-size", type=int, default=16, help="global batch of the 8B measurements")
    p.add_argument("--source-tokens", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement (after 2 untimed)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="tiny shapes (CPU dry run); numbers mean nothing")
    p.add_argument("--no-shapes", action="store_true", help="skip the 7B/8B-shaped measurements")
    p.add_argument("--budget-s", type=float, default=420.0, help="measurements starting later than this are skipped")
    p.add_argument("--compare", default="", help="gpu_train.json of a run with fewer GPUs: adds scaling efficiency")
    p.add_argument("--compile", default="", help="time eager vs captured steps: comma list of off, on, waited, regions, mode:M, backend:B")
    p.add_argument("--tf32", default="auto", choices=("auto", "on", "off"),
                   help="train.fsdp's --tf32 for the embedded-pair measurements (auto: TF32 with bf16 models)")
    p.add_argument("--compile-batch-size", type=int, default=128, help="global batch of the --compile measurements")
    p.add_argument("--profile", type=int, default=0,
                   help="--compile entries: profile this many more steps (benchmarks/step_profile.py)")
    p.add_argument("--compile-warmup", type=int, default=10, help="untimed steps before timing each --compile entry")
    p.add_argument("--peak-tflops", type=float, default=0.0,
                   help="dense bf16 peak per GPU for MFU (0 = from the device name, train/flops.py's table)")
    args = p.parse_args(argv)
    try:
        compile_entries(args.compile)
    except ValueError as exc:
        p.error(str(exc))
    if args.quick:
        args.batch_size, args.steps, args.compile_warmup = 4, 2, min(args.compile_warmup, 3)
    torch.manual_seed(0)
    torch.set_flush_denormal(True)  # as train.loop.train: on a CPU, subnormals make the target's backward ~10x slower
    ctx = distributed.init(args.device, force=True)
    results: list = []
    global _SAVE_PARTIAL
    if ctx.is_main:
        _SAVE_PARTIAL = lambda: write(args, ctx, results, Path(args.out), partial=True)  # noqa: E731
    try:
        log(ctx, f"device {ctx.device}, world {ctx.world}")
        if args.source and args.target:
            try:
                embedded_runs(args, ctx, results)
            except Exception as exc:  # noqa: BLE001
                results.append({"name": "embedded", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]})
            free(ctx.device)
        elif args.compile and args.quick:
            tiny_compile_runs(args, ctx, results)
        if not args.no_shapes:
            shape_runs(args, ctx, results)
        if ctx.is_main:
            write(args, ctx, results, Path(args.out))
            print((Path(args.out) / "gpu_train.md").read_text())
    finally:
        _SAVE_PARTIAL = None
        distributed.shutdown(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
