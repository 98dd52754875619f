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
- A bad packet never changes a ``Decoder``'s state: every check runs before the chunk is kept
  (``decode`` stages it before its CRC is checked; a bad one ends that decode).
- Host work per packet is one CRC pass, the header checks and one pass over the scales' bits
  (numpy); nothing loops over rows or tokens in Python. The payload is copied into one page-locked
  buffer (codes, then scales at a 16-byte boundary; by numpy, or by torch's threads from 1 MiB up:
  ``_TORCH_COPY_BYTES``) and moves in one host-to-device copy, decoded by one dequantize launch that writes the output dtype: ``decode``
  gathers a whole message's chunks into that buffer first (one copy and one launch per message),
  ``Decoder.feed`` does it per chunk (it must return each chunk). The CRC is checked last, after
  that copy and launch are queued, so that on a GPU it runs while they do (about 0.1 ms for a
  2.2 MB packet on the H100's host); nothing decoded is kept or returned before it passes, and a
  corrupted packet still raises ``ChecksumError`` ahead of any error about its header fields or payload
  (framing errors — magic, version, lengths — come first, as before). The sender mirrors it: quantize on
  the device, one device-to-host copy of codes, scales and the finiteness check, then one join per
  packet with the CRC computed over the pieces (``seal_pieces``).
- A receiver holding a translator checks each message against the translator's weights as they are
  when the message's first packet arrives (``translator_fingerprint`` notices any edit), so packets
  made for weights since changed are refused rather than projected with the new ones.
- Memory follows ``max_bytes``, never the declared sizes alone: a ``Decoder`` holds the message
  (at most ``max_bytes``) and one byte per token of arrival mask (at most ``max_bytes / 4``), and
  finds missing or leading tokens by scanning that mask in place (numpy argmin/argmax, which
  allocate nothing), so a 70-byte packet declaring a 64 MiB message costs no more than the message.
  ``decode`` holds the message's payload (at most half the cap; page-locked when decoding to a GPU)
  instead of the decoded message until the last chunk has arrived.
Left out: retransmission, multiple messages interleaved on one ``Decoder``, compression.
"""

from __future__ import annotations

import math
import operator
import secrets
import warnings

import numpy as np
import torch

import lw_kernels

from .wire import (
    DEFAULT_MAX_BYTES,
    FINGERPRINT_SIZE,
    FLAG_BOTTLENECK,
    OUT_DTYPE_CODES,
    OUT_DTYPES,
    RAW_DTYPES,
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
    aligned,
    check_payload,
    checksum_error,
    chunk_pieces,
    encode_payload,
    is_bytes_like,
    packet_view,
    packed_row_bytes,
    payload_arrays,
    payload_bytes,
    read_framing,
    read_header,
    seal_pieces,
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
    if b * k * d * 4 > max_bytes:
        raise PacketTooLargeError(f"a {b}x{k}x{d} message decodes to {b * k * d * 4} bytes, over the cap of {max_bytes}")
    step = k if chunk_tokens is None else min(chunk_tokens, k)
    if payload_bytes(b, step, d, bits, group_size) > max_bytes:
        raise PacketTooLargeError(f"chunks of {step} tokens exceed the {max_bytes}-byte payload cap; lower chunk_tokens")
    message_id = secrets.randbits(32) if message_id is None else message_id
    codes, scales, raw_dtype = encode_payload(x, bits, group_size)  # NonFiniteValueError for NaN/Inf
    out_dtype = OUT_DTYPE_CODES.get(x.dtype, 0)
    packets = []
    for start in range(0, k, step):
        count = min(step, k - start)
        pieces = chunk_pieces(codes, start, count) + (chunk_pieces(scales, start, count) if scales is not None else [])
        header = PacketHeader(
            bits=bits, group_size=0 if bits == 16 else group_size, raw_dtype=raw_dtype, out_dtype=out_dtype,
            flags=FLAG_BOTTLENECK if bottleneck else 0, batch=b, num_tokens=k, dim=d, chunk_start=start,
            chunk_count=count, message_id=message_id, fingerprint=bytes(fingerprint),
            payload_len=sum(piece.nbytes for piece in pieces),
        )
        packets.append(seal_pieces([header.pack(), *pieces]))
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


# A chunk's codes from this size up are copied into the staging buffer by torch, whose copy runs on its
# intra-op threads: on the H100 host (16 cores) a 2.2 MB batch-8 payload took 187 us through numpy and
# 11 us through torch, and the whole decode went from 1.00 to 0.54 ms (benchmarks/packets.py, 2026-12-07,
# results/runtime). Below it numpy's single-threaded copy was as fast or faster (278 KB: 8.4 vs 7-10 us).
_TORCH_COPY_BYTES = 1 << 20


def _copy_in(destination: torch.Tensor, source: np.ndarray) -> None:
    """destination (uint8, B x T x n) <- a packet's array (any dtype, B x T x n bytes), read in place.
    The packet is usually read-only ``bytes``, and torch warns that it cannot mark a tensor read-only:
    this one is only read, so that warning is silenced here (and only here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        view = torch.from_numpy(source.view(np.uint8))
    destination.copy_(view)


class _Staged:
    """A payload laid out for one host-to-device copy: the codes (B, T, row_bytes), or raw 16-bit
    values, then at a 16-byte boundary the fp16 scales (B, T, G), in one host buffer (page-locked
    when the receiver's device is a GPU). T is a whole message's tokens (``decode``: chunks are
    copied in as they arrive, then one copy and one dequantize serve the message) or one chunk's.
    Allocated by torch, not numpy: tracemalloc and the memory tests see only the arrival mask.
    """

    def __init__(self, h: PacketHeader, tokens: int, pinned: bool):
        b, d = h.batch, h.dim
        if h.bits == 16:
            self.first_shape, self.scales_shape = (b, tokens, d), None
            self.first_bytes = b * tokens * d * 2
        else:
            self.first_shape = (b, tokens, packed_row_bytes(d, h.bits))
            self.scales_shape = (b, tokens, d // h.group_size)
            self.first_bytes = b * tokens * self.first_shape[2]
        self.offset = aligned(self.first_bytes)
        scale_bytes = 0 if self.scales_shape is None else 2 * b * tokens * self.scales_shape[2]
        self.host = torch.empty(self.offset + scale_bytes, dtype=torch.uint8, pin_memory=pinned)
        self.first_raw = self.host[: self.first_bytes].view(b, tokens, -1)  # bytes per token, for _copy_in
        memory = self.host.numpy()
        first = memory[: self.first_bytes]
        self.first = (first if h.bits != 16 else first.view(np.uint16)).reshape(self.first_shape)
        self.scales = None if self.scales_shape is None else memory[self.offset :].view(np.uint16).reshape(self.scales_shape)

    def put(self, start: int, first: np.ndarray, scales: np.ndarray | None) -> None:
        """Copy one chunk's payload arrays (``payload_arrays``) in at token ``start``."""
        count = first.shape[1]
        if first.nbytes >= _TORCH_COPY_BYTES:
            _copy_in(self.first_raw[:, start : start + count], first)
        else:
            self.first[:, start : start + count] = first
        if scales is not None:
            self.scales[:, start : start + count] = scales

    def to(self, device: torch.device, raw_dtype: torch.dtype | None):
        """(codes uint8 or raw values in raw_dtype, fp16 scales or None) on ``device``, from one copy."""
        buffer = self.host if device.type == "cpu" else self.host.to(device, non_blocking=True)
        first = buffer[: self.first_bytes]
        first = (first if raw_dtype is None else first.view(raw_dtype)).view(self.first_shape)
        if self.scales_shape is None:
            return first, None
        return first, buffer[self.offset :].view(torch.float16).view(self.scales_shape)


def _surely_finite(h: PacketHeader, out_dtype: torch.dtype, peak: float, target_rms: float | None) -> bool:
    """True when the checked payload bounds every decoded value inside ``out_dtype``'s range, so the
    decoded values need no scan: |value| <= ``peak`` (check_payload; exact in fp32, whose products
    of a code and an fp16 scale are exact), and after RMS matching |value| <= |t| sqrt(D) (one entry
    holds at most all of its row's energy), with 1% for rounding. Bottleneck values pass through
    ``translator.project`` and are always scanned."""
    if h.bottleneck:
        return False
    if not out_dtype.is_floating_point:
        return True
    bound = peak if target_rms is None else abs(float(target_rms)) * math.sqrt(h.dim) * 1.01
    return bound <= torch.finfo(out_dtype).max  # False for NaN


class Decoder:
    """Streaming receiver: ``feed(packet)`` returns that chunk's soft tokens (B, chunk_count, D).

    Chunks of one message may arrive in any order; ``result()`` returns the whole (B, K, D) message
    once every token has arrived, and ``ready_tokens`` counts the leading tokens already usable.
    After a message is complete, a packet of another message starts the next one. ``dtype=None``
    decodes into the dtype the sender's tensor had. ``target_rms`` rescales every soft token to that
    RMS (the quantized path does it in the fused ``lw_kernels.dequantize_rms_match``). ``max_bytes``
    caps the payload and the decoded message; the arrival mask adds one byte per token.
    Each chunk costs one host-to-device copy and one dequantize launch (``decode`` instead gathers
    the whole message first and pays one of each per message).
    """

    def __init__(self, *, translator=None, fingerprint: bytes | None = None, dtype: torch.dtype | None = None,
                 target_rms: float | None = None, device="cpu", max_bytes: int = DEFAULT_MAX_BYTES,
                 _single_message: bool = False, _whole_message: bool = False):
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
        self._pinned = self.device.type == "cuda"
        self._single_message = _single_message or _whole_message
        # _whole_message (decode): chunks are checked and staged as they arrive, decoded once in result()
        self._whole_message = _whole_message
        self._key = None
        self._message_fingerprint = None  # what the current message's first packet was checked against
        self._buffer = None
        self._staged = None  # _whole_message: the message's payload until its last chunk arrives
        self._values_error = None  # _whole_message: what decoding the complete message raised, for result()
        self._peak = 0.0
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

    def _values(self, h: PacketHeader, staged: _Staged, peak: float, out_dtype: torch.dtype) -> torch.Tensor:
        """One host-to-device copy and one dequantize (fused with the RMS match) for everything staged."""
        first, scales = staged.to(self.device, RAW_DTYPES[h.raw_dtype] if h.bits == 16 else None)
        rms_on_wire = self.target_rms if not h.bottleneck else None
        dtype = torch.float32 if h.bottleneck else out_dtype  # the kernels write the output dtype directly
        if scales is None:
            y = (_rms_match(first, rms_on_wire) if rms_on_wire is not None else first).to(dtype)
        elif rms_on_wire is not None:
            y = lw_kernels.dequantize_rms_match(first, scales, h.bits, h.group_size, float(rms_on_wire), h.dim, dtype)
        else:
            y = lw_kernels.dequantize(first, scales, h.bits, h.group_size, h.dim, dtype)
        if h.bottleneck:
            weight = next(self.translator.parameters())
            with torch.inference_mode():
                y = self.translator.project(y.to(weight.device, weight.dtype)).to(self.device)
            if self.target_rms is not None:
                y = _rms_match(y, self.target_rms)
            y = y.to(out_dtype)
        # Valid scales and values can still overflow: into fp16 (|value| > 65504), or through project.
        # amax of |y| is NaN or Inf exactly when some value is (one reduction, no bool tensor).
        if not _surely_finite(h, out_dtype, peak, rms_on_wire) and not bool(torch.isfinite(y.abs().amax())):
            raise NonFiniteValueError(f"decoded values are not finite in {out_dtype} (overflow in the payload's range or in project)")
        return y

    def _start(self, h: PacketHeader, expected: bytes | None, out_dim: int, out_dtype: torch.dtype,
               staged: _Staged | None) -> None:
        self._key, self._message_fingerprint = h.message_key(), expected
        if self._whole_message:
            self._buffer, self._values_error = None, None
            self._staged = staged
            self._peak = 0.0
        else:
            self._buffer = torch.empty(h.batch, h.num_tokens, out_dim, dtype=out_dtype, device=self.device)
        self._received = np.zeros(h.num_tokens, dtype=bool)
        self._received_count = self._ready = 0
        self.messages_started += 1

    def feed(self, packet) -> torch.Tensor | None:
        """Check and decode one packet; returns its tokens (B, chunk_count, D) and keeps them for ``result``
        (inside ``decode`` it only checks and stages the chunk, returns None, and ``result`` returns the
        message, decoded when its last chunk arrived).

        The CRC is checked last, once the chunk's (or the message's) host-to-device copy and dequantize
        are queued, so that on a GPU it runs while they do; the decoded values are kept or returned only
        after it passes. Any error met before it is reported as ``parse_packet`` orders them: the
        packet's ``ChecksumError`` first when its CRC does not match.
        """
        data, fields = read_framing(packet, self.max_bytes)
        try:
            h, payload = read_header(data, fields, self.max_bytes)
            starts = self._starts_message(h)
            expected = self.fingerprint if starts else self._message_fingerprint
            if expected is not None and h.fingerprint != expected:
                raise FingerprintMismatchError(
                    f"packet made for translator/target fingerprint {h.fingerprint.hex()}; this receiver holds {expected.hex()}"
                )
            out_dim = self._out_dim(h)
            out_dtype = self.dtype if self.dtype is not None else OUT_DTYPES[h.out_dtype]
            self._check_chunk(h, starts, out_dim, out_dtype)
            first, scales = payload_arrays(h, payload)
            peak = check_payload(h, first, scales)
            values, values_error = None, None
            if self._whole_message:
                # Staged before the CRC passes, into tokens no chunk has filled yet (or a new message's
                # buffer): a bad packet raises, and decode() drops this Decoder.
                staged = _Staged(h, h.num_tokens, self._pinned) if starts else self._staged
                staged.put(h.chunk_start, first, scales)
                peak = max(peak, 0.0 if starts else self._peak)
                if (0 if starts else self._received_count) + h.chunk_count == h.num_tokens:  # the message is complete
                    try:
                        values = self._values(h, staged, peak, out_dtype)
                    except Exception as exc:  # result() raises it: a packet after the complete message is reported first
                        values_error = exc
            else:
                staged = _Staged(h, h.chunk_count, self._pinned)
                staged.put(0, first, scales)
                values = self._values(h, staged, peak, out_dtype)
        except Exception as exc:  # reported after the CRC check: a corrupted packet is a ChecksumError first
            failure = exc
        else:
            failure = None
        error = checksum_error(data)  # one CRC per packet, on either path
        if error is not None:
            raise error from None
        if failure is not None:
            try:
                raise failure
            finally:
                failure = None  # no frame -> traceback -> exception cycle holding the packet and staged buffers
        if starts:
            self._start(h, expected, out_dim, out_dtype, staged if self._whole_message else None)
        end = h.chunk_start + h.chunk_count
        if self._whole_message:
            self._peak = peak
            if values is not None or values_error is not None:
                self._buffer, self._values_error, self._staged = values, values_error, None
            values = None
        else:
            self._buffer[:, h.chunk_start : end] = values
        self._received[h.chunk_start : end] = True
        self._received_count += h.chunk_count
        if h.chunk_start == self._ready:
            self._ready = _first(self._received, False, end)
        return values

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
        if self._values_error is not None:
            raise self._values_error
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
    ``WireFormatError`` subclass (see lw_runtime.wire). Packets are checked as the iterable yields
    them and staged in one host buffer; once the message is complete it is copied to ``device`` and
    dequantized in one launch. A server whose translator is frozen passes
    ``fingerprint=translator_fingerprint(translator)`` (with ``translator=`` for bottleneck packets)
    and so skips reading the weights for every message (docs/wire.md, "Fingerprint").
    """
    packets = iter_packets(packets)
    decoder = Decoder(translator=translator, fingerprint=fingerprint, dtype=dtype, target_rms=target_rms,
                      device=device, max_bytes=max_bytes, _whole_message=True)
    fed = False
    for packet in packets:
        decoder.feed(packet)
        fed = True
    if not fed:
        raise ChunkError("no packets to decode")
    return decoder.result()
