"""Sending soft tokens over the wire: ``encode`` (texts -> packets) and ``decode`` / ``Decoder`` (packets -> soft tokens).

Decisions:
- One message per ``encode`` call: the whole batch (B rows x K soft tokens) under one message id.
  ``chunk_tokens`` splits it along K; every chunk is a complete packet (own header and CRC) that
  ``Decoder.feed`` turns into soft tokens on arrival, in any order.
- The message is quantized once (per-group scales do not depend on the chunking), so chunked and
  whole messages decode to identical values.
- ``bottleneck=True`` sends the translator's bottleneck latents (``bottleneck_dim`` wide) instead of
  soft tokens; the receiver, which must hold the same translator, runs ``translator.project``
  (output projection + RMS matching). Fewer bytes whenever bottleneck_dim < target_dim.
- A receiver given a translator or a fingerprint rejects packets with any other fingerprint;
  given neither it checks none (a generic relay or inspector).
- A bad packet never changes a ``Decoder``'s state: every check runs before the chunk is written.
- A receiver holding a translator checks each message against the translator's weights as they are
  when the message's first packet arrives (``translator_fingerprint`` notices any edit), so packets
  made for weights since changed are refused rather than projected with the new ones.
- Memory follows ``max_bytes``, never the declared sizes alone: a ``Decoder`` holds the message
  (at most ``max_bytes``) and one byte per token of arrival mask (at most ``max_bytes / 4``), and
  finds missing or leading tokens by scanning that mask in place (numpy argmin/argmax, which
  allocate nothing), so a 70-byte packet declaring a 64 MiB message costs no more than the message.
Left out: retransmission, multiple messages interleaved on one ``Decoder``, compression.
"""

from __future__ import annotations

import operator
import secrets

import numpy as np
import torch

import lw_kernels

from .wire import (
    DEFAULT_MAX_BYTES,
    FINGERPRINT_SIZE,
    FLAG_BOTTLENECK,
    OUT_DTYPE_CODES,
    OUT_DTYPES,
    WIRE_BITS,
    ChunkError,
    FingerprintMismatchError,
    NonFiniteValueError,
    PacketHeader,
    PacketTooLargeError,
    PacketTypeError,
    ShapeError,
    TranslatorRequiredError,
    WireFormatError,
    _check_group,
    chunk_payload,
    decode_payload,
    encode_payload,
    is_bytes_like,
    packet_view,
    parse_packet,
    payload_bytes,
    seal,
    translator_fingerprint,
)

_RMS_EPS = 1e-6


# ----------------------------------------------------------------------------- sender
def encode_soft_tokens(
    soft_or_bottleneck: torch.Tensor,
    fingerprint: bytes,
    bits: int = 8,
    group_size: int = 32,
    chunk_tokens: int | None = None,
    bottleneck: bool = False,
    *,
    message_id: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[bytes]:
    """(B, K, D) soft tokens (or bottleneck latents with ``bottleneck=True``) -> packets of one message.

    ``bits`` 4/6/8 quantize with lw_kernels (group-wise fp16 scales); 16 sends raw values (bf16 if
    the tensor is bf16, fp16 otherwise). ``chunk_tokens`` splits along K. The receiver decodes into
    the tensor's dtype (fp32 for anything but fp32/fp16/bf16) unless it asks for another.
    Raises ValueError for bad arguments, ``ShapeError`` / ``NonFiniteValueError`` for a bad tensor and
    ``PacketTooLargeError`` for a packet a receiver with the same ``max_bytes`` would refuse.
    """
    x = soft_or_bottleneck
    if not torch.is_tensor(x) or x.dim() != 3 or not x.dtype.is_floating_point:
        raise ShapeError(f"expected a float (batch, K, dim) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    b, k, d = x.shape
    if min(b, k, d) < 1:
        raise ShapeError(f"empty tensor of shape {tuple(x.shape)}")
    if bits not in WIRE_BITS:
        raise ValueError(f"bits must be one of {WIRE_BITS}, got {bits}")
    if not isinstance(fingerprint, (bytes, bytearray)) or len(fingerprint) != FINGERPRINT_SIZE:
        raise ValueError(f"fingerprint must be {FINGERPRINT_SIZE} bytes (see translator_fingerprint)")
    if chunk_tokens is not None and chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if bits != 16:
        _check_group(d, bits, group_size)
    if not torch.isfinite(x).all():
        raise NonFiniteValueError(f"{int((~torch.isfinite(x)).sum())} NaN/Inf values in the tensor to send")
    if b * k * d * 4 > max_bytes:
        raise PacketTooLargeError(f"a {b}x{k}x{d} message decodes to {b * k * d * 4} bytes, over the cap of {max_bytes}")
    step = k if chunk_tokens is None else min(chunk_tokens, k)
    if payload_bytes(b, step, d, bits, group_size) > max_bytes:
        raise PacketTooLargeError(f"chunks of {step} tokens exceed the {max_bytes}-byte payload cap; lower chunk_tokens")
    message_id = secrets.randbits(32) if message_id is None else message_id
    codes, scales, raw_dtype = encode_payload(x, bits, group_size)
    out_dtype = OUT_DTYPE_CODES.get(x.dtype, 0)
    packets = []
    for start in range(0, k, step):
        count = min(step, k - start)
        payload = chunk_payload(codes, scales, start, count)
        header = PacketHeader(
            bits=bits, group_size=0 if bits == 16 else group_size, raw_dtype=raw_dtype, out_dtype=out_dtype,
            flags=FLAG_BOTTLENECK if bottleneck else 0, batch=b, num_tokens=k, dim=d, chunk_start=start,
            chunk_count=count, message_id=message_id, fingerprint=bytes(fingerprint), payload_len=len(payload),
        )
        packets.append(seal(header, payload))
    return packets


def encode(
    source,
    translator,
    texts: list[str],
    *,
    bits: int = 8,
    group_size: int = 32,
    chunk_tokens: int | None = None,
    bottleneck: bool = False,
    source_max_tokens: int = 512,
    message_id: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[bytes]:
    """Source model + translator + texts -> the packets of one message (all texts, one row each).

    The source layer is the translator's ``config.source_layer``.
    """
    from .source import encode_source

    states = encode_source(source, texts, layer=translator.config.source_layer, max_tokens=source_max_tokens)
    device = next(translator.parameters()).device
    with torch.inference_mode():
        soft, latents = translator(states.hidden.to(device), states.mask.to(device), return_bottleneck=True)
    return encode_soft_tokens(
        latents if bottleneck else soft, translator_fingerprint(translator), bits, group_size, chunk_tokens,
        bottleneck, message_id=message_id, max_bytes=max_bytes,
    )


# ----------------------------------------------------------------------------- receiver
def _rms_match(y: torch.Tensor, target_rms: float) -> torch.Tensor:
    yf = y.float()
    return yf * (target_rms / torch.sqrt(yf.pow(2).mean(-1, keepdim=True) + _RMS_EPS))


_MISSING_RANGES_SHOWN = 8


def _first(mask: np.ndarray, value: bool, start: int) -> int:
    """Index of the first element equal to ``value`` at or after ``start`` (``len(mask)`` if none).

    argmax/argmin of a bool array stop at the first True/False and allocate nothing.
    """
    if start >= len(mask):
        return len(mask)
    rest = mask[start:]
    i = int(rest.argmax() if value else rest.argmin())
    return start + i if bool(rest[i]) == value else len(mask)


def _missing_ranges(mask: np.ndarray, start: int, limit: int) -> list[tuple[int, int]]:
    """The first ``limit`` runs [begin, end) of False in ``mask`` at or after ``start``."""
    ranges, pos = [], start
    while len(ranges) < limit:
        begin = _first(mask, False, pos)
        if begin == len(mask):
            break
        pos = _first(mask, True, begin)
        ranges.append((begin, pos))
    return ranges


def iter_packets(packets):
    """One packet (any bytes-like object) or an iterable of packets -> an iterator of packets.

    ``PacketTypeError`` for str, numbers, None, torch tensors and other non-iterables; each packet
    is checked by ``parse_packet`` as it is read.
    """
    if is_bytes_like(packets):
        return iter([packets])
    if isinstance(packets, str) or torch.is_tensor(packets):
        raise PacketTypeError(f"packets must be a bytes-like packet or an iterable of them, got {type(packets).__name__}")
    try:
        return iter(packets)
    except TypeError:
        raise PacketTypeError(f"packets must be a bytes-like packet or an iterable of them, got {type(packets).__name__}") from None


class Decoder:
    """Streaming receiver: ``feed(packet)`` returns that chunk's soft tokens (B, chunk_count, D).

    Chunks of one message may arrive in any order; ``result()`` returns the whole (B, K, D) message
    once every token has arrived, and ``ready_tokens`` counts the leading tokens already usable.
    After a message is complete, a packet of another message starts the next one. ``dtype=None``
    decodes into the dtype the sender's tensor had. ``target_rms`` rescales every soft token to that
    RMS (the quantized path does it in the fused ``lw_kernels.dequantize_rms_match``). ``max_bytes``
    caps the payload and the decoded message; the arrival mask adds one byte per token.
    """

    def __init__(self, *, translator=None, fingerprint: bytes | None = None, dtype: torch.dtype | None = None,
                 target_rms: float | None = None, device="cpu", max_bytes: int = DEFAULT_MAX_BYTES,
                 _single_message: bool = False):
        if fingerprint is not None:
            try:
                fingerprint = bytes(packet_view(fingerprint))
            except PacketTypeError:
                fingerprint = None
            if fingerprint is None or len(fingerprint) != FINGERPRINT_SIZE:
                raise ValueError(f"fingerprint must be {FINGERPRINT_SIZE} bytes (see translator_fingerprint)")
        if isinstance(max_bytes, bool) or not hasattr(max_bytes, "__index__") or operator.index(max_bytes) < 1:
            raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
        max_bytes = operator.index(max_bytes)
        self.translator = translator
        self._given_fingerprint = fingerprint
        self.dtype, self.target_rms, self.device, self.max_bytes = dtype, target_rms, torch.device(device), max_bytes
        self._single_message = _single_message
        self._key = None
        self._message_fingerprint = None  # what the current message's first packet was checked against
        self._buffer = None
        self._received = None  # numpy bool per token of the current message
        self._received_count = 0
        self._ready = 0  # tokens [0, _ready) have all arrived
        self.messages_started = 0

    @property
    def fingerprint(self) -> bytes | None:
        """The fingerprint a new message must carry: the one given, else the translator's as its
        weights are now, else None (no check)."""
        if self._given_fingerprint is not None or self.translator is None:
            return self._given_fingerprint
        return translator_fingerprint(self.translator)

    @property
    def done(self) -> bool:
        return self._received is not None and self._received_count == len(self._received)

    @property
    def received_tokens(self) -> int:
        return self._received_count

    @property
    def ready_tokens(self) -> int:
        """How many leading tokens of the current message have arrived (chunks may come in any order)."""
        return self._ready

    def _out_dim(self, h: PacketHeader) -> int:
        if not h.bottleneck:
            if self.translator is not None and h.dim != self.translator.config.target_dim:
                raise ShapeError(f"packet carries {h.dim}-dim soft tokens; the translator's target is {self.translator.config.target_dim}-dim")
            return h.dim
        if self.translator is None:
            raise TranslatorRequiredError("packet carries bottleneck latents; decode it with the translator that made it")
        cfg = self.translator.config
        if h.dim != cfg.bottleneck_dim:
            raise ShapeError(f"packet carries {h.dim}-dim bottleneck latents; the translator's bottleneck is {cfg.bottleneck_dim}-dim")
        return cfg.target_dim

    def _starts_message(self, h: PacketHeader) -> bool:
        return self._key is None or (h.message_key() != self._key and self.done and not self._single_message)

    def _check_chunk(self, h: PacketHeader, starts: bool, out_dim: int, out_dtype: torch.dtype) -> None:
        """Raise PacketTooLargeError for a new message over the cap, ChunkError for a chunk that cannot join the current one."""
        if starts:
            size = h.batch * h.num_tokens * out_dim * max(out_dtype.itemsize, 4)  # fp32 intermediates
            if size > self.max_bytes:
                raise PacketTooLargeError(f"decoded message of {size} bytes is over the cap of {self.max_bytes}")
            return
        if h.message_key() != self._key:
            if self.done:
                raise ChunkError(f"packet of message {h.message_id:#010x} after message {self._key[0]:#010x} was complete; decode() reads one message")
            raise ChunkError(
                f"packet does not belong to message {self._key[0]:#010x} (message {h.message_id:#010x}, or different "
                f"shape/bits/fingerprint), which has {self.received_tokens} of {self._key[7]} tokens"
            )
        if self._received[h.chunk_start : h.chunk_start + h.chunk_count].any():
            raise ChunkError(f"chunk [{h.chunk_start}, {h.chunk_start + h.chunk_count}) overlaps tokens already received")

    def _values(self, h: PacketHeader, payload, out_dtype: torch.dtype) -> torch.Tensor:
        first, scales = decode_payload(h, payload)
        rms_on_wire = self.target_rms if not h.bottleneck else None
        if scales is None:
            y = first.to(self.device)
            y = _rms_match(y, rms_on_wire) if rms_on_wire is not None else y.float()
        else:
            codes, scales = first.to(self.device), scales.to(self.device)
            if rms_on_wire is not None:
                y = lw_kernels.dequantize_rms_match(codes, scales, h.bits, h.group_size, float(rms_on_wire), h.dim, torch.float32)
            else:
                y = lw_kernels.dequantize(codes, scales, h.bits, h.group_size, h.dim, torch.float32)
        if h.bottleneck:
            weight = next(self.translator.parameters())
            with torch.inference_mode():
                y = self.translator.project(y.to(weight.device, weight.dtype)).to(self.device)
            if self.target_rms is not None:
                y = _rms_match(y, self.target_rms)
        out = y.to(out_dtype)
        # Valid scales and values can still overflow: into fp16 (|value| > 65504), or through project.
        if not torch.isfinite(out).all():
            raise NonFiniteValueError(f"decoded values are not finite in {out_dtype} (overflow in the payload's range or in project)")
        return out

    def feed(self, packet) -> torch.Tensor:
        """Check and decode one packet; returns its tokens (B, chunk_count, D) and keeps them for ``result``."""
        h, payload = parse_packet(packet, self.max_bytes)
        starts = self._starts_message(h)
        expected = self.fingerprint if starts else self._message_fingerprint
        if expected is not None and h.fingerprint != expected:
            raise FingerprintMismatchError(
                f"packet made for translator/target fingerprint {h.fingerprint.hex()}; this receiver holds {expected.hex()}"
            )
        out_dim = self._out_dim(h)
        out_dtype = self.dtype if self.dtype is not None else OUT_DTYPES[h.out_dtype]
        self._check_chunk(h, starts, out_dim, out_dtype)
        chunk = self._values(h, payload, out_dtype)
        if starts:
            self._key, self._message_fingerprint = h.message_key(), expected
            self._buffer = torch.empty(h.batch, h.num_tokens, out_dim, dtype=out_dtype, device=self.device)
            self._received = np.zeros(h.num_tokens, dtype=bool)
            self._received_count = self._ready = 0
            self.messages_started += 1
        end = h.chunk_start + h.chunk_count
        self._buffer[:, h.chunk_start : end] = chunk
        self._received[h.chunk_start : end] = True
        self._received_count += h.chunk_count
        if h.chunk_start == self._ready:
            self._ready = _first(self._received, False, end)
        return chunk

    def result(self) -> torch.Tensor:
        """The whole (B, K, D) message; ChunkError while tokens are missing."""
        if self._received is None:
            raise ChunkError("no packet received")
        if not self.done:
            total = len(self._received)
            ranges = _missing_ranges(self._received, self._ready, _MISSING_RANGES_SHOWN)
            shown = ", ".join(f"[{a}, {b})" for a, b in ranges)
            more = ", ..." if _first(self._received, False, ranges[-1][1]) < total else ""
            raise ChunkError(f"message incomplete: {total - self._received_count} of {total} tokens missing (tokens {shown}{more})")
        return self._buffer


def decode(
    packets,
    *,
    translator=None,
    fingerprint: bytes | None = None,
    dtype: torch.dtype | None = None,
    target_rms: float | None = None,
    device="cpu",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> torch.Tensor:
    """Packets of one message (any order; a single packet may be passed on its own) -> (B, K, D) soft tokens.

    Bottleneck packets need ``translator``. Every malformed, corrupted, mismatched or incomplete
    input, and every object that is not a packet or an iterable of packets, raises a
    ``WireFormatError`` subclass (see lw_runtime.wire). Packets are decoded as the iterable yields them.
    """
    packets = iter_packets(packets)
    decoder = Decoder(translator=translator, fingerprint=fingerprint, dtype=dtype, target_rms=target_rms,
                      device=device, max_bytes=max_bytes, _single_message=True)
    fed = False
    for packet in packets:
        decoder.feed(packet)
        fed = True
    if not fed:
        raise ChunkError("no packets to decode")
    return decoder.result()
