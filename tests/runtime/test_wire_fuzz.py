"""Property-based wire tests: random shapes / bit widths / group sizes / chunkings round-trip within
the quantization bound, and random mutations of valid packets (bit flips, overwrites, truncations,
extensions, header rewrites resealed with a correct CRC, shuffled / dropped / repeated chunks)
only ever decode to a well-formed tensor or raise a WireFormatError subclass."""

import struct

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lw_runtime.packets import Decoder, decode, encode_soft_tokens
from lw_runtime.translator import BottleneckedGatedTranslator, TranslatorConfig
from lw_runtime.wire import CRC_SIZE, HEADER_FIELDS, WireFormatError, seal_body, translator_fingerprint

ROUND_TRIP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MUTATIONS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

torch.manual_seed(0)
TRANSLATOR = BottleneckedGatedTranslator(
    TranslatorConfig(source_dim=40, target_dim=64, num_soft_tokens=8, depth=1, num_heads=4, bottleneck_dim=32, dropout=0.0)
).eval()
FINGERPRINT = translator_fingerprint(TRANSLATOR)
VALID_GROUPS = {4: [2, 4, 8, 16, 32], 6: [4, 8, 16, 32], 8: [1, 3, 8, 32], 16: [0]}


def _messages():
    """A few valid messages: each bit width, chunked and whole, soft tokens and bottleneck latents."""
    g = torch.Generator().manual_seed(3)
    out = []
    for bits, chunk, bottleneck in [(4, None, False), (6, 3, False), (8, 2, True), (16, None, False), (16, 4, True), (8, 1, False)]:
        dim = 32 if bottleneck else 64
        x = torch.randn(2, 8, dim, generator=g)
        packets = encode_soft_tokens(x, FINGERPRINT, bits, 16, chunk_tokens=chunk, bottleneck=bottleneck)
        out.append(packets)
    return out


MESSAGES = _messages()


@st.composite
def message_shapes(draw):
    bits = draw(st.sampled_from([4, 6, 8, 16]))
    group_size = draw(st.sampled_from(VALID_GROUPS[bits]))
    dim = max(group_size, 1) * draw(st.integers(1, 4)) * (4 if bits == 16 else 1)
    batch, tokens = draw(st.integers(1, 3)), draw(st.integers(1, 9))
    chunk = draw(st.one_of(st.none(), st.integers(1, tokens)))
    return bits, group_size or 32, batch, tokens, dim, chunk


@ROUND_TRIP
@given(shape=message_shapes(), seed=st.integers(0, 2**31 - 1), log_scale=st.floats(-4, 4), shuffle=st.randoms())
def test_random_messages_round_trip_within_the_quantization_bound(shape, seed, log_scale, shuffle):
    bits, group_size, batch, tokens, dim, chunk = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, dim, generator=g) * (10.0**log_scale) * torch.rand(batch, tokens, 1, generator=g)
    packets = encode_soft_tokens(x, FINGERPRINT, bits, group_size, chunk_tokens=chunk)
    shuffle.shuffle(packets)
    y = decode(packets, fingerprint=FINGERPRINT)
    assert y.shape == x.shape
    if bits == 16:
        bound = x.abs() * 2**-11 + 6e-8  # fp16 rounding (subnormals: half the smallest step)
    else:
        qmax = 2 ** (bits - 1) - 1
        grouped = x.reshape(batch, tokens, dim // group_size, group_size)
        absmax = grouped.abs().amax(-1, keepdim=True)
        # half a step, the scale's fp16 rounding, and fp16 subnormal scales (absolute 2**-24 steps)
        bound = (0.5 * absmax / qmax * (1 + 2**-10) + absmax * 2**-10 + qmax * 2**-24).expand_as(grouped).reshape(x.shape)
    assert ((y - x).abs() <= bound).all()


@st.composite
def mutated_packet_lists(draw):
    packets = list(draw(st.sampled_from(MESSAGES)))
    kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "extend", "field", "field_garbage", "reorder"]))
    index = draw(st.integers(0, len(packets) - 1))
    p = bytearray(packets[index])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(0, len(p) - 1))
            p[pos] ^= 1 << draw(st.integers(0, 7))
    elif kind == "overwrite":
        pos = draw(st.integers(0, len(p) - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))
        p[pos : pos + len(chunk)] = chunk
        p = bytearray(seal_body(p[:-CRC_SIZE])) if draw(st.booleans()) else p
    elif kind == "truncate":
        p = p[: draw(st.integers(0, len(p) - 1))]
    elif kind == "extend":
        p += draw(st.binary(min_size=1, max_size=64))
    elif kind in ("field", "field_garbage"):
        name = draw(st.sampled_from([n for n in HEADER_FIELDS if n != "magic"]))
        offset, code = HEADER_FIELDS[name]
        size = struct.calcsize("<" + code)
        if kind == "field":
            extremes = [0, 1, 2, 3, 4, 6, 8, 16, 31, 32, 33, 64, 255, 2**15, 2**16 - 1, 2**31, 2**32 - 1]
            value = draw(st.sampled_from([v for v in extremes if v < 256**size] + [draw(st.integers(0, 256**size - 1))]))
            raw = value.to_bytes(size, "little")
        else:
            raw = draw(st.binary(min_size=size, max_size=size))
        p[offset : offset + size] = raw
        p = bytearray(seal_body(p[:-CRC_SIZE]))
    packets[index] = bytes(p)
    if kind == "reorder":
        packets = draw(st.lists(st.sampled_from(packets), min_size=0, max_size=len(packets) + 2))
    return packets


@MUTATIONS
@given(packets=mutated_packet_lists(), streaming=st.booleans())
def test_mutated_packets_only_raise_wire_format_errors(packets, streaming):
    try:
        if streaming:
            decoder = Decoder(translator=TRANSLATOR, max_bytes=1 << 20)
            chunks = [decoder.feed(p) for p in packets]
            out = decoder.result()
            assert all(torch.isfinite(c).all() for c in chunks)
        else:
            out = decode(packets, translator=TRANSLATOR, max_bytes=1 << 20)
    except WireFormatError:
        return
    assert out.dim() == 3 and out.shape[-1] == 64
    assert torch.isfinite(out).all()
