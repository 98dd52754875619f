"""Fuzz the LatentWire packet decoder: random mutations of valid packets for N seconds.

Every decode must either return finite soft tokens of the message's shape or raise a
WireFormatError subclass. The harness counts outcomes per error type and exits 1 if any other
exception (or a malformed output) appeared, printing the first few with the mutation that caused
them. Peak RSS is reported to show the receiver's cap (``--max-bytes``) holds.

Mutations: bit flips, byte overwrites (raw or resealed with a correct CRC), truncation, appended
bytes, header fields set to extreme or random values and resealed (so they pass the CRC and reach
the field checks), NaN/Inf/negative scales resealed, spliced packets, chunk lists shuffled,
dropped or repeated, a message declared as large as the cap allows with one chunk of data (the
slowest decode is reported: refusing it must not cost more than the cap), and packets handed over
in other containers (bytearray, numpy arrays, memoryviews strided, 2-D or of wider items, str,
tensors, ints), which must decode like bytes or raise PacketTypeError.

    python benchmarks/fuzz_wire.py --seconds 60 [--seed 0] [--out results/fuzz_wire.json]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import platform
import random
import resource
import struct
import sys
import time
import traceback

import numpy as np
import torch

from lw_runtime.packets import Decoder, decode, encode_soft_tokens
from lw_runtime.translator import BottleneckedGatedTranslator, TranslatorConfig
from train.provenance import commit
from lw_runtime.wire import CRC_SIZE, HEADER_FIELDS, HEADER_SIZE, WireFormatError, parse_packet, seal_body, translator_fingerprint

CONTAINERS = {
    "bytearray": bytearray,
    "memoryview": memoryview,
    "numpy_uint8": lambda p: np.frombuffer(p, dtype=np.uint8),
    "memoryview_strided": lambda p: memoryview(bytes(p) * 2)[::2],
    "memoryview_2d": lambda p: memoryview(bytes(p)).cast("B", (1, len(p))),
    "memoryview_uint16": lambda p: memoryview(bytes(p) + bytes(len(p) % 2)).cast("H"),
    "numpy_float32": lambda p: np.frombuffer(bytes(p) + bytes(-len(p) % 4), dtype=np.float32),
    "torch_uint8": lambda p: torch.frombuffer(bytearray(p), dtype=torch.uint8) if p else torch.zeros(0, dtype=torch.uint8),
    "str": lambda p: bytes(p).decode("latin-1"),
    "int": len,
    "list_of_ints": list,
}
EXTREMES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 255, 256, 2**15, 2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**32 - 1]


def build_corpus(seed: int):
    torch.manual_seed(seed)
    cfg = TranslatorConfig(source_dim=40, target_dim=64, num_soft_tokens=8, depth=1, num_heads=4, bottleneck_dim=32, dropout=0.0)
    translator = BottleneckedGatedTranslator(cfg).eval()
    fingerprint = translator_fingerprint(translator)
    corpus = []
    g = torch.Generator().manual_seed(seed)
    for bits in (4, 6, 8, 16):
        for chunk in (None, 1, 3):
            for bottleneck in (False, True):
                for dtype in (torch.float32, torch.bfloat16):
                    dim = 32 if bottleneck else 64
                    x = (torch.randn(2, 8, dim, generator=g) * 3).to(dtype)
                    corpus.append(encode_soft_tokens(x, fingerprint, bits, 16, chunk_tokens=chunk, bottleneck=bottleneck))
    return translator, corpus


def reseal(p: bytearray) -> bytearray:
    return bytearray(seal_body(p[:-CRC_SIZE])) if len(p) >= CRC_SIZE else p


def mutate(rng: random.Random, packets: list[bytes], corpus, max_bytes: int) -> tuple[str, list]:
    packets = list(packets)
    i = rng.randrange(len(packets))
    p = bytearray(packets[i])
    kind = rng.choice(["flip", "flip_header", "overwrite", "overwrite_resealed", "truncate", "extend",
                       "field", "field_random", "scale", "splice", "chunks", "declare_max", "container"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
    elif kind == "flip_header":
        p[rng.randrange(HEADER_SIZE)] ^= 1 << rng.randrange(8)
    elif kind in ("overwrite", "overwrite_resealed"):
        pos = rng.randrange(len(p))
        n = rng.randint(1, 32)
        p[pos : pos + n] = rng.randbytes(n)
        if kind == "overwrite_resealed":
            p = reseal(p)
    elif kind == "truncate":
        p = p[: rng.randrange(len(p))]
    elif kind == "extend":
        p += rng.randbytes(rng.randint(1, 128))
    elif kind in ("field", "field_random"):
        for _ in range(rng.randint(1, 3)):
            name = rng.choice([n for n in HEADER_FIELDS if n != "magic"])
            offset, code = HEADER_FIELDS[name]
            size = struct.calcsize("<" + code)
            if kind == "field" and code not in ("8s", "12s"):
                value = rng.choice([v for v in EXTREMES if v < 256**size])
                p[offset : offset + size] = value.to_bytes(size, "little")
            else:
                p[offset : offset + size] = rng.randbytes(size)
        p = reseal(p)
    elif kind == "scale":
        h, _ = parse_packet(bytes(p))
        if h.bits == 16:
            at = HEADER_SIZE + 2 * rng.randrange(h.payload_len // 2)
        else:
            scales_at = HEADER_SIZE + h.batch * h.chunk_count * h.dim * h.bits // 8
            at = scales_at + 2 * rng.randrange((h.payload_len - (scales_at - HEADER_SIZE)) // 2)
        value = rng.choice([float("nan"), float("inf"), float("-inf"), -1.0, -0.0, 65504.0, 0.0, 6e-8])
        p[at : at + 2] = struct.pack("<e", value)
        p = reseal(p)
    elif kind == "splice":
        other = rng.choice(rng.choice(corpus))
        cut = rng.randrange(len(p))
        p = reseal(p[:cut] + bytearray(other[rng.randrange(len(other)) :]))
    elif kind == "declare_max":  # as many tokens as the cap allows (fp32, the widest output), data for one chunk
        h, _ = parse_packet(bytes(p))
        offset, code = HEADER_FIELDS["num_tokens"]
        num_tokens = max(h.chunk_start + h.chunk_count, max_bytes // (4 * h.batch * max(h.dim, 64)))
        struct.pack_into("<" + code, p, offset, num_tokens)
        return kind, [bytes(reseal(p))]
    elif kind == "container":
        name = rng.choice(sorted(CONTAINERS))
        if rng.random() < 0.3:  # mutated bytes in the container too
            p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
        packets[i] = CONTAINERS[name](bytes(p))
        return f"container_{name}", packets if rng.random() < 0.8 else packets[i]
    packets[i] = bytes(p)
    if kind == "chunks":
        packets = [rng.choice(packets) for _ in range(rng.randint(0, len(packets) + 2))]
        if rng.random() < 0.3:
            packets += rng.choice(corpus)
    return kind, packets


def describe(packets) -> list[str]:
    """Header bytes of each packet, or the type of whatever was handed over instead."""
    if not isinstance(packets, list):
        return [type(packets).__name__]
    return [p[:HEADER_SIZE].hex() if isinstance(p, bytes) else type(p).__name__ for p in packets]


def run_once(rng, packets, translator, max_bytes):
    """Decode whole or streaming; returns None when the outcome is acceptable, else a description."""
    streaming = rng.random() < 0.5 and isinstance(packets, list)
    if streaming:
        decoder = Decoder(translator=translator if rng.random() < 0.8 else None, max_bytes=max_bytes)
        for p in packets:
            chunk = decoder.feed(p)
            if chunk.dim() != 3 or not torch.isfinite(chunk).all():
                return f"malformed chunk {tuple(chunk.shape)}"
        out = decoder.result()
    else:
        out = decode(packets, translator=translator, max_bytes=max_bytes)
    if out.dim() != 3 or out.shape[-1] != 64 or not torch.isfinite(out).all():
        return f"malformed output {tuple(out.shape)}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-bytes", type=int, default=1 << 20, help="receiver cap during fuzzing")
    ap.add_argument("--out", default=None, help="write the counts as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    translator, corpus = build_corpus(args.seed)
    for packets in corpus:  # sanity: the unmutated corpus decodes
        decode(packets, translator=translator)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = random.Random(args.seed)
    outcomes: collections.Counter = collections.Counter()
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures = []
    start = time.perf_counter()
    iterations = 0
    slowest = (0.0, "")
    while time.perf_counter() - start < args.seconds:
        kind, packets = mutate(rng, rng.choice(corpus), corpus, args.max_bytes)
        iterations += 1
        began = time.perf_counter()
        try:
            problem = run_once(rng, packets, translator, args.max_bytes)
            outcome = "decoded" if problem is None else "MALFORMED_OUTPUT"
            if problem is not None:
                failures.append((kind, problem, describe(packets)))
        except WireFormatError as exc:
            outcome = type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - the point of a fuzzer: anything else is a bug
            outcome = f"CRASH:{type(exc).__name__}"
            failures.append((kind, traceback.format_exc(), describe(packets)))
        slowest = max(slowest, (time.perf_counter() - began, kind))
        outcomes[outcome] += 1
        by_kind[kind][outcome] += 1
    elapsed = time.perf_counter() - start
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{iterations} mutated inputs in {elapsed:.1f} s ({iterations / elapsed:.0f}/s), seed {args.seed}, cap {args.max_bytes} bytes")
    for name, count in outcomes.most_common():
        print(f"  {name:28s} {count:8d}")
    print("by mutation:")
    for kind in sorted(by_kind):
        print(f"  {kind:20s} " + ", ".join(f"{n}={c}" for n, c in by_kind[kind].most_common()))
    print(f"peak RSS {rss_peak / 1024:.0f} MiB (after setup {rss_start / 1024:.0f} MiB); "
          f"slowest input {slowest[0] * 1e3:.1f} ms ({slowest[1]})")
    for kind, detail, headers in failures[:5]:
        print(f"--- failure after mutation {kind!r}:\n{detail}\nheaders: {headers}", file=sys.stderr)
    print("RESULT:", "FAIL" if failures else "PASS", f"({len(failures)} non-WireFormatError outcomes)")
    if args.out:
        record = dict(
            command=" ".join(sys.argv), date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
            commit=commit(), host=platform.node(), python=platform.python_version(), torch=torch.__version__,
            seconds=elapsed, iterations=iterations, outcomes=dict(outcomes),
            by_mutation={k: dict(v) for k, v in by_kind.items()}, failures=len(failures),
            peak_rss_mib=rss_peak / 1024, slowest_ms=slowest[0] * 1e3, slowest_mutation=slowest[1],
        )
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
