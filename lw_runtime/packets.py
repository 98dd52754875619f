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
Left out: retransmission, multiple messages interleaved on one ``Decoder``, compression.
"""

from __future__ import annotations

import secrets

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
    ShapeError,
    TranslatorRequiredError,
    WireFormatError,
    _check_group,
    chunk_payload,
    decode_payload,
    encode_payload,
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


class Decoder:
    """Streaming receiver: ``feed(packet)`` returns that chunk's soft tokens (B, chunk_count, D).

    Chunks of one message may arrive in any order; ``result()`` returns the whole (B, K, D) message
    once every token has arrived. After a message is complete, a packet of another message starts
    the next one. ``dtype=None`` decodes into the dtype the sender's tensor had. ``target_rms``
    rescales every soft token to that RMS (the quantized path does it in the fused
    ``lw_kernels.dequantize_rms_match``). ``max_bytes`` caps the payload and the decoded message.
    """

    def __init__(self, *, translator=None, fingerprint: bytes | None = None, dtype: torch.dtype | None = None,
                 target_rms: float | None = None, device="cpu", max_bytes: int = DEFAULT_MAX_BYTES,
                 _single_message: bool = False):
        self.translator = translator
        if fingerprint is None and translator is not None:
            fingerprint = translator_fingerprint(translator)
        if fingerprint is not None and len(fingerprint) != FINGERPRINT_SIZE:
            raise ValueError(f"fingerprint must be {FINGERPRINT_SIZE} bytes")
        self.fingerprint = None if fingerprint is None else bytes(fingerprint)
        self.dtype, self.target_rms, self.device, self.max_bytes = dtype, target_rms, torch.device(device), max_bytes
        self._single_message = _single_message
        self._key = None
        self._buffer = None
        self._received = None
        self.messages_started = 0

    @property
    def done(self) -> bool:
        return self._received is not None and bool(self._received.all())

    @property
    def received_tokens(self) -> int:
        return 0 if self._received is None else int(self._received.sum())

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

    def _check_chunk(self, h: PacketHeader, out_dim: int, out_dtype: torch.dtype) -> bool:
        """True when the packet starts a new message; raises ChunkError when it cannot join the current one."""
        key = h.message_key()
        if self._key is None or (key != self._key and self.done and not self._single_message):
            size = h.batch * h.num_tokens * out_dim * max(out_dtype.itemsize, 4)  # fp32 intermediates
            if size > self.max_bytes:
                raise PacketTooLargeError(f"decoded message of {size} bytes is over the cap of {self.max_bytes}")
            return True
        if key != self._key:
            if self.done:
                raise ChunkError(f"packet of message {h.message_id:#010x} after message {self._key[0]:#010x} was complete; decode() reads one message")
            raise ChunkError(
                f"packet does not belong to message {self._key[0]:#010x} (message {h.message_id:#010x}, or different "
                f"shape/bits/fingerprint), which has {self.received_tokens} of {self._key[7]} tokens"
            )
        if self._received[h.chunk_start : h.chunk_start + h.chunk_count].any():
            raise ChunkError(f"chunk [{h.chunk_start}, {h.chunk_start + h.chunk_count}) overlaps tokens already received")
        return False

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
        if self.fingerprint is not None and h.fingerprint != self.fingerprint:
            raise FingerprintMismatchError(
                f"packet made for translator/target fingerprint {h.fingerprint.hex()}; this receiver holds {self.fingerprint.hex()}"
            )
        out_dim = self._out_dim(h)
        out_dtype = self.dtype if self.dtype is not None else OUT_DTYPES[h.out_dtype]
        new_message = self._check_chunk(h, out_dim, out_dtype)
        chunk = self._values(h, payload, out_dtype)
        if new_message:
            self._key = h.message_key()
            self._buffer = torch.empty(h.batch, h.num_tokens, out_dim, dtype=out_dtype, device=self.device)
            self._received = torch.zeros(h.num_tokens, dtype=torch.bool)
            self.messages_started += 1
        self._buffer[:, h.chunk_start : h.chunk_start + h.chunk_count] = chunk
        self._received[h.chunk_start : h.chunk_start + h.chunk_count] = True
        return chunk

    def result(self) -> torch.Tensor:
        """The whole (B, K, D) message; ChunkError while tokens are missing."""
        if self._received is None:
            raise ChunkError("no packet received")
        if not self.done:
            missing = (~self._received).nonzero().flatten().tolist()
            raise ChunkError(f"message incomplete: {len(missing)} of {len(self._received)} tokens missing (first: {missing[:8]})")
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
    """Packets of one message (any order; a single packet may be passed as bytes) -> (B, K, D) soft tokens.

    Bottleneck packets need ``translator``. Every malformed, corrupted, mismatched or incomplete
    input raises a ``WireFormatError`` subclass (see lw_runtime.wire).
    """
    if isinstance(packets, (bytes, bytearray, memoryview)):
        packets = [packets]
    try:
        packets = list(packets)
    except TypeError as exc:
        raise WireFormatError(f"packets must be bytes or an iterable of bytes, got {type(packets).__name__}") from exc
    if not packets:
        raise ChunkError("no packets to decode")
    decoder = Decoder(translator=translator, fingerprint=fingerprint, dtype=dtype, target_rms=target_rms,
                      device=device, max_bytes=max_bytes, _single_message=True)
    for packet in packets:
        decoder.feed(packet)
    return decoder.result()
