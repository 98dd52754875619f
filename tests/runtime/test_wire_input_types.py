"""What a receiver accepts as a packet, and the typed error for everything else (issue 20).

A packet is a flat, C-contiguous buffer of single bytes (docs/wire.md, "Receiver input"). Every other
object, even one whose bytes spell a valid packet (a strided or 2-D view of it), must raise
``PacketTypeError`` (a ``WireFormatError``) from every receiver entry point: ``decode`` (a packet
on its own or inside an iterable), ``Decoder.feed``, ``parse_packet`` and ``generate(packets=...)``,
and a rejected packet must leave a streaming ``Decoder`` unchanged.
"""

import array

import numpy as np
import pytest
import torch

from lw_runtime.packets import Decoder, decode, encode_soft_tokens
from lw_runtime.wire import PacketTypeError, WireFormatError, parse_packet

FP = b"\x11" * 8
X = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(0))
PACKET = encode_soft_tokens(X, FP, 8, 16)[0]
EXPECTED = decode(PACKET)
assert len(PACKET) % 2 == 0


def _released():
    view = memoryview(PACKET)
    view.release()
    return view


def _strided_copy_of_the_packet():
    doubled = bytes(b for byte in PACKET for b in (byte, 0))
    view = memoryview(doubled)[::2]
    assert bytes(view) == PACKET  # the bytes are right; the layout is not
    return view


BAD = {
    "strided memoryview": lambda: memoryview(PACKET + PACKET)[::2],
    "strided view of valid bytes": _strided_copy_of_the_packet,
    "2-D memoryview": lambda: memoryview(PACKET).cast("B", (2, len(PACKET) // 2)),
    "0-D memoryview": lambda: memoryview(PACKET[:1]).cast("B", ()),
    "memoryview of uint16": lambda: memoryview(PACKET).cast("H"),
    "memoryview of float32": lambda: memoryview(PACKET[:64]).cast("f"),
    "released memoryview": _released,
    "numpy float32": lambda: np.frombuffer(PACKET[:64], dtype=np.float32),
    "numpy int16": lambda: np.frombuffer(PACKET, dtype=np.int16),
    "numpy uint8 2-D": lambda: np.frombuffer(PACKET, dtype=np.uint8).reshape(2, -1),
    "numpy uint8 strided": lambda: np.frombuffer(PACKET + PACKET, dtype=np.uint8)[::2],
    "numpy object array": lambda: np.array([PACKET], dtype=object),
    "array.array of int": lambda: array.array("i", [1, 2, 3]),
    "torch uint8 tensor": lambda: torch.frombuffer(bytearray(PACKET), dtype=torch.uint8),
    "torch float tensor": lambda: torch.randn(20),
    "str": lambda: PACKET.decode("latin-1"),
    "int": lambda: 12345,
    "float": lambda: 1.5,
    "None": lambda: None,
    "list of ints": lambda: list(PACKET),
    "tuple of ints": lambda: tuple(PACKET[:8]),
    "dict": lambda: {"packet": PACKET},
    "object": lambda: object(),
}

GOOD = {
    "bytes": lambda: PACKET,
    "bytearray": lambda: bytearray(PACKET),
    "memoryview": lambda: memoryview(PACKET),
    "memoryview of bytearray": lambda: memoryview(bytearray(PACKET)),
    "contiguous memoryview slice": lambda: memoryview(b"junk" + PACKET + b"junk")[4:-4],
    "memoryview cast to char": lambda: memoryview(PACKET).cast("c"),
    "memoryview cast to signed byte": lambda: memoryview(PACKET).cast("b"),
    "numpy uint8": lambda: np.frombuffer(PACKET, dtype=np.uint8),
    "numpy int8": lambda: np.frombuffer(PACKET, dtype=np.int8).copy(),
    "array.array of bytes": lambda: array.array("B", PACKET),
}


def _entry_points():
    decoder = Decoder()
    return {
        "decode(x)": decode,
        "decode([x])": lambda x: decode([x]),
        "decode(iter([x]))": lambda x: decode(iter([x])),
        "Decoder().feed(x)": decoder.feed,
        "parse_packet(x)": parse_packet,
    }


ENTRY_NAMES = list(_entry_points())


@pytest.mark.parametrize("entry", ENTRY_NAMES)
@pytest.mark.parametrize("kind", BAD)
def test_every_non_packet_object_raises_a_packet_type_error(entry, kind):
    with pytest.raises(PacketTypeError) as info:
        _entry_points()[entry](BAD[kind]())
    assert isinstance(info.value, WireFormatError) and isinstance(info.value, TypeError)


@pytest.mark.parametrize("entry", ["decode(x)", "decode([x])", "Decoder().feed(x)"])
@pytest.mark.parametrize("kind", GOOD)
def test_every_flat_byte_buffer_decodes_like_bytes(entry, kind):
    out = _entry_points()[entry](GOOD[kind]())
    torch.testing.assert_close(out, EXPECTED, rtol=0, atol=0)


@pytest.mark.parametrize("kind", GOOD)
def test_parse_packet_reads_every_flat_byte_buffer(kind):
    header, payload = parse_packet(GOOD[kind]())
    assert header == parse_packet(PACKET)[0] and bytes(payload) == PACKET[64:-4]


@pytest.mark.parametrize("kind", BAD)
def test_a_rejected_object_leaves_the_streaming_decoder_unchanged(kind):
    chunks = encode_soft_tokens(X, FP, 8, 16, chunk_tokens=2)
    decoder = Decoder(fingerprint=FP)
    decoder.feed(chunks[0])
    with pytest.raises(PacketTypeError):
        decoder.feed(BAD[kind]())
    assert (decoder.received_tokens, decoder.ready_tokens, decoder.messages_started) == (2, 2, 1)
    decoder.feed(chunks[1])
    torch.testing.assert_close(decoder.result(), EXPECTED, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["strided memoryview", "2-D memoryview", "str", "int", "torch uint8 tensor",
                                  "numpy float32", "list of ints"])
def test_generate_raises_a_packet_type_error_for_non_packets(target, kind):
    from lw_runtime.generate import generate

    for runtime in ("static", "hf"):
        with pytest.raises(PacketTypeError):
            generate(target, packets=BAD[kind](), max_new_tokens=2, runtime=runtime)


@pytest.mark.parametrize("fingerprint", ["x" * 8, 12345678, b"short", np.zeros(2, dtype=np.float32)])
def test_a_receiver_configured_with_a_malformed_fingerprint_fails_at_construction(fingerprint):
    with pytest.raises(ValueError, match="fingerprint must be 8 bytes"):
        Decoder(fingerprint=fingerprint)
    with pytest.raises(ValueError, match="fingerprint must be 8 bytes"):
        decode(PACKET, fingerprint=fingerprint)


@pytest.mark.parametrize("max_bytes", [None, 0, -1, 1.5, True, "64"])
def test_a_receiver_configured_with_a_malformed_cap_fails_at_construction(max_bytes):
    with pytest.raises(ValueError, match="max_bytes must be a positive int"):
        Decoder(max_bytes=max_bytes)
    with pytest.raises(ValueError, match="max_bytes must be a positive int"):
        decode(PACKET, max_bytes=max_bytes)
