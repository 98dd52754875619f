"""Wire format: round trips at every bit width, bottleneck latents, chunked streaming, and every
error a receiver raises, each triggered on purpose. Tiny translators only; no real models."""

import os
import re
import struct
from pathlib import Path

import pytest
import torch

from lw_runtime import packets as lw_packets
from lw_runtime.packets import Decoder, decode, encode, encode_soft_tokens
from lw_runtime.source import SourceStates
from lw_runtime.translator import BottleneckedGatedTranslator, TranslatorConfig
from lw_runtime.wire import (
    CRC_SIZE,
    HEADER_FIELDS,
    HEADER_SIZE,
    BadMagicError,
    ChecksumError,
    ChunkError,
    FingerprintMismatchError,
    HeaderFieldError,
    NegativeScaleError,
    NonFiniteScaleError,
    NonFiniteValueError,
    PacketHeader,
    PacketTooLargeError,
    ShapeError,
    TrailingBytesError,
    TranslatorRequiredError,
    TruncatedPacketError,
    UnsupportedVersionError,
    WireFormatError,
    crc32c,
    crc32c_numpy,
    crc32c_reference,
    message_bytes,
    parse_packet,
    seal_body,
    translator_fingerprint,
)

TINY = dict(source_dim=40, target_dim=64, num_soft_tokens=8, depth=1, num_heads=4, bottleneck_dim=32, dropout=0.0)
FRAMING = {"magic", "version", "header_len", "payload_len"}


def make_translator(seed=0, **overrides):
    torch.manual_seed(seed)
    tr = BottleneckedGatedTranslator(TranslatorConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():  # open the gates so the output depends on the source
        for p in tr.gate_parameters():
            p.fill_(0.5)
    return tr


@pytest.fixture(scope="module")
def translator():
    return make_translator()


@pytest.fixture(scope="module")
def fingerprint(translator):
    return translator_fingerprint(translator)


def soft_tokens(b=2, k=8, d=64, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, k, d, generator=g) * 0.8).to(dtype)


def rewrite(packet: bytes, field: str, value, reseal: bool = True) -> bytes:
    """Set one header field; reseal recomputes the CRC so the packet reaches the field checks."""
    offset, code = HEADER_FIELDS[field]
    body = bytearray(packet[:-CRC_SIZE])
    struct.pack_into("<" + code, body, offset, value)
    return seal_body(body) if reseal else bytes(body) + packet[-CRC_SIZE:]


def quant_bound(x, bits, group_size):
    """Per-value bound: half a step of the group's fp16 scale, plus the fp16 rounding of the scale."""
    qmax = 2 ** (bits - 1) - 1
    g = x.float().reshape(*x.shape[:-1], -1, group_size)
    absmax = g.abs().amax(-1, keepdim=True)
    bound = 0.5 * absmax / qmax * (1 + 2**-10) + absmax * 2**-10 + 1e-7
    return bound.expand_as(g).reshape(x.shape)


# ----------------------------------------------------------------------------- CRC and layout
@pytest.mark.parametrize("impl", ["default", "numpy"])
def test_crc32c_matches_the_standard_check_value_and_the_bytewise_reference(impl):
    """Both the default (google-crc32c's C library when installed) and the numpy fallback."""
    fn = crc32c if impl == "default" else crc32c_numpy
    assert fn(b"123456789") == 0xE3069283
    assert fn(b"") == 0
    assert fn(memoryview(bytearray(b"123456789"))) == 0xE3069283  # writable buffers too
    for n in (1, 4095, 4096, 4097, 70001, 1 << 18):
        data = os.urandom(n)
        assert fn(data) == crc32c_reference(data), n


def test_the_native_crc32c_is_used_where_it_is_installed(monkeypatch):
    """The README's install brings google-crc32c; where its C library is there, crc32c() must not
    fall back to numpy (the fallback is made to fail here) and must agree with the reference."""
    google_crc32c = pytest.importorskip("google_crc32c")
    if google_crc32c.implementation != "c":
        pytest.skip("google-crc32c without its C library: the numpy fallback is used (tested above)")
    from lw_runtime import wire

    def no_fallback(data):
        raise AssertionError("numpy fallback used although google-crc32c's C library is installed")

    monkeypatch.setattr(wire, "crc32c_numpy", no_fallback)
    data = os.urandom(300_001)
    assert wire.crc32c(data) == crc32c_reference(data)
    assert wire.crc32c(bytearray(b"123456789")) == 0xE3069283


def test_header_fields_table_matches_the_packed_header():
    h = PacketHeader(bits=6, group_size=12, raw_dtype=0, out_dtype=2, flags=1, batch=3, num_tokens=70000,
                     dim=96, chunk_start=5, chunk_count=7, message_id=0xDEADBEEF, fingerprint=b"abcdefgh",
                     payload_len=123456)
    raw = h.pack()
    assert len(raw) == HEADER_SIZE
    for name, (offset, code) in HEADER_FIELDS.items():
        (value,) = struct.unpack_from("<" + code, raw, offset)
        expected = {"magic": b"LWIR", "reserved_14": 0, "reserved_52": bytes(12)}.get(name, getattr(h, name, None))
        assert value == expected, name


def test_docs_bytes_table_matches_message_bytes():
    text = (Path(__file__).parents[2] / "docs" / "wire.md").read_text()
    rows = re.findall(r"\| [^|]*K=(\d+), D=(\d+), bottleneck (\d+) \| (\d+) \| (\d+) \| (\d+) \|", text)
    assert len(rows) == 8
    for k, d, db, bits, soft, latent in ([int(v) for v in r] for r in rows):
        assert message_bytes(1, k, d, bits) == soft
        assert message_bytes(1, k, db, bits) == latent


def test_packet_sizes_equal_message_bytes(fingerprint):
    x = soft_tokens(3, 7, 64)
    for bits in (4, 6, 8, 16):
        for chunk in (None, 1, 3):
            pk = encode_soft_tokens(x, fingerprint, bits, 16, chunk_tokens=chunk)
            assert sum(map(len, pk)) == message_bytes(3, 7, 64, bits, 16, chunk)


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("bits", [4, 6, 8])
@pytest.mark.parametrize("group_size", [16, 32])
def test_quantized_round_trip_within_half_a_step(fingerprint, bits, group_size):
    x = soft_tokens(3, 5, 64) * torch.linspace(0.01, 30, 64)  # groups of very different scales
    y = decode(encode_soft_tokens(x, fingerprint, bits, group_size), fingerprint=fingerprint)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert ((y - x).abs() <= quant_bound(x, bits, group_size)).all()
    assert (y - x).abs().max() > 0  # it really was quantized


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2**-11), (torch.float16, 0.0), (torch.bfloat16, 0.0)])
def test_16_bit_round_trip_is_a_cast(fingerprint, dtype, tol):
    x = soft_tokens(2, 6, 64, dtype=dtype)
    y = decode(encode_soft_tokens(x, fingerprint, 16), fingerprint=fingerprint)
    assert y.dtype == dtype  # decodes into the sender's dtype by default
    assert ((y.float() - x.float()).abs() <= x.float().abs() * tol).all()


def test_requested_dtype_and_device_are_honoured(fingerprint):
    x = soft_tokens()
    y = decode(encode_soft_tokens(x, fingerprint, 8), dtype=torch.bfloat16, device="cpu")
    assert y.dtype == torch.bfloat16 and y.device.type == "cpu"


def test_target_rms_rescales_every_token(fingerprint):
    x = soft_tokens()
    for bits in (4, 16):
        y = decode(encode_soft_tokens(x, fingerprint, bits), target_rms=0.37)
        rms = y.pow(2).mean(-1).sqrt()
        torch.testing.assert_close(rms, torch.full_like(rms, 0.37), rtol=1e-4, atol=1e-5)


def test_large_message_round_trip_uses_the_lane_crc(fingerprint):
    x = soft_tokens(1, 64, 1024)
    (packet,) = encode_soft_tokens(x, fingerprint, 8)
    assert len(packet) > 60_000  # well past the 4096-byte switch to the lane CRC
    y = decode(packet)
    assert ((y - x).abs() <= quant_bound(x, 8, 32)).all()


@pytest.mark.parametrize("bits", [8, 16])
def test_bottleneck_latents_decode_through_project(translator, fingerprint, bits):
    source = torch.randn(2, 11, 40) * 30
    with torch.no_grad():
        soft, latents = translator(source, return_bottleneck=True)
    latent_packets = encode_soft_tokens(latents, fingerprint, bits, bottleneck=True)
    soft_packets = encode_soft_tokens(soft, fingerprint, bits)
    assert sum(map(len, latent_packets)) < sum(map(len, soft_packets))
    y = decode(latent_packets, translator=translator)
    assert y.shape == soft.shape
    rel = (y - soft).norm() / soft.norm()
    assert rel < (0.02 if bits == 8 else 2e-3), rel
    rms = y.pow(2).mean(-1).sqrt()  # project RMS-matches
    torch.testing.assert_close(rms, torch.full_like(rms, translator.config.target_rms), rtol=1e-3, atol=1e-4)


def test_encode_runs_source_and_translator(monkeypatch, translator, fingerprint):
    calls = {}
    hidden = torch.randn(3, 9, 40) * 20
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[0, :3] = False

    def fake_encode_source(source, texts, layer, max_tokens):
        calls.update(texts=texts, layer=layer, max_tokens=max_tokens)
        return SourceStates(hidden, mask)

    monkeypatch.setattr("lw_runtime.source.encode_source", fake_encode_source)
    texts = ["a", "b", "c"]
    pk = encode(object(), translator, texts, bits=8, chunk_tokens=3, source_max_tokens=77)
    assert calls == dict(texts=texts, layer=translator.config.source_layer, max_tokens=77)
    assert len(pk) == 3  # 8 tokens in chunks of 3
    with torch.no_grad():
        expected = translator(hidden, mask)
    y = decode(pk, translator=translator)
    assert ((y - expected).abs() <= quant_bound(expected, 8, 32)).all()
    y_latent = decode(encode(object(), translator, texts, bottleneck=True), translator=translator)
    assert (y_latent - expected).norm() / expected.norm() < 0.02


# ----------------------------------------------------------------------------- chunks and streaming
def test_chunks_decode_on_arrival_and_equal_the_whole_message(fingerprint):
    x = soft_tokens(2, 10, 64)
    whole = decode(encode_soft_tokens(x, fingerprint, 6, message_id=1))
    chunks = encode_soft_tokens(x, fingerprint, 6, chunk_tokens=3, message_id=2)
    assert len(chunks) == 4
    decoder = Decoder(fingerprint=fingerprint)
    for i in (2, 0, 3, 1):  # out of order
        start = 3 * i
        part = decoder.feed(chunks[i])
        torch.testing.assert_close(part, whole[:, start : start + 3], rtol=0, atol=0)
        assert decoder.done == (i == 1)
    torch.testing.assert_close(decoder.result(), whole, rtol=0, atol=0)
    torch.testing.assert_close(decode(chunks[::-1]), whole, rtol=0, atol=0)


def test_streaming_decoder_starts_the_next_message_after_one_completes(fingerprint):
    a, b = soft_tokens(seed=1), soft_tokens(seed=2)
    decoder = Decoder()
    for p in encode_soft_tokens(a, fingerprint, 8, chunk_tokens=4):
        decoder.feed(p)
    first = decoder.result().clone()
    for p in encode_soft_tokens(b, fingerprint, 8, chunk_tokens=4):
        decoder.feed(p)
    assert decoder.messages_started == 2
    assert (decoder.result() - b).abs().max() < 0.05 and (first - a).abs().max() < 0.05


def test_missing_chunk_is_reported(fingerprint):
    chunks = encode_soft_tokens(soft_tokens(), fingerprint, 8, chunk_tokens=3)
    with pytest.raises(ChunkError, match="incomplete"):
        decode(chunks[:-1])


def test_duplicate_chunk_is_rejected(fingerprint):
    chunks = encode_soft_tokens(soft_tokens(), fingerprint, 8, chunk_tokens=3)
    with pytest.raises(ChunkError, match="overlaps"):
        decode([chunks[0], chunks[1], chunks[0], chunks[2]])


def test_chunks_of_two_messages_do_not_mix(fingerprint):
    a = encode_soft_tokens(soft_tokens(seed=1), fingerprint, 8, chunk_tokens=4, message_id=1)
    b = encode_soft_tokens(soft_tokens(seed=2), fingerprint, 8, chunk_tokens=4, message_id=2)
    with pytest.raises(ChunkError, match="does not belong"):
        decode([a[0], b[1]])
    with pytest.raises(ChunkError, match="one message"):
        decode(a + b)


def test_chunk_past_the_end_of_its_message_is_rejected(fingerprint):
    (p,) = encode_soft_tokens(soft_tokens(k=4), fingerprint, 8, chunk_tokens=4)
    with pytest.raises(ChunkError, match="chunk covers"):
        decode(rewrite(p, "chunk_start", 1))


def test_empty_packet_list_is_rejected():
    with pytest.raises(ChunkError):
        decode([])


def test_a_bad_packet_leaves_the_decoder_unchanged(fingerprint):
    chunks = encode_soft_tokens(soft_tokens(), fingerprint, 8, chunk_tokens=4)
    decoder = Decoder(fingerprint=fingerprint)
    decoder.feed(chunks[0])
    bad = bytearray(chunks[1])
    bad[HEADER_SIZE + 5] ^= 0x10
    with pytest.raises(ChecksumError):
        decoder.feed(bytes(bad))
    with pytest.raises(NonFiniteScaleError):
        decoder.feed(poison_scale(chunks[1], float("nan")))
    assert decoder.received_tokens == 4
    decoder.feed(chunks[1])
    assert decoder.done


# ----------------------------------------------------------------------------- each error, on purpose
@pytest.fixture(scope="module")
def packet(fingerprint):
    return encode_soft_tokens(soft_tokens(2, 3, 64), fingerprint, 8, 32)[0]


def poison_scale(packet, value, index=0):
    """Overwrite one fp16 scale (they follow the codes) and reseal."""
    h, _ = parse_packet(packet)
    scales_at = HEADER_SIZE + h.batch * h.chunk_count * h.dim * h.bits // 8
    body = bytearray(packet[:-CRC_SIZE])
    body[scales_at + 2 * index : scales_at + 2 * index + 2] = torch.tensor([value], dtype=torch.float16).view(torch.uint8).numpy().tobytes()
    return seal_body(body)


@pytest.mark.parametrize("cut", [0, 2, 4, 30, HEADER_SIZE, HEADER_SIZE + 4, -1])
def test_truncated_packets(packet, cut):
    with pytest.raises(TruncatedPacketError):
        decode(packet[:cut])


def test_trailing_bytes(packet):
    with pytest.raises(TrailingBytesError):
        decode(packet + b"\0")


def test_bad_magic(packet):
    with pytest.raises(BadMagicError, match="not a LatentWire packet"):
        decode(b"GGUF" + packet[4:])
    with pytest.raises(BadMagicError):
        decode(b"\x89PNG")


def test_unsupported_version(packet):
    with pytest.raises(UnsupportedVersionError, match="version 2"):
        decode(rewrite(packet, "version", 2))


@pytest.mark.parametrize(
    "field,value",
    [("header_len", 80), ("flags", 0x8000), ("bits", 5), ("bits", 32), ("out_dtype", 9), ("raw_dtype", 1),
     ("reserved_14", 1), ("reserved_52", b"\0" * 11 + b"\1")],
)
def test_bad_header_fields(packet, field, value):
    with pytest.raises(HeaderFieldError):
        decode(rewrite(packet, field, value))


def test_16_bit_header_checks(fingerprint):
    (p,) = encode_soft_tokens(soft_tokens(), fingerprint, 16)
    with pytest.raises(HeaderFieldError, match="element dtype"):
        decode(rewrite(p, "raw_dtype", 3))
    with pytest.raises(HeaderFieldError, match="group_size"):
        decode(rewrite(p, "group_size", 32))


@pytest.mark.parametrize(
    "field,value,match",
    [("batch", 0, "empty"), ("dim", 0, "empty"), ("chunk_count", 0, "empty"), ("dim", 48, "multiple"),
     ("dim", 128, "payload"), ("group_size", 0, "multiple"), ("batch", 3, "payload")],
)
def test_inconsistent_shapes(packet, field, value, match):
    with pytest.raises(ShapeError, match=match):
        decode(rewrite(packet, field, value))


def test_odd_group_sizes_for_packed_widths(fingerprint):
    (p4,) = encode_soft_tokens(soft_tokens(d=64), fingerprint, 4, 32)
    with pytest.raises(ShapeError):
        decode(rewrite(rewrite(p4, "dim", 63), "group_size", 63))
    (p6,) = encode_soft_tokens(soft_tokens(d=64), fingerprint, 6, 32)
    with pytest.raises(ShapeError, match="INT6"):
        decode(rewrite(rewrite(p6, "dim", 66), "group_size", 66))


def test_declared_payload_over_the_cap_is_refused_before_reading(packet):
    with pytest.raises(PacketTooLargeError):
        decode(rewrite(packet, "payload_len", 0xFFFFFFFF, reseal=False))
    with pytest.raises(PacketTooLargeError):
        decode(packet, max_bytes=len(packet) // 2)


@pytest.mark.parametrize("field", ["num_tokens", "batch", "dim"])
def test_absurd_message_shapes_are_refused_before_allocating(packet, field):
    forged = rewrite(packet, field, 0xFFFFFFF0)
    with pytest.raises(PacketTooLargeError):
        decode(forged)
    with pytest.raises(PacketTooLargeError):
        Decoder().feed(forged)


def test_sender_refuses_a_packet_the_receiver_would_refuse(fingerprint):
    x = soft_tokens(1, 16, 64)
    with pytest.raises(PacketTooLargeError):
        encode_soft_tokens(x, fingerprint, 8, max_bytes=1000)


def test_every_bit_flip_is_caught(packet):
    """Any flipped bit raises a WireFormatError; outside the framing fields it is the CRC that catches it."""
    framing = set()
    for name in FRAMING:
        offset, code = HEADER_FIELDS[name]
        framing.update(range(offset, offset + struct.calcsize("<" + code)))
    for i in range(len(packet)):
        for bit in range(8):
            flipped = bytearray(packet)
            flipped[i] ^= 1 << bit
            expected = WireFormatError if i in framing else ChecksumError
            with pytest.raises(expected):
                parse_packet(bytes(flipped))


@pytest.mark.parametrize("value,error", [(float("nan"), NonFiniteScaleError), (float("inf"), NonFiniteScaleError),
                                         (float("-inf"), NonFiniteScaleError), (-0.5, NegativeScaleError)])
def test_bad_scales(packet, value, error):
    with pytest.raises(error):
        decode(poison_scale(packet, value, index=3))


def test_non_finite_16_bit_values(fingerprint):
    (p,) = encode_soft_tokens(soft_tokens(), fingerprint, 16)
    body = bytearray(p[:-CRC_SIZE])
    body[HEADER_SIZE + 10 : HEADER_SIZE + 12] = torch.tensor([float("inf")], dtype=torch.float16).view(torch.uint8).numpy().tobytes()
    with pytest.raises(NonFiniteValueError):
        decode(seal_body(body))


def test_values_that_overflow_the_requested_dtype_are_rejected(packet):
    big = poison_scale(packet, 65504.0, index=0)  # the largest valid scale: codes decode past fp16's range
    assert torch.isfinite(decode(big)).all()  # fine in fp32
    with pytest.raises(NonFiniteValueError, match="not finite"):
        decode(big, dtype=torch.float16)


def test_sender_rejects_non_finite_and_fp16_overflow(fingerprint):
    x = soft_tokens()
    x[0, 1, 2] = float("nan")
    with pytest.raises(NonFiniteValueError):
        encode_soft_tokens(x, fingerprint, 8)
    with pytest.raises(NonFiniteValueError, match="overflow"):
        encode_soft_tokens(soft_tokens() * 1e5, fingerprint, 16)


def test_fingerprint_of_another_translator_or_target_is_rejected(translator, packet):
    other_weights = make_translator(seed=1)
    other_target = make_translator(target_model="some/other-target")
    assert translator_fingerprint(other_target) != translator_fingerprint(translator)
    for other in (other_weights, other_target):
        with pytest.raises(FingerprintMismatchError):
            decode(packet, translator=other)
    with pytest.raises(FingerprintMismatchError):
        decode(packet, fingerprint=b"\0" * 8)
    decode(packet, translator=translator)


def test_fingerprint_follows_weight_updates(translator):
    tr = make_translator()
    before = translator_fingerprint(tr)
    assert before == translator_fingerprint(translator)  # same seed, same config: same pair
    with torch.no_grad():
        tr.out_proj.weight[0, 0] += 1e-3
    assert translator_fingerprint(tr) != before


def test_dim_must_match_the_translator(translator, fingerprint):
    (p,) = encode_soft_tokens(soft_tokens(d=32), fingerprint, 8)
    with pytest.raises(ShapeError, match="target is 64-dim"):
        decode(p, translator=translator)
    (p,) = encode_soft_tokens(soft_tokens(d=64), fingerprint, 8, bottleneck=True)
    with pytest.raises(ShapeError, match="bottleneck is 32-dim"):
        decode(p, translator=translator)


def test_bottleneck_packet_needs_a_translator(fingerprint):
    (p,) = encode_soft_tokens(soft_tokens(d=32), fingerprint, 8, bottleneck=True)
    with pytest.raises(TranslatorRequiredError):
        decode(p, fingerprint=fingerprint)


def test_non_bytes_input_is_a_wire_error():
    with pytest.raises(WireFormatError):
        decode([12345])
    with pytest.raises(WireFormatError):
        decode(None)


def test_every_error_is_a_value_error():
    import lw_runtime.wire as wire

    errors = [v for v in vars(wire).values() if isinstance(v, type) and issubclass(v, wire.WireFormatError)]
    assert len(errors) >= 15
    assert all(issubclass(e, ValueError) for e in errors)
    assert lw_packets.WireFormatError is wire.WireFormatError


def test_top_level_exports_wire_format_error_but_not_its_subclasses():
    """Servers catch one ``lw_runtime.WireFormatError``; the faults it splits into stay in ``lw_runtime.wire``."""
    import lw_runtime
    import lw_runtime.wire as wire

    assert "WireFormatError" in lw_runtime.__all__ and lw_runtime.WireFormatError is wire.WireFormatError
    subclasses = [n for n, v in vars(wire).items()
                  if isinstance(v, type) and issubclass(v, wire.WireFormatError) and v is not wire.WireFormatError]
    assert len(subclasses) >= 14
    assert not set(subclasses) & set(lw_runtime.__all__)
    assert not [n for n in subclasses if hasattr(lw_runtime, n)]
