"""The receiver's memory follows its cap, not the sizes a packet declares (issue 20).

A well-sealed packet of a few dozen bytes may declare a message of exactly ``max_bytes``. Decoding
it (whole, streaming, or through generate) must raise a typed error after allocating no more than
the documented ceiling: the message buffer (at most ``max_bytes``) plus one byte per token of
arrival mask. Peak RSS is measured in a fresh interpreter (every allocator counts, torch's too);
tracemalloc in-process catches Python-level bookkeeping (lists of token indices) on any platform.
"""

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest
import torch

from lw_runtime.packets import Decoder, decode
from lw_runtime.wire import DEFAULT_MAX_BYTES, ChunkError, PacketHeader, seal

REPO = Path(__file__).resolve().parents[2]
CAP = DEFAULT_MAX_BYTES
CEILING = CAP + CAP // 4  # message buffer + arrival mask (one byte per token, at most cap / 4 tokens)


def declared_max_packet(bits=16, dim=1, chunk_start=0, chunk_count=1, cap=CAP, message_id=7):
    """A valid one-chunk packet of a message that decodes to exactly ``cap`` bytes (fp32), batch 1."""
    group = 0 if bits == 16 else dim
    num_tokens = cap // (4 * dim)
    if bits == 16:
        payload = torch.full((chunk_count, dim), 0.25, dtype=torch.float16).view(torch.uint8).numpy().tobytes()
    else:  # code 2**(bits-1) + 1 everywhere (value = one scale step), fp16 scale 0.01 per token
        assert bits == 8
        payload = bytes([129]) * (chunk_count * dim) + torch.full((chunk_count,), 0.01, dtype=torch.float16).view(torch.uint8).numpy().tobytes()
    header = PacketHeader(bits=bits, group_size=group, raw_dtype=1 if bits == 16 else 0, out_dtype=0,
                          flags=0, batch=1, num_tokens=num_tokens, dim=dim,
                          chunk_start=chunk_start, chunk_count=chunk_count, message_id=message_id,
                          fingerprint=b"\0" * 8, payload_len=len(payload))
    return seal(header, payload)


SCENARIOS = textwrap.dedent(
    """
    import json, re, sys, time
    from lw_runtime.packets import Decoder, decode
    from lw_runtime.wire import ChunkError, WireFormatError
    sys.path.insert(0, sys.argv[1])
    from test_packets_memory import declared_max_packet

    def status(field):
        return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

    K = 2**24  # tokens of the 16-bit, dim-1 maximum message
    def scenario(name):
        if name == "decode_head":
            decode(declared_max_packet())
        elif name == "decode_tail":
            decode([declared_max_packet(chunk_start=K - 1)])
        elif name == "decode_8bit":
            decode(declared_max_packet(bits=8, dim=32))
        elif name == "decode_spread_chunks":
            decode(declared_max_packet(chunk_start=i * (K // 20)) for i in range(20))
        elif name == "decoder_feed_result":
            d = Decoder()
            d.feed(declared_max_packet(chunk_start=K // 2))
            assert (d.done, d.received_tokens, d.ready_tokens) == (False, 1, 0)
            d.result()
        else:
            raise AssertionError(name)

    for warm in ("decode_head", "decoder_feed_result"):  # imports and first-call caches
        try:
            scenario(warm)
        except ChunkError:
            pass
    out = {}
    for name in sys.argv[2:]:
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
        before, start = status("VmRSS"), time.perf_counter()
        try:
            scenario(name)
            error = None
        except WireFormatError as exc:
            error = type(exc).__name__
        out[name] = dict(growth=status("VmHWM") - before, seconds=time.perf_counter() - start, error=error)
    print(json.dumps(out))
    """
)
NAMES = ["decode_head", "decode_tail", "decode_8bit", "decode_spread_chunks", "decoder_feed_result"]


@pytest.fixture(scope="module")
def peak_rss_growth():
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("peak RSS reset needs Linux /proc/self/clear_refs")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", SCENARIOS, str(Path(__file__).parent), *NAMES], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", NAMES)
def test_a_tiny_packet_declaring_the_maximum_message_costs_at_most_the_cap_in_peak_rss(peak_rss_growth, name):
    got = peak_rss_growth[name]
    assert got["error"] == "ChunkError", got  # every scenario leaves tokens missing
    assert got["growth"] <= CEILING, f"{name}: peak RSS grew {got['growth'] / 2**20:.0f} MiB for a cap of {CAP >> 20} MiB"
    assert got["seconds"] < 0.5, f"{name}: {got['seconds']:.2f} s to refuse a packet of a few dozen bytes"


def traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _expect_chunk_error(fn):
    def run():
        with pytest.raises(ChunkError, match="incomplete"):
            fn()
    return run


K = CAP // 4


def _streaming_result():
    d = Decoder()
    d.feed(declared_max_packet(chunk_start=3))
    d.feed(declared_max_packet(chunk_start=K - 2))
    assert d.ready_tokens == 0 and not d.done and d.received_tokens == 2
    d.result()


ENTRY_POINTS = {  # name: (call, tokens the message declares)
    "decode_bytes": (lambda: decode(declared_max_packet()), K),
    "decode_generator": (lambda: decode(declared_max_packet(chunk_start=i * 1000) for i in range(50)), K),
    "decode_last_token": (lambda: decode([declared_max_packet(chunk_start=K - 1)]), K),
    "decode_8bit": (lambda: decode(declared_max_packet(bits=8, dim=32)), K // 32),
    "decoder_streaming": (_streaming_result, K),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_incomplete_maximum_message_keeps_python_bookkeeping_within_the_mask(entry):
    """tracemalloc sees Python objects and numpy arrays (not torch's buffers): the arrival mask, one
    byte per token, is the only sizeable allocation allowed; a list of missing token indices costs
    ~40 bytes per token."""
    call, tokens = ENTRY_POINTS[entry]
    peak = traced_peak(_expect_chunk_error(call))
    assert peak <= tokens + (1 << 20), f"{entry}: tracemalloc peak {peak / 2**20:.1f} MiB; the mask is {tokens / 2**20:.1f} MiB"


def test_missing_tokens_are_reported_as_ranges_from_the_first_gap():
    d = Decoder()
    for start in (0, 1, 5, 9, K - 1):
        d.feed(declared_max_packet(chunk_start=start, message_id=3))
    assert d.ready_tokens == 2
    with pytest.raises(ChunkError) as info:
        d.result()
    message = str(info.value)
    assert f"{K - 5} of {K} tokens missing" in message
    assert message.endswith(f"(tokens [2, 5), [6, 9), [10, {K - 1}))")


def test_only_the_first_eight_missing_ranges_are_listed_and_more_is_marked():
    d = Decoder()
    for start in range(0, 40, 2):  # tokens 0, 2, ..., 38 of K: gaps [1, 2), [3, 4), ...
        d.feed(declared_max_packet(chunk_start=start, message_id=4))
    with pytest.raises(ChunkError) as info:
        d.result()
    assert str(info.value).endswith("(tokens [1, 2), [3, 4), [5, 6), [7, 8), [9, 10), [11, 12), [13, 14), [15, 16), ...)")


def test_ready_tokens_follow_the_contiguous_head_in_any_arrival_order():
    from lw_runtime.packets import encode_soft_tokens

    x = torch.randn(1, 12, 8)
    chunks = encode_soft_tokens(x, b"\0" * 8, 16, chunk_tokens=2)  # tokens [0,2) [2,4) ... [10,12)
    d = Decoder()
    heads = []
    for i in (1, 3, 0, 2, 5, 4):
        d.feed(chunks[i])
        heads.append(d.ready_tokens)
    assert heads == [0, 0, 4, 8, 8, 12]
    assert d.done


def test_generate_refuses_a_tiny_packet_declaring_a_huge_message_without_allocating_for_it(target):
    """Static runtime: the width is checked before a KV cache is sized for the declared message
    (it used to try a 25 GB allocation and fail with a bare RuntimeError); HF path: decode()."""
    from lw_runtime.generate import SoftTokenError, generate

    packet = declared_max_packet()
    with pytest.raises(SoftTokenError, match="width 1"):
        generate(target, packets=[packet], max_new_tokens=2, runtime="static")
    with pytest.raises(ChunkError, match="incomplete"):
        generate(target, packets=iter([packet]), max_new_tokens=2, runtime="hf")


def test_generate_refuses_a_message_longer_than_the_targets_context_before_sizing_a_cache(target, monkeypatch):
    """A 1-chunk packet of the right width declaring more tokens than the target's context: refused
    with a typed error before the static runtime sizes a KV cache for the declared length."""
    from lw_runtime.generate import generate
    from lw_runtime.kv_cache import CacheFullError
    from lw_runtime.runtime import StaticRuntime

    started = []
    original = StaticRuntime.start
    monkeypatch.setattr(StaticRuntime, "start", lambda self, *a, **k: started.append(a) or original(self, *a, **k))
    limit = target.model.config.get_text_config().max_position_embeddings
    packet = declared_max_packet(dim=target.hidden_size, cap=4 * target.hidden_size * (limit + 1))  # one token too many
    with pytest.raises(CacheFullError, match="beyond the target's context"):
        generate(target, packets=[packet], max_new_tokens=2, runtime="static")
    assert started == []  # no cache was sized for the declared message
