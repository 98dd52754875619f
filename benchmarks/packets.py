"""Packets at wire speed: ``encode_soft_tokens`` and ``decode`` of one message, in ms and GB/s of packet bytes.

Usage: python benchmarks/packets.py [--device cuda|cpu] [--baseline GIT_REF_OR_DIR] [--out DIR] [--profile]
       (writes DIR/packets.json with device, commit, date and command; --profile also DIR/packets_profile.txt)

Cases, group size 32: the Llama-8B shape (D 4096, K 64) at batch 1 and 8, INT8 and INT4, as one packet
and in chunks of 8 tokens; the embedded shape (D 576, K 16) at batch 1 and 8, INT8. Encode starts from
bf16 soft tokens on the device and ends with the packets as bytes on the host; decode starts from the
bytes and ends with the (B, K, D) bf16 tensor on the device, checked against ``fingerprint=`` (what a
server with a frozen translator passes); ``stream`` feeds the chunks to a ``Decoder`` one by one.
Timing: median wall clock of --reps calls after warm-up, synchronising after each call (the work is
host-driven: CRC, checks, copies, one launch; wall time is what the caller waits), the current and
baseline calls taken in turn so that a busy host slows both alike (on the CPU one torch thread).
Ceilings measured in the same run on the 2.2 MB of 8B batch 8 INT8: host memcpy and, on CUDA,
page-locked copies host->device and device->host; ``fraction_of_copy_ceiling`` compares each row
with the copy its bytes cannot avoid (decode: host->device, encode: device->host; the CPU: memcpy).
``dequantize_calls`` counts lw_kernels dequantize launches per decode.
The receiver's per-message weight check: ``translator_fingerprint`` of the embedded translator (fp32)
and of the 8B pair's high_capacity translator (bf16 on CUDA, fp32 on the CPU), and decode with
``translator=`` against ``fingerprint=`` at the embedded shape.
--baseline runs every case again through lw_runtime/{wire,packets}.py of a git ref (``git show``) or of
another checkout (a directory holding lw_runtime/), loaded beside the current modules; the decoded
values must be identical, and the packets byte-identical, or the row says so.
"""
from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lw_kernels  # noqa: E402
from lw_runtime import packets as current  # noqa: E402
from lw_runtime import wire  # noqa: E402
from lw_runtime.translator import BottleneckedGatedTranslator, TranslatorConfig  # noqa: E402
from train.provenance import commit  # noqa: E402

FINGERPRINT = b"benchfp0"
GOALS_MS = {("8b", 8, 8, None): 1.0, ("8b", 1, 8, None): 0.3}  # (shape, batch, bits, chunk) -> ms, encode and decode
SHAPES = {"8b": (4096, 64), "embedded": (576, 16)}
CASES = [("8b", b, bits, chunk) for b in (1, 8) for bits in (8, 4) for chunk in (None, 8)] + [
    ("embedded", b, 8, None) for b in (1, 8)]


def load_baseline(spec: str):
    """lw_runtime/{wire,packets}.py of a git ref or a checkout directory, as package ``lw_runtime_baseline``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    package = types.ModuleType("lw_runtime_baseline")
    package.__path__ = []
    sys.modules[package.__name__] = package
    modules = {}
    for name in ("wire", "packets"):
        if os.path.isdir(spec):
            origin = os.path.join(spec, "lw_runtime", f"{name}.py")
            with open(origin) as fh:
                source = fh.read()
        else:
            origin = f"{spec}:lw_runtime/{name}.py"
            source = subprocess.run(["git", "show", origin], cwd=root, capture_output=True, text=True, check=True).stdout
        module = types.ModuleType(f"{package.__name__}.{name}")
        module.__package__, module.__file__ = package.__name__, origin
        sys.modules[module.__name__] = module
        exec(compile(source, origin, "exec"), module.__dict__)
        modules[name] = module
    return modules["packets"]


class Clock:
    def __init__(self, device: torch.device, reps: int):
        self.device, self.reps = device, reps

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def ms(self, fn, warmup: int = 3) -> float:
        return self.interleaved({"only": fn}, warmup)["only"]

    def interleaved(self, fns: dict, warmup: int = 3) -> dict:
        """Median ms per call of each fn, the fns called in turn so that load drift hits all alike."""
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        self.sync()
        times = {label: [] for label in fns}
        for _ in range(self.reps):
            for label, fn in fns.items():
                t = time.perf_counter()
                fn()
                self.sync()
                times[label].append(time.perf_counter() - t)
        return {label: statistics.median(ts) * 1e3 for label, ts in times.items()}


def ceilings(clock: Clock, nbytes: int) -> dict:
    """GB/s of moving ``nbytes`` the ways a packet must move: host memcpy, and page-locked PCIe copies on CUDA."""
    src = np.random.randint(0, 255, nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    out = {"bytes": nbytes, "host_memcpy_GB_per_s": round(nbytes / clock.ms(lambda: np.copyto(dst, src)) / 1e6, 2)}
    if clock.device.type == "cuda":
        host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        dev = torch.empty(nbytes, dtype=torch.uint8, device=clock.device)
        out["h2d_pinned_GB_per_s"] = round(nbytes / clock.ms(lambda: dev.copy_(host, non_blocking=True)) / 1e6, 2)
        out["d2h_pinned_GB_per_s"] = round(nbytes / clock.ms(lambda: host.copy_(dev, non_blocking=True)) / 1e6, 2)
    return out


def dequantize_calls(fn) -> int:
    """lw_kernels dequantize / dequantize_rms_match calls made by one ``fn()``."""
    calls = []
    saved = lw_kernels.dequantize, lw_kernels.dequantize_rms_match
    lw_kernels.dequantize = lambda *a, **k: calls.append(1) or saved[0](*a, **k)
    lw_kernels.dequantize_rms_match = lambda *a, **k: calls.append(1) or saved[1](*a, **k)
    try:
        fn()
    finally:
        lw_kernels.dequantize, lw_kernels.dequantize_rms_match = saved
    return len(calls)


def calls(impl, soft, bits: int, chunk: int | None) -> tuple[list[bytes], dict]:
    device = soft.device

    def encode():
        return impl.encode_soft_tokens(soft, FINGERPRINT, bits, 32, chunk, message_id=1)

    packets = encode()

    def decode():
        return impl.decode(packets, fingerprint=FINGERPRINT, dtype=torch.bfloat16, device=device)

    def stream():
        decoder = impl.Decoder(fingerprint=FINGERPRINT, dtype=torch.bfloat16, device=device)
        for p in packets:
            decoder.feed(p)
        return decoder.result()

    out = {"encode": encode, "decode": decode}
    if chunk is not None:
        out["stream"] = stream
    return packets, out


def case_rows(clock: Clock, impls: dict, ceiling: dict, shape: str, batch: int, bits: int, chunk: int | None) -> list[dict]:
    dim, k = SHAPES[shape]
    soft = torch.randn(batch, k, dim, device=clock.device, dtype=torch.bfloat16)
    made = {label: calls(impl, soft, bits, chunk) for label, impl in impls.items()}
    rows = []
    for op in made["current"][1]:
        ms = clock.interleaved({label: fns[op] for label, (_, fns) in made.items()})
        for label, (packets, fns) in made.items():
            nbytes = sum(len(p) for p in packets)
            row = {"shape": shape, "batch": batch, "K": k, "dim": dim, "bits": bits, "chunk_tokens": chunk,
                   "packets": len(packets), "packet_bytes": nbytes, "path": label, "op": op, "ms": round(ms[label], 4),
                   "GB_per_s": round(nbytes / ms[label] / 1e6, 3)}
            # the copy a packet cannot avoid: host->device for decode, device->host for encode (memcpy on the CPU)
            bound = ceiling.get("d2h_pinned_GB_per_s" if op == "encode" else "h2d_pinned_GB_per_s", ceiling["host_memcpy_GB_per_s"])
            row["fraction_of_copy_ceiling"] = round(row["GB_per_s"] / bound, 3)
            if op != "encode":
                row["dequantize_calls"] = dequantize_calls(fns[op])
            goal = GOALS_MS.get((shape, batch, bits, chunk))
            if goal is not None and op != "stream":
                row.update(goal_ms=goal, met=ms[label] <= goal)
            if label != "current":
                ours, theirs = made["current"][1][op](), fns[op]()
                row["identical_to_current"] = bool(ours == theirs if op == "encode" else torch.equal(ours, theirs))
            rows.append(row)
            print(f"{shape:8s} b{batch} INT{bits} chunk {str(chunk):4s} {label:8s} {op:6s} {ms[label]:8.3f} ms "
                  f"{row['GB_per_s']:7.2f} GB/s" + (f"  same={row['identical_to_current']}" if "identical_to_current" in row else ""),
                  flush=True)
    return rows


def translator_rows(clock: Clock, impls: dict) -> list[dict]:
    """The per-message weight check: translator_fingerprint, and decode with translator= vs fingerprint=."""
    device = clock.device
    rows = []
    presets = {"embedded": (TranslatorConfig.preset("embedded"), torch.float32),
               "high_capacity_8b": (TranslatorConfig.preset("high_capacity", source_dim=4096, target_dim=4096),
                                    torch.bfloat16 if device.type == "cuda" else torch.float32)}
    for name, (cfg, dtype) in presets.items():
        tr = BottleneckedGatedTranslator(cfg).to(device, dtype).eval().requires_grad_(False)
        weight_bytes = sum(t.numel() * t.element_size() for t in tr.state_dict().values())
        fp = wire.translator_fingerprint(tr)
        row = {"translator": name, "dtype": str(dtype).removeprefix("torch."), "weight_MB": round(weight_bytes / 1e6, 1)}
        # the cached path: weights unchanged since the last call
        ms = clock.interleaved({label: (lambda i=impl: i.translator_fingerprint(tr)) for label, impl in impls.items()})
        row.update({f"{label}_translator_fingerprint_ms": round(v, 3) for label, v in ms.items()})
        if name == "embedded":
            soft = torch.randn(1, cfg.num_soft_tokens, cfg.target_dim, device=device, dtype=torch.bfloat16)
            packets = current.encode_soft_tokens(soft, fp, 8, 32)
            fns = {}
            for label, impl in impls.items():
                fns[f"{label}_decode_translator_ms"] = lambda i=impl: i.decode(packets, translator=tr, dtype=torch.bfloat16, device=device)
                fns[f"{label}_decode_fingerprint_ms"] = lambda i=impl: i.decode(packets, fingerprint=fp, dtype=torch.bfloat16, device=device)
            row.update({key: round(v, 3) for key, v in clock.interleaved(fns).items()})
        rows.append(row)
        print(json.dumps(row), flush=True)
        del tr
    return rows


def profile(clock: Clock, impls: dict) -> str:
    """torch.profiler and cProfile of decode (and encode) at 8B, batch 8, INT8, one packet, per path."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    soft = torch.randn(8, 64, 4096, device=clock.device, dtype=torch.bfloat16)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if clock.device.type == "cuda" else [])
    text = []
    for label, impl in impls.items():
        _, fns = calls(impl, soft, 8, None)
        for op in ("decode", "encode"):
            fn, n = fns[op], 10
            for _ in range(3):
                fn()
            clock.sync()
            with torch_profile(activities=activities) as prof:
                for _ in range(n):
                    fn()
                clock.sync()
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=48)
            stats = cProfile.Profile()
            stats.enable()
            for _ in range(n):
                fn()
            clock.sync()
            stats.disable()
            s = io.StringIO()
            st = pstats.Stats(stats, stream=s)
            st.sort_stats("tottime").print_stats(12)
            text.append(f"===== {label} {op}, 8B b8 INT8, {n} calls: torch.profiler (self CPU) =====\n{table}\n"
                        f"----- cProfile: {st.total_calls / n:.0f} Python-level calls per {op} -----\n"
                        + s.getvalue().split("Ordered by")[-1])
    return "\n".join(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--baseline", default=None, help="git ref or checkout directory whose lw_runtime packets code runs beside this one")
    ap.add_argument("--out", default="results/runtime")
    ap.add_argument("--reps", type=int, default=None, help="timed calls per row (default 50 on CUDA, 15 on the CPU)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler + cProfile of the 8B batch-8 INT8 decode and encode")
    ap.add_argument("--skip-translators", action="store_true", help="skip the translator_fingerprint rows")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu")
    clock = Clock(device, args.reps or (50 if device.type == "cuda" else 15))
    if device.type == "cpu":
        torch.set_num_threads(1)  # CPU rows show host overhead; one thread keeps them steady on a shared host
    impls = {"current": current}
    if args.baseline:
        impls["baseline"] = load_baseline(args.baseline)
    t0 = time.time()
    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "commit": commit(), "baseline": args.baseline, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv), "torch": torch.__version__, "python": platform.python_version(),
        "crc32c": "google-crc32c (C)" if wire._NATIVE_CRC32C is not None else "numpy fallback",
        "torch_threads": torch.get_num_threads(), "reps": clock.reps,
        "timing": "median wall clock per call after 3 warm-up calls, synchronised after each call; paths interleaved",
    }
    print(json.dumps(meta), flush=True)
    results = {"meta": meta, "ceilings": ceilings(clock, wire.message_bytes(8, 64, 4096, 8)), "rows": []}
    print(json.dumps(results["ceilings"]), flush=True)
    for case in CASES:
        results["rows"] += case_rows(clock, impls, results["ceilings"], *case)
    if not args.skip_translators:
        results["translators"] = translator_rows(clock, impls)
    os.makedirs(args.out, exist_ok=True)
    if args.profile:
        text = profile(clock, impls)
        with open(os.path.join(args.out, "packets_profile.txt"), "w") as fh:
            fh.write(text)
        print(text, flush=True)
    meta["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(args.out, "packets.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"wrote {os.path.join(args.out, 'packets.json')}")


if __name__ == "__main__":
    main()
