"""The report of ``benchmarks/gpu_train.py``: ``gpu_train.json`` (device, commit, date, command, every
measurement) and ``gpu_train.md`` (one table, the captured rows under their pair's eager row, the MFU
definition). Kept apart from the measurements so that the benchmark file stays about the timing."""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

from train.flops import peak_bf16_tflops
from train.provenance import commit


def write(args, ctx, results, out: Path, device: str, t0: float, partial: bool = False) -> None:
    """DIR/gpu_train.json and DIR/gpu_train.md of the measurements so far (``partial``: the run goes on)."""
    peak = args.peak_tflops or peak_bf16_tflops(device)
    launcher = f"torchrun --nproc_per_node={ctx.world} " if "LOCAL_RANK" in os.environ and ctx.world > 1 else "python "
    report = {
        "device": device, "world_size": ctx.world, "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": launcher + " ".join([sys.argv[0], *sys.argv[1:]]),
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "total_s": round(time.time() - t0, 1), "peak_bf16_tflops": peak,
        "peak_from": "--peak-tflops" if args.peak_tflops else "train.flops.BF16_DENSE_PEAK_TFLOPS",
        **({} if peak else {"mfu_note": f"no dense bf16 peak known for {device!r}; MFU omitted"}),
        "results": results,
    }
    if partial:  # written after each measurement; the last write of a finished run drops the flag
        report["partial"] = "written after the last finished measurement; the run had not ended"
    if args.compare:
        base = {r["name"]: r for r in json.loads(Path(args.compare).read_text())["results"] if "samples_per_s" in r}
        base_world = json.loads(Path(args.compare).read_text())["world_size"]
        for r in results:
            if r["name"] in base and "samples_per_s" in r:
                speedup = r["samples_per_s"] / base[r["name"]]["samples_per_s"]
                r["scaling_vs_compare"] = {"speedup": round(speedup, 3), "efficiency": round(speedup * base_world / ctx.world, 3),
                                           "compare_world_size": base_world}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_train.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Training throughput ({device}, {ctx.world} process(es))", "",
        f"commit {report['commit']}, {report['date']}, torch {report['torch']}, transformers {report['transformers']}", "",
        f"`{report['command']}`", "",
        "| measurement | global batch | step ms (median) | samples/s | samples/s/GPU | tokens/s | TFLOP/step | TFLOP/s/GPU | MFU "
        "| peak GB per rank | scaling eff. | error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        eff = r.get("scaling_vs_compare", {}).get("efficiency", "")
        step = r.get("step_ms_median", r.get("encode_ms_median", ""))
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else ""
        lines.append(f"| {r['name']} | {r.get('global_batch', r.get('batch_per_rank', ''))} | {step} | {r.get('samples_per_s', '')} | "
                     f"{r.get('samples_per_s_per_gpu', '')} | {r.get('tokens_per_s', '')} | "
                     f"{r.get('tflop_per_step', r.get('tflop_per_encode_per_rank', ''))} | {r.get('tflops_per_s_per_gpu', '')} | {mfu} | "
                     f"{r.get('peak_mem_gb_per_rank', '')} | {eff} | {r.get('error', '')[:120]} |")
    compiled = [r for r in results if "speedup_vs_off" in r]
    if compiled:
        # each pair's captured rows under that pair's eager row (the embedded pair's, the 8B shapes')
        eager = {r["name"].rsplit(" compile=", 1)[0]: r for r in results if r.get("compile") == "off" and "samples_per_s" in r}
        lines += ["", "Captured step (train.captured) vs eager on the same batches, one process, plain modules:"]
        for pair, base in eager.items():
            lines += [f"- {pair}, eager: {base['samples_per_s']} samples/s, first-step loss {base['loss_first_last'][0]}"]
            lines += [f"  - {r['name']}: {r['samples_per_s']} samples/s, **{r['speedup_vs_off']}x**; first-step loss "
                      f"{r['loss_first_last'][0]}; {r['compiled_shapes']} shape(s) compiled "
                      f"({r['new_shapes_in_timed_steps']} in timed steps), {r['graph_breaks']} graph break(s), "
                      f"warm-up {r['warmup_s']} s" for r in compiled if r["name"].rsplit(" compile=", 1)[0] == pair]
        lines += ["", "The first-step loss is the parity check (same translator, same batch; bf16 and dropout masks "
                      "differ in the last digits). Later losses part ways in any two runs: with warmup 0 the first "
                      "steps are chaotic (on the embedded pair a 1e-7 relative change of the initial weights moved the "
                      "8th step's loss from 3.6 to 9.3, CPU fp32, dropout off)."]
    timed = [r for r in results if "samples_per_s" in r and "target" in r and "embedded" not in r["name"]]
    if timed:
        best = max(timed, key=lambda r: r["samples_per_s"])
        firsts = [r["loss_first_last"][0] for r in timed]
        lines += ["", f"Fastest: {best['name']} ({best['samples_per_s']} samples/s).",
                  f"First-step loss of every variant (same seed and batch; replicated/sharded/AC must agree): {firsts}."]
    lines += ["", "MFU: model FLOPs (train/flops.py: matmuls from the padded shapes run, frozen target forward + gradient to "
                  "its activations, translator forward + backward, no recompute) per second per GPU over the dense bf16 peak, "
                  + (f"{peak} TFLOP/s ({report['peak_from']})." if peak else f"unknown for {device}, so MFU is omitted.")
                  + " The source encode row's TFLOP is per rank (one encode of its batch)."]
    if ctx.device.type == "cpu":
        lines += ["", "CPU: peak memory is the process's peak RSS, which never goes down between measurements."]
    (out / "gpu_train.md").write_text("\n".join(lines) + "\n")
