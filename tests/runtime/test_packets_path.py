"""The receiver's and sender's data path (issue 18 item 3): one staging copy and one dequantize per
message in ``decode`` whatever the chunking, checks on the payload's bits that raise what the torch
scans raised, packets sealed from pieces byte-identical to ``seal``, and the value scan skipped only
where the scales bound the values."""

import numpy as np
import pytest
import torch

import lw_kernels
from lw_runtime import packets as packets_module
from lw_runtime import wire
from lw_runtime.packets import Decoder, decode, encode_soft_tokens
from lw_runtime.wire import (
    CRC_SIZE,
    HEADER_SIZE,
    NegativeScaleError,
    NonFiniteScaleError,
    NonFiniteValueError,
    PacketHeader,
    check_payload,
    parse_packet,
    payload_arrays,
    seal,
    seal_body,
    seal_pieces,
)

FP = b"pathtest"


def soft(b=3, k=10, d=96, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, k, d, generator=g) * 2).to(dtype)


@pytest.fixture
def counted(monkeypatch):
    """Counts lw_kernels dequantize launches and host-to-device staging copies."""
    counts = {"dequantize": 0, "staged_copies": 0}
    for name in ("dequantize", "dequantize_rms_match"):
        real = getattr(lw_kernels, name)
        monkeypatch.setattr(lw_kernels, name, lambda *a, _real=real, **k: counts.__setitem__("dequantize", counts["dequantize"] + 1) or _real(*a, **k))
    real_to = packets_module._Staged.to
    monkeypatch.setattr(packets_module._Staged, "to", lambda self, *a: counts.__setitem__("staged_copies", counts["staged_copies"] + 1) or real_to(self, *a))
    return counts


@pytest.mark.parametrize("bits", [4, 6, 8])
@pytest.mark.parametrize("target_rms", [None, 0.5])
def test_decode_stages_a_chunked_message_once_and_dequantizes_it_in_one_launch(counted, bits, target_rms):
    x = soft()
    packets = encode_soft_tokens(x, FP, bits, 32, chunk_tokens=3)
    assert len(packets) == 4
    whole = decode(reversed(packets), fingerprint=FP, target_rms=target_rms)
    assert counted == {"dequantize": 1, "staged_copies": 1}
    streaming = Decoder(fingerprint=FP, target_rms=target_rms)
    for p in packets:
        streaming.feed(p)
    assert counted == {"dequantize": 5, "staged_copies": 5}  # the streaming Decoder: one of each per chunk
    assert torch.equal(whole, streaming.result())
    assert torch.equal(whole, decode(encode_soft_tokens(x, FP, bits, 32), fingerprint=FP, target_rms=target_rms))


@pytest.mark.parametrize("bits", [4, 8, 16])
@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_packets_sealed_from_pieces_equal_seal_of_the_joined_payload(bits, chunk, monkeypatch):
    x = soft(b=2, k=7, d=64, dtype=torch.bfloat16)
    for native in (True, False):
        if not native:
            monkeypatch.setattr(wire, "_NATIVE_CRC32C", None)
        for p in encode_soft_tokens(x, FP, bits, 32, chunk, message_id=9):
            h, payload = parse_packet(p)
            assert p == seal(h, bytes(payload))
    pieces = [b"head", np.arange(5, dtype=np.uint8), np.arange(3, dtype=np.uint16)]
    assert seal_pieces(pieces) == seal_body(b"".join(pieces))


def _scales_packet(values, bits=8):
    """A one-token packet of dim 2 x group 1 whose two fp16 scales are ``values``."""
    x = torch.ones(1, 1, 2)
    (p,) = encode_soft_tokens(x, FP, bits, 1, message_id=3)
    body = bytearray(p[:-CRC_SIZE])
    split = HEADER_SIZE + 2 * bits // 8
    body[split:] = torch.tensor(values, dtype=torch.float16).view(torch.uint8).numpy().tobytes()
    return seal_body(body)


@pytest.mark.parametrize("values,error,count", [
    ([float("nan"), 1.0], NonFiniteScaleError, 1), ([float("inf"), float("-inf")], NonFiniteScaleError, 2),
    ([-float("nan"), -0.5], NonFiniteScaleError, 1), ([-0.5, -1e-7], NegativeScaleError, 2),
])
def test_bad_scales_raise_the_scan_errors_with_their_counts(values, error, count):
    with pytest.raises(error, match=f"^{count} "):
        decode(_scales_packet(values))


def test_negative_zero_scales_decode_as_zero():
    out = decode(_scales_packet([-0.0, 0.25]))  # the codes of x = 1 are 127 steps of the scale
    assert out[0, 0, 0] == 0 and out[0, 0, 1] == 127 * 0.25


def test_check_payload_bounds_every_decoded_value():
    for bits in (4, 6, 8):
        x = soft(b=2, k=5, d=64, seed=bits) * 100
        (p,) = encode_soft_tokens(x, FP, bits, 32)
        h, payload = parse_packet(p)
        peak = check_payload(h, *payload_arrays(h, payload))
        got = decode(p).abs().max().item()
        assert got <= peak < 2 * got
    for dtype in (torch.float16, torch.bfloat16):
        x = soft(dtype=dtype)
        (p,) = encode_soft_tokens(x, FP, 16)
        h, payload = parse_packet(p)
        assert check_payload(h, *payload_arrays(h, payload)) == x.abs().max().item()


def test_values_the_scales_do_not_bound_are_scanned_and_pass_when_finite():
    """Scale 512: the bound 128 x 512 = 65536 is past fp16's 65504, so fp16 output is scanned; the
    largest code gives 127 x 512 = 65024, which fits. Scale 600 gives 76200, which does not."""
    for scale, fits in ((512, True), (600, False)):
        x = torch.zeros(1, 1, 32)
        x[0, 0, 0] = scale * 127
        x[0, 0, 1] = -scale * 3
        (p,) = encode_soft_tokens(x, FP, 8, 32)
        h, payload = parse_packet(p)
        assert check_payload(h, *payload_arrays(h, payload)) == 128 * scale > 65504
        if fits:
            assert decode(p, dtype=torch.float16)[0, 0, 0] == 65024
        else:
            with pytest.raises(NonFiniteValueError):
                decode(p, dtype=torch.float16)


def test_a_value_check_failure_in_decode_leaves_nothing_half_decoded():
    """decode checks the values once, at the end, for the whole message: an overflowing chunk among
    good ones raises, and the same packets decode in fp32."""
    x = soft(b=1, k=6, d=32)
    x[0, 4, 0] = 1e5
    packets = encode_soft_tokens(x, FP, 8, 32, chunk_tokens=2)
    with pytest.raises(NonFiniteValueError):
        decode(packets, dtype=torch.float16)
    assert torch.isfinite(decode(packets)).all()


def test_payload_arrays_are_views_of_the_packet():
    (p,) = encode_soft_tokens(soft(b=2, k=3, d=64), FP, 8, 32)
    h, payload = parse_packet(p)
    codes, scales = payload_arrays(h, payload)
    assert codes.shape == (2, 3, 64) and scales.shape == (2, 3, 2) and scales.dtype == np.uint16
    assert not codes.flags.owndata and not scales.flags.owndata
    assert isinstance(h, PacketHeader)


def _raised(fn, *args, **kwargs):
    with pytest.raises(wire.WireFormatError) as info:
        fn(*args, **kwargs)
    return type(info.value), str(info.value)


def test_every_bit_flip_raises_in_decode_and_feed_what_parse_packet_raises():
    """The receiver checks the CRC after queueing the copy and dequantize, yet reports each corrupted
    packet as parse_packet does: the ChecksumError (same message) unless the flip hit the framing."""
    (p,) = encode_soft_tokens(soft(b=2, k=3, d=64), FP, 8, 32)
    for i in range(len(p)):
        for bit in (0, 3, 7):
            flipped = bytearray(p)
            flipped[i] ^= 1 << bit
            expected = _raised(parse_packet, bytes(flipped))
            assert _raised(decode, bytes(flipped), fingerprint=FP) == expected
            assert _raised(Decoder(fingerprint=FP).feed, bytes(flipped)) == expected


@pytest.mark.parametrize("whole_message", [False, True])
def test_a_corrupted_chunk_changes_nothing_and_its_good_copy_then_decodes(whole_message):
    x = soft(b=2, k=7, d=96)
    packets = encode_soft_tokens(x, FP, 6, 32, chunk_tokens=3)
    decoder = Decoder(fingerprint=FP, _whole_message=whole_message)
    decoder.feed(packets[1])
    state = (decoder.received_tokens, decoder.ready_tokens, decoder.messages_started)
    bad = bytearray(packets[2])
    bad[HEADER_SIZE + 5] ^= 0x10  # a code byte: only the CRC can tell
    with pytest.raises(wire.ChecksumError):
        decoder.feed(bytes(bad))
    assert (decoder.received_tokens, decoder.ready_tokens, decoder.messages_started) == state
    for p in (packets[2], packets[0]):
        decoder.feed(p)
    assert torch.equal(decoder.result(), decode(packets, fingerprint=FP))


def test_a_corrupted_first_packet_starts_no_message():
    (p,) = encode_soft_tokens(soft(b=1, k=4, d=64), FP, 8, 32)
    bad = bytearray(p)
    bad[-CRC_SIZE - 1] ^= 0x01  # a scale byte
    decoder = Decoder(fingerprint=FP)
    with pytest.raises(wire.ChecksumError):
        decoder.feed(bytes(bad))
    assert decoder.messages_started == 0 and decoder.received_tokens == 0
    with pytest.raises(wire.ChunkError, match="no packet received"):
        decoder.result()


def test_decode_reports_a_packet_after_the_complete_message_before_the_value_check():
    """decode dequantizes when the last chunk arrives, but a failing value check is still raised at the
    end, after the packets: a packet past the complete message is reported first, as before."""
    x = soft(b=1, k=4, d=32)
    x[0, 1, 0] = 1e5
    (p,) = encode_soft_tokens(x, FP, 8, 32)
    with pytest.raises(NonFiniteValueError):
        decode([p], dtype=torch.float16)
    with pytest.raises(wire.ChunkError, match="was complete"):
        decode([p, encode_soft_tokens(x, FP, 8, 32, message_id=7)[0]], dtype=torch.float16)


@pytest.mark.parametrize("bits", [4, 6, 8, 16])
def test_staged_payloads_of_odd_sizes_decode_to_the_reference(bits):
    """Chunks of odd token counts land at odd offsets of the staging buffer (6-bit rows of 72 bytes,
    scales after padding); the decoded values equal lw_kernels' reference dequantize of the payload."""
    x = soft(b=3, k=11, d=96, seed=5)
    packets = encode_soft_tokens(x, FP, bits, 32, chunk_tokens=5)
    got = decode(packets[::-1], fingerprint=FP)
    (whole,) = encode_soft_tokens(x, FP, bits, 32)
    h, payload = parse_packet(whole)
    first, scales = payload_arrays(h, payload)
    if bits == 16:
        want = torch.from_numpy(first.copy()).view(torch.float16).float()
    else:
        want = lw_kernels.dequantize(torch.from_numpy(first.copy()), torch.from_numpy(scales.copy()).view(torch.float16), bits, 32, 96)
    assert torch.equal(got, want)


@pytest.mark.parametrize("bits", [4, 6, 8, 16])
def test_payloads_copied_in_by_torch_decode_as_those_copied_by_numpy(bits, monkeypatch):
    """Large chunks go into the staging buffer through torch (_TORCH_COPY_BYTES); with the threshold at 0
    every chunk does, at odd token counts and offsets, and decodes bit for bit as the numpy path does."""
    x = soft(b=3, k=11, d=96, seed=7)
    packets = encode_soft_tokens(x, FP, bits, 32, chunk_tokens=5)
    want = decode(packets, fingerprint=FP)
    monkeypatch.setattr(packets_module, "_TORCH_COPY_BYTES", 0)
    assert torch.equal(decode(packets[::-1], fingerprint=FP), want)
    decoder = Decoder(fingerprint=FP)
    pieces = [decoder.feed(p) for p in packets]
    assert torch.equal(torch.cat([piece for piece in pieces if piece is not None], dim=1), want)


def test_a_payload_over_the_threshold_takes_the_torch_copy_and_decodes_to_the_reference(monkeypatch):
    """An 8B-shaped message (batch 4, K 64, dim 4096, INT8: 1 MiB of codes) reaches _TORCH_COPY_BYTES and is
    copied in by torch once; the decoded values equal the reference dequantize."""
    calls = []
    real = packets_module._copy_in
    monkeypatch.setattr(packets_module, "_copy_in", lambda dst, src: (calls.append(src.nbytes), real(dst, src)))
    x = soft(b=4, k=64, d=4096, seed=3)
    (whole,) = encode_soft_tokens(x, FP, 8, 32)
    got = decode([whole], fingerprint=FP)
    h, payload = parse_packet(whole)
    first, scales = payload_arrays(h, payload)
    assert calls == [first.nbytes] and first.nbytes >= packets_module._TORCH_COPY_BYTES
    want = lw_kernels.dequantize(torch.from_numpy(first.copy()), torch.from_numpy(scales.copy()).view(torch.float16), 8, 32, 4096)
    assert torch.equal(got, want)


def test_the_decoder_computes_one_crc_per_packet_whether_the_packet_decodes_or_fails(monkeypatch):
    calls = []
    real = wire.crc32c
    monkeypatch.setattr(wire, "crc32c", lambda data: calls.append(len(data)) or real(data))
    packets = encode_soft_tokens(soft(), FP, 8, 32, chunk_tokens=3)
    decoder = Decoder(fingerprint=FP)
    for p in packets:
        decoder.feed(p)
    assert len(calls) == len(packets)
    calls.clear()
    with pytest.raises(wire.ChunkError):  # a repeated chunk fails after the framing: still one CRC, then its error
        decoder.feed(packets[0])
    assert len(calls) == 1
