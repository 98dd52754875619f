"""The LatentWire packet format: header, payload packing, CRC32C, fingerprints and the errors a receiver raises.

A packet is ``header (64 bytes) || payload || CRC32C(header || payload) (4 bytes)``, all
little-endian; docs/wire.md is the specification and this module its reference implementation.

Decisions:
- A fixed 64-byte v1 header: every field at a fixed offset, reserved bytes must be zero, so any
  receiver can check a packet before touching its payload. A later version may grow the header
  (``header_len``); a v1 receiver rejects every version but 1.
- Checks run cheapest-and-framing first: magic, version, declared sizes against the cap and
  against the bytes actually there (nothing is allocated from a declared size before that),
  then the CRC, then the meaning of every field. So a flipped bit is reported as a checksum error
  unless it landed in the framing fields (magic, version, header length, payload length), which are
  reported by name.
- CRC32C (Castagnoli), not zlib's CRC-32: it is what storage and network stacks use (iSCSI, ext4,
  gRPC) and has hardware instructions. Computed by ``google-crc32c`` (Google's C library with
  SSE4.2/ARMv8 CRC instructions; a dependency) when its C implementation is present: 9.9 us for a
  278 KB packet on the dev CPU against 2.8 ms for the numpy fallback (~280x; results/runtime), which
  was most of the packet encode + decode time at 8B batch 8. Fallback, where it is missing or pure-Python: a 256-entry
  table in Python for short inputs, and for long ones the same table run over thousands of lanes at
  once in numpy, the lane CRCs joined with precomputed "append n zero bytes" operators (CRC
  linearity, as zlib's crc32_combine). Tests check both against a byte-at-a-time reference.
- The payload is the lw_kernels layout verbatim (packed codes of every row, then every row's fp16
  scales), or raw fp16/bf16 values at 16 bits: no re-packing between the kernels and the wire.
- A message is ``batch x num_tokens x dim``; a packet carries tokens ``[chunk_start, chunk_start +
  chunk_count)`` of every row, so each chunk decodes on its own, on arrival.
- The fingerprint names the translator (config + weights) and through its config the target:
  a packet made for another pair is rejected instead of decoded into plausible garbage. It is
  cached per translator under a key read from the weights' content on every call: torch's version
  counters miss writes through ``p.data`` or numpy views, so nothing short of the content can tell
  that weights changed. Host weights are keyed by CRC32C (hardware instructions: an eighth of the
  sha256 it saves, 2.3 vs 17 ms for the embedded translator's 30 MB on the dev CPU); weights on a
  GPU by exact integer row sums computed there (``_device_content_key``), since a CRC would copy
  every weight to the host on every message. Without google-crc32c's C library host weights are
  hashed in full on every call.
- The payload crosses between host and device as one buffer: ``encode_payload`` makes one
  device-to-host transfer with one wait per message, the receiver (packets.py) one host-to-device
  copy per message (per chunk when streaming), and payload checks read bit patterns with numpy
  (``check_payload``) rather than running torch CPU kernels over the scales.
- A packet is any flat, C-contiguous buffer of single bytes: ``bytes``, ``bytearray``, a
  ``memoryview`` or numpy array of ``uint8`` / ``int8`` (1-D, contiguous). Anything else, including
  strided or multi-dimensional views, wider dtypes, ``str`` and torch tensors, raises
  ``PacketTypeError`` (a ``WireFormatError`` and a ``TypeError``) before a byte is read.
Left out: compression beyond quantization, encryption/authentication (the CRC detects accidents,
not attackers), big-endian hosts.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import weakref
from dataclasses import asdict, dataclass, is_dataclass

import numpy as np
import torch

from lw_kernels import SUPPORTED_BITS, packed_row_bytes

MAGIC = b"LWIR"
VERSION = 1
HEADER_SIZE = 64
CRC_SIZE = 4
FINGERPRINT_SIZE = 8
FLAG_BOTTLENECK = 0x0001
KNOWN_FLAGS = FLAG_BOTTLENECK
WIRE_BITS = (*SUPPORTED_BITS, 16)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

# Header layout, little-endian; offsets are listed in docs/wire.md.
_HEADER = struct.Struct("<4sBBHHHBBHIIIIII8sI12s")
assert _HEADER.size == HEADER_SIZE
# name -> (offset, struct code) of every header field, for tools that inspect or rewrite packets.
HEADER_FIELDS = {
    "magic": (0, "4s"), "version": (4, "B"), "bits": (5, "B"), "header_len": (6, "H"), "flags": (8, "H"),
    "group_size": (10, "H"), "raw_dtype": (12, "B"), "out_dtype": (13, "B"), "reserved_14": (14, "H"),
    "batch": (16, "I"), "num_tokens": (20, "I"), "dim": (24, "I"), "chunk_start": (28, "I"),
    "chunk_count": (32, "I"), "message_id": (36, "I"), "fingerprint": (40, "8s"), "payload_len": (48, "I"),
    "reserved_52": (52, "12s"),
}

# dtype codes. RAW: element format of a 16-bit payload; OUT: the dtype the sender's tensor had,
# which the receiver decodes into unless told otherwise.
RAW_DTYPES = {1: torch.float16, 2: torch.bfloat16}
OUT_DTYPES = {0: torch.float32, 1: torch.float16, 2: torch.bfloat16}
OUT_DTYPE_CODES = {v: k for k, v in OUT_DTYPES.items()}
RAW_DTYPE_CODES = {v: k for k, v in RAW_DTYPES.items()}


# ----------------------------------------------------------------------------- errors
class WireFormatError(ValueError):
    """Base of every error a malformed, corrupted or mismatched packet raises."""


class PacketTypeError(WireFormatError, TypeError):
    """Not a packet-shaped object: a packet is a flat, C-contiguous buffer of single bytes."""


class TruncatedPacketError(WireFormatError):
    """Fewer bytes than the header (or the sizes it declares) say the packet holds."""


class TrailingBytesError(WireFormatError):
    """More bytes than the header declares: two packets glued together, or garbage after one."""


class BadMagicError(WireFormatError):
    """The packet does not start with b'LWIR': not a LatentWire packet."""


class UnsupportedVersionError(WireFormatError):
    """A format version this receiver does not read."""


class HeaderFieldError(WireFormatError):
    """A header field with a value the format does not allow (bits, dtype code, flags, reserved bytes)."""


class ShapeError(WireFormatError):
    """Shape fields that are zero, inconsistent with each other or with the payload length, or with the translator."""


class PacketTooLargeError(WireFormatError):
    """Declared payload or decoded message size over the receiver's cap (``max_bytes``)."""


class ChecksumError(WireFormatError):
    """The CRC32C of header + payload does not match the trailer: the packet was corrupted."""


class NonFiniteScaleError(WireFormatError):
    """A quantization scale that is NaN or Inf."""


class NegativeScaleError(WireFormatError):
    """A quantization scale below zero (senders only write absmax / qmax >= 0)."""


class NonFiniteValueError(WireFormatError):
    """A NaN or Inf value in a 16-bit payload (or in the tensor handed to the sender)."""


class FingerprintMismatchError(WireFormatError):
    """The packet was made for another translator / target pair."""


class ChunkError(WireFormatError):
    """Chunks that do not fit together: another message, overlapping tokens, or tokens missing at the end."""


class TranslatorRequiredError(WireFormatError):
    """A packet of bottleneck latents reached a receiver that has no translator to project them."""


# ----------------------------------------------------------------------------- CRC32C
_POLY = 0x82F63B78  # Castagnoli, reflected


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        c = byte
        for _ in range(8):
            c = (c >> 1) ^ (_POLY if c & 1 else 0)
        table.append(c)
    return table


_TABLE = _make_table()
_TABLE_NP = np.array(_TABLE, dtype=np.uint32)
_LANE_THRESHOLD = 4096


def _crc_register_py(register: int, data) -> int:
    """The CRC register after feeding `data` (no pre/post inversion)."""
    table = _TABLE
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


class _ZeroShift:
    """The linear map 'feed n zero bytes to the register', as 4 byte-indexed tables of 256 entries."""

    def __init__(self, basis: np.ndarray):  # basis[i] = image of the register 1 << i
        bits = (np.arange(256, dtype=np.uint32)[:, None] >> np.arange(8, dtype=np.uint32)) & 1
        self.tables = np.stack(
            [np.bitwise_xor.reduce(np.where(bits == 1, basis[8 * k : 8 * k + 8], 0), axis=1) for k in range(4)]
        ).astype(np.uint32)
        self.basis = basis

    def __call__(self, register):
        r = np.asarray(register, dtype=np.uint32)
        t = self.tables
        return t[0][r & 0xFF] ^ t[1][(r >> 8) & 0xFF] ^ t[2][(r >> 16) & 0xFF] ^ t[3][r >> 24]

    def squared(self) -> "_ZeroShift":
        return _ZeroShift(self(self.basis))


_SHIFTS: list[_ZeroShift] = []  # _SHIFTS[j] appends 2**j zero bytes


def _shift_pow2(j: int) -> _ZeroShift:
    if not _SHIFTS:
        one = np.array([_crc_register_py(1 << i, b"\0") for i in range(32)], dtype=np.uint32)
        _SHIFTS.append(_ZeroShift(one))
    while len(_SHIFTS) <= j:
        _SHIFTS.append(_SHIFTS[-1].squared())
    return _SHIFTS[j]


def _shift(register: int, num_bytes: int) -> int:
    j = 0
    while num_bytes:
        if num_bytes & 1:
            register = int(_shift_pow2(j)(register))
        num_bytes >>= 1
        j += 1
    return register


def _crc_register_lanes(data) -> int:
    """Register (initial value 0) after `data`, computed over many lanes in parallel.

    Leading zero bytes leave a zero register at zero, so the data is left-padded to whole lanes;
    lane registers are then joined pairwise: reg(A || B) = shift_|B|(reg(A)) ^ reg(B).
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    lane_log2 = min(12, max(6, (len(buf).bit_length() // 2)))
    lane = 1 << lane_log2
    pad = (-len(buf)) % lane
    if pad:
        buf = np.concatenate([np.zeros(pad, dtype=np.uint8), buf])
    columns = np.ascontiguousarray(buf.reshape(-1, lane).T)
    reg = np.zeros(columns.shape[1], dtype=np.uint32)
    table = _TABLE_NP
    for column in columns:
        reg = table[(reg ^ column) & 0xFF] ^ (reg >> 8)
    level = lane_log2
    while len(reg) > 1:
        if len(reg) % 2:
            reg = np.concatenate([np.zeros(1, dtype=np.uint32), reg])
        reg = _shift_pow2(level)(reg[0::2]) ^ reg[1::2]
        level += 1
    return int(reg[0])


def _native_crc32c():
    try:
        import google_crc32c
    except ImportError:
        return None, None
    return (google_crc32c.value, google_crc32c.extend) if google_crc32c.implementation == "c" else (None, None)


_NATIVE_CRC32C, _NATIVE_CRC32C_EXTEND = _native_crc32c()


def crc32c(data) -> int:
    """CRC32C (Castagnoli) of a bytes-like object; crc32c(b"123456789") == 0xE3069283."""
    if _NATIVE_CRC32C is not None:  # it reads numpy arrays in place: no copy of the packet
        return _NATIVE_CRC32C(data if isinstance(data, bytes) else np.frombuffer(data, dtype=np.uint8))
    return crc32c_numpy(data)


def crc32c_numpy(data) -> int:
    """The fallback without ``google-crc32c``'s C library (table lanes in numpy)."""
    data = memoryview(data).cast("B")
    if len(data) < _LANE_THRESHOLD:
        return _crc_register_py(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    return _shift(0xFFFFFFFF, len(data)) ^ _crc_register_lanes(data) ^ 0xFFFFFFFF


def crc32c_reference(data) -> int:
    """Byte-at-a-time CRC32C, for tests of the lane version."""
    return _crc_register_py(0xFFFFFFFF, memoryview(data).cast("B")) ^ 0xFFFFFFFF


# ----------------------------------------------------------------------------- fingerprints
_FINGERPRINT_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_KEY_ROW = 1 << 16  # int16 words per row sum of the device content key
_KEY_GROUP = 1 << 24  # int16 words per group of launches: int64 products of at most 128 MiB at a time
_KEY_MULTIPLIERS: dict = {}  # device -> the row's fixed multipliers, int64 in [1, 2**31)


def _tensor_bytes_view(t: torch.Tensor) -> np.ndarray:
    """The tensor's raw bytes in row-major order, as a uint8 array (a copy only when off the CPU or strided)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def _keyed_on_device(t: torch.Tensor) -> bool:
    """Whether the cache key of this weight is computed where it lives (``_device_content_key``)."""
    return t.is_cuda and t.element_size() >= 2


def _device_content_key(tensors: list[torch.Tensor]) -> bytes:
    """A content key of tensors on one accelerator, computed there: no copy of the weights to the host.

    The bytes, in order, are read as int16 words h and cut into rows of 2**16 words; each row gives
    the exact integer sum of h_i * r_i over the row, r_i fixed pseudo-random in [1, 2**31) (|h_i r_i|
    < 2**46, so |sum| < 2**62: int64 holds it exactly in any summation order, no overflow). A change
    of any one word changes its row's sum (r_i != 0); changes of several words in one row go unseen
    only when they cancel exactly, about 1 in 2**31 for an arbitrary edit, as the CRC32C key's 2**-32.
    Returns the row sums' bytes: 8 bytes per 128 KiB of weights, fetched with one synchronisation.
    """
    device = tensors[0].device
    r = _KEY_MULTIPLIERS.get(device)
    if r is None:
        generator = torch.Generator().manual_seed(0x4C574B59)
        r = _KEY_MULTIPLIERS[device] = torch.randint(1, 2**31, (_KEY_ROW,), generator=generator, dtype=torch.int64).to(device)
    sums, group, grouped = [], [], 0

    def add_rows(words: torch.Tensor) -> None:
        full = words.numel() // _KEY_ROW * _KEY_ROW
        if full:
            sums.append((words[:full].view(-1, _KEY_ROW) * r).sum(1))
        if full < words.numel():
            sums.append((words[full:] * r[: words.numel() - full]).sum().reshape(1))

    def flush() -> None:
        nonlocal group, grouped
        if group:
            add_rows(torch.cat(group) if len(group) > 1 else group[0])  # small tensors: one launch for many
        group, grouped = [], 0

    for t in tensors:
        words = t.detach().reshape(-1).view(torch.uint8).view(torch.int16)
        if words.numel() >= _KEY_GROUP:
            flush()
            for start in range(0, words.numel(), _KEY_GROUP):
                add_rows(words[start : start + _KEY_GROUP])
            continue
        if grouped + words.numel() > _KEY_GROUP:
            flush()
        group.append(words)
        grouped += words.numel()
    flush()
    return torch.cat(sums).cpu().numpy().tobytes() if sums else b""


def translator_fingerprint(translator) -> bytes:
    """First 8 bytes of sha256(b"LWIR-fingerprint-v1\\0" || config JSON || every state-dict tensor).

    The config JSON (sorted keys, compact separators) carries the target's name, width and RMS; the
    tensors are hashed in name order as ``name \\0 dtype \\0 shape \\0 raw bytes``. Cached per
    translator under a key read afresh from the weights' content on every call: config JSON, each
    tensor's name, dtype, shape and device, the CRC32C of each host tensor's bytes and, for weights
    on a GPU, ``_device_content_key`` computed on that GPU (a CRC would copy every weight to the
    host on every call). Any change of the weights' content, by whatever route (``p.data.add_``,
    ``load_state_dict``, an optimizer, ``module.to``, a numpy view), changes the key and rehashes,
    except an edit that leaves the key unchanged (about 1 in 2**31).
    """
    config = translator.config
    config_json = json.dumps(asdict(config) if is_dataclass(config) else dict(vars(config)), sort_keys=True, separators=(",", ":"))
    state = translator.state_dict()
    names = sorted(state)
    on_device = [n for n in names if _keyed_on_device(state[n])]
    on_host = [n for n in names if not _keyed_on_device(state[n])]
    if _NATIVE_CRC32C is None and on_host:  # a numpy CRC is slower than sha256 itself: no cache
        return _fingerprint_digest(config_json, names, state)
    devices = sorted({state[n].device for n in on_device}, key=str)
    key = (
        config_json,
        tuple((n, state[n].dtype, tuple(state[n].shape), state[n].device) for n in names),
        tuple(_NATIVE_CRC32C(_tensor_bytes_view(state[n])) for n in on_host),
        tuple(_device_content_key([state[n] for n in on_device if state[n].device == d]) for d in devices),
    )
    cached = _FINGERPRINT_CACHE.get(translator)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = _fingerprint_digest(config_json, names, state)
    _FINGERPRINT_CACHE[translator] = (key, digest)
    return digest


def _fingerprint_digest(config_json: str, names: list[str], state: dict) -> bytes:
    h = hashlib.sha256(b"LWIR-fingerprint-v1\0")
    h.update(config_json.encode())
    for name in names:
        t = state[name]
        h.update(f"\0{name}\0{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0".encode())
        h.update(_tensor_bytes_view(t))
    return h.digest()[:FINGERPRINT_SIZE]


# ----------------------------------------------------------------------------- header
@dataclass(frozen=True)
class PacketHeader:
    bits: int  # 4, 6, 8 (lw_kernels packing) or 16 (raw values, no scales)
    group_size: int  # values per scale; 0 at 16 bits
    raw_dtype: int  # 16 bits: RAW_DTYPES code; otherwise 0
    out_dtype: int  # OUT_DTYPES code: the dtype to decode into by default
    flags: int
    batch: int
    num_tokens: int  # K of the whole message
    dim: int
    chunk_start: int
    chunk_count: int
    message_id: int
    fingerprint: bytes
    payload_len: int
    version: int = VERSION
    header_len: int = HEADER_SIZE

    @property
    def bottleneck(self) -> bool:
        return bool(self.flags & FLAG_BOTTLENECK)

    def message_key(self) -> tuple:
        """Fields every chunk of one message shares."""
        return (self.message_id, self.bits, self.group_size, self.raw_dtype, self.out_dtype, self.flags,
                self.batch, self.num_tokens, self.dim, self.fingerprint)

    def pack(self) -> bytes:
        return _HEADER.pack(MAGIC, self.version, self.bits, self.header_len, self.flags, self.group_size,
                            self.raw_dtype, self.out_dtype, 0, self.batch, self.num_tokens, self.dim,
                            self.chunk_start, self.chunk_count, self.message_id, self.fingerprint,
                            self.payload_len, bytes(12))


def payload_bytes(batch: int, tokens: int, dim: int, bits: int, group_size: int = 32) -> int:
    """Payload bytes for `tokens` soft tokens of `batch` rows: packed codes + fp16 scales, or raw 16-bit values."""
    rows = batch * tokens
    if bits == 16:
        return rows * dim * 2
    return rows * (packed_row_bytes(dim, bits) + 2 * (dim // group_size))


def message_bytes(batch: int, num_tokens: int, dim: int, bits: int, group_size: int = 32, chunk_tokens: int | None = None) -> int:
    """Bytes on the wire for one message, headers and CRCs of all its chunks included."""
    step = num_tokens if chunk_tokens is None else chunk_tokens
    total = 0
    for start in range(0, num_tokens, step):
        count = min(step, num_tokens - start)
        total += HEADER_SIZE + payload_bytes(batch, count, dim, bits, group_size) + CRC_SIZE
    return total


def seal(header: PacketHeader, payload: bytes) -> bytes:
    """header || payload || CRC32C(header || payload)."""
    return seal_body(header.pack() + payload)


def seal_body(body) -> bytes:
    """Append the CRC32C trailer to header || payload bytes (also how tests forge well-sealed bad packets)."""
    body = bytes(body)
    return body + crc32c(body).to_bytes(CRC_SIZE, "little")


def _check_group(dim: int, bits: int, group_size: int) -> None:
    if group_size <= 0 or dim % group_size:
        raise ShapeError(f"dim {dim} is not a positive multiple of group_size {group_size}")
    if bits == 4 and group_size % 2:
        raise ShapeError(f"INT4 needs an even group_size, got {group_size}")
    if bits == 6 and group_size % 4:
        raise ShapeError(f"INT6 needs a group_size divisible by 4, got {group_size}")


_BYTE_FORMATS = frozenset({"B", "b", "c"})


def is_bytes_like(obj) -> bool:
    """True for objects that expose a buffer (bytes, bytearray, memoryview, numpy arrays, ...)."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return True
    try:
        memoryview(obj).release()
    except (TypeError, ValueError, BufferError):
        return False
    return True


def packet_view(packet) -> memoryview:
    """A flat unsigned-byte view of a packet, without copying; ``PacketTypeError`` for anything else.

    Accepted: bytes, bytearray, and any buffer (memoryview, numpy array, array.array) that is
    one-dimensional, C-contiguous and made of single bytes (format B, b or c). Rejected: str,
    numbers, None, sequences, torch tensors, released views, strided, multi-dimensional or
    zero-dimensional views, and items wider than a byte (numpy float/int16 arrays, ...).
    """
    if isinstance(packet, (bytes, bytearray)):
        return memoryview(packet)
    try:
        view = memoryview(packet)
    except TypeError:
        raise PacketTypeError(f"a packet is a bytes-like object, got {type(packet).__name__}") from None
    except (ValueError, BufferError) as exc:  # a released memoryview, a buffer that refuses export
        raise PacketTypeError(f"cannot read the {type(packet).__name__} as a packet: {exc}") from None
    try:
        fmt, itemsize, ndim, contiguous = view.format, view.itemsize, view.ndim, view.c_contiguous
    except ValueError as exc:
        raise PacketTypeError(f"cannot read the {type(packet).__name__} as a packet: {exc}") from None
    if ndim != 1:
        raise PacketTypeError(f"a packet is a flat buffer of bytes; got a {ndim}-dimensional {type(packet).__name__}")
    if itemsize != 1 or fmt not in _BYTE_FORMATS:
        raise PacketTypeError(f"a packet is a buffer of single bytes; got items of format {fmt!r} ({itemsize} bytes each)")
    if not contiguous:
        raise PacketTypeError(f"a packet must be a contiguous buffer; got a strided {type(packet).__name__}")
    return view if fmt == "B" else view.cast("B")


def parse_packet(packet, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[PacketHeader, memoryview]:
    """Check a packet's framing, CRC and every header field; return the header and a view of its payload.

    Allocates nothing from declared sizes: they are compared with ``max_bytes`` and with the
    packet's real length first. ``max_bytes`` caps the payload and the decoded message (fp32).
    ``packet``: see ``packet_view``; anything else raises ``PacketTypeError``.
    """
    data, fields = read_framing(packet, max_bytes)
    error = checksum_error(data)
    if error is not None:
        raise error
    return read_header(data, fields, max_bytes)


def read_framing(packet, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[memoryview, tuple]:
    """The checks ``parse_packet`` runs before the CRC (type, magic, version, header and payload
    lengths against the cap and the bytes there); returns the packet's view and its unpacked header."""
    data = packet_view(packet)
    n = len(data)
    if bytes(data[:4]) != MAGIC[: min(n, 4)]:
        raise BadMagicError(f"packet starts with {bytes(data[:4])!r}, not {MAGIC!r}: not a LatentWire packet")
    if n < 5:
        raise TruncatedPacketError(f"packet of {n} bytes ends inside the header")
    if data[4] != VERSION:
        raise UnsupportedVersionError(f"packet is wire format version {data[4]}; this receiver reads version {VERSION}")
    if n < HEADER_SIZE + CRC_SIZE:
        raise TruncatedPacketError(f"packet of {n} bytes is shorter than a header and CRC ({HEADER_SIZE + CRC_SIZE})")
    fields = _HEADER.unpack_from(data)
    header_len, payload_len = fields[3], fields[16]
    if header_len != HEADER_SIZE:
        raise HeaderFieldError(f"header length {header_len}; version {VERSION} headers are {HEADER_SIZE} bytes")
    if payload_len > max_bytes:
        raise PacketTooLargeError(f"declared payload of {payload_len} bytes is over the cap of {max_bytes} bytes")
    expected = HEADER_SIZE + payload_len + CRC_SIZE
    if n < expected:
        raise TruncatedPacketError(f"packet has {n} bytes; its header declares {expected} (payload {payload_len})")
    if n > expected:
        raise TrailingBytesError(f"packet has {n} bytes; its header declares {expected}: {n - expected} extra bytes")
    return data, fields


def checksum_error(data: memoryview) -> ChecksumError | None:
    """The ``ChecksumError`` of a framed packet (``read_framing``) whose CRC32C trailer does not match, else None."""
    stored = int.from_bytes(data[-CRC_SIZE:], "little")
    computed = crc32c(data[:-CRC_SIZE])
    if stored != computed:
        return ChecksumError(f"CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x}): the packet was corrupted")
    return None


def read_header(data: memoryview, fields: tuple, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[PacketHeader, memoryview]:
    """The checks ``parse_packet`` runs after the CRC: every header field; returns the header and the payload's view."""
    (_, version, bits, header_len, flags, group_size, raw_dtype, out_dtype, reserved16, batch, num_tokens, dim,
     chunk_start, chunk_count, message_id, fingerprint, payload_len, reserved) = fields
    header = PacketHeader(bits, group_size, raw_dtype, out_dtype, flags, batch, num_tokens, dim, chunk_start,
                          chunk_count, message_id, fingerprint, payload_len, version, header_len)
    validate_header(header, max_bytes, reserved16 == 0 and reserved == _ZERO_RESERVED)
    return header, data[HEADER_SIZE:-CRC_SIZE]


_ZERO_RESERVED = bytes(12)


def validate_header(h: PacketHeader, max_bytes: int = DEFAULT_MAX_BYTES, reserved_zero: bool = True) -> None:
    if not reserved_zero:
        raise HeaderFieldError("reserved header bytes are not zero")
    if h.flags & ~KNOWN_FLAGS:
        raise HeaderFieldError(f"unknown flags {h.flags & ~KNOWN_FLAGS:#06x}")
    if h.bits not in WIRE_BITS:
        raise HeaderFieldError(f"bit width {h.bits}; the format has {WIRE_BITS}")
    if h.out_dtype not in OUT_DTYPES:
        raise HeaderFieldError(f"unknown output dtype code {h.out_dtype}")
    if h.bits == 16:
        if h.raw_dtype not in RAW_DTYPES:
            raise HeaderFieldError(f"16-bit payload with unknown element dtype code {h.raw_dtype}")
        if h.group_size != 0:
            raise HeaderFieldError(f"16-bit payloads have no scales; group_size must be 0, got {h.group_size}")
    elif h.raw_dtype != 0:
        raise HeaderFieldError(f"{h.bits}-bit payloads are packed codes; element dtype code must be 0, got {h.raw_dtype}")
    if min(h.batch, h.num_tokens, h.dim, h.chunk_count) < 1:
        raise ShapeError(f"empty message: batch {h.batch}, tokens {h.num_tokens}, dim {h.dim}, chunk of {h.chunk_count}")
    decoded = h.batch * h.num_tokens * h.dim * 4
    if decoded > max_bytes:
        raise PacketTooLargeError(f"message of {h.batch}x{h.num_tokens}x{h.dim} decodes to {decoded} bytes, over the cap of {max_bytes}")
    if h.bits != 16:
        _check_group(h.dim, h.bits, h.group_size)
    if h.chunk_start + h.chunk_count > h.num_tokens:
        raise ChunkError(f"chunk covers tokens [{h.chunk_start}, {h.chunk_start + h.chunk_count}) of a {h.num_tokens}-token message")
    expected = payload_bytes(h.batch, h.chunk_count, h.dim, h.bits, h.group_size)
    if h.payload_len != expected:
        raise ShapeError(f"payload of {h.payload_len} bytes; {h.batch}x{h.chunk_count}x{h.dim} at {h.bits} bits needs {expected}")


# ----------------------------------------------------------------------------- payload
STAGING_ALIGN = 16  # byte offset of each array in a host staging buffer: fp16 views need even offsets, wide loads 16
_FP16_MAX_BITS = 0x7BFF  # 65504: every fp16 bit pattern above it is Inf, NaN or has the sign bit set
_NEGATIVE_ZERO_BITS = 0x8000
_EXPONENT_BITS = {1: 0x7C00, 2: 0x7F80}  # RAW_DTYPES code -> exponent field (all ones: Inf or NaN)


def _require_little_endian() -> None:
    if sys.byteorder != "little":
        raise NotImplementedError("LatentWire packets are little-endian; big-endian hosts are not supported")


def aligned(nbytes: int) -> int:
    """``nbytes`` rounded up to a multiple of STAGING_ALIGN."""
    return -(-nbytes // STAGING_ALIGN) * STAGING_ALIGN


def _to_host(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """uint8 (or bool) tensors -> numpy arrays of the same shapes on the host, with one synchronisation.

    CPU tensors are viewed, not copied. CUDA ones are copied into one page-locked buffer (torch's
    pinned-memory cache makes that an allocation-free reuse after the first call), every copy
    queued before a single wait, so a message costs one round trip however many arrays it has.
    """
    if not tensors[0].is_cuda:
        return [t.contiguous().cpu().numpy() for t in tensors]
    offsets, total = [], 0
    for t in tensors:
        offsets.append(total)
        total += aligned(t.numel())
    host = torch.empty(total, dtype=torch.uint8, pin_memory=True)
    views = []
    for t, offset in zip(tensors, offsets):
        view = host[offset : offset + t.numel()].view(t.shape)
        view.copy_(t, non_blocking=True)
        views.append(view)
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return [v.numpy() for v in views]


def encode_payload(values: torch.Tensor, bits: int, group_size: int) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Quantize (or cast) the whole message once and bring it to the host.

    Returns (codes, or raw 16-bit values, as uint8 (B, K, row_bytes); fp16 scales as uint8
    (B, K, 2 * D / group_size), or None at 16 bits; RAW_DTYPES code). The finiteness checks are
    reductions on the tensor's device (amax of |x| is NaN or Inf exactly when some value is; it is
    cheaper than isfinite's bool tensor), fetched with the payload in one transfer.
    ``NonFiniteValueError`` for NaN/Inf values or an fp16 overflow.
    """
    _require_little_endian()
    values = values.detach()
    finite = [torch.isfinite(values.abs().amax())]
    if bits == 16:
        raw = torch.bfloat16 if values.dtype == torch.bfloat16 else torch.float16
        cast = values.to(raw).contiguous()
        finite.append(torch.isfinite(cast.abs().amax()))
        arrays, raw_code = [cast.view(torch.uint8)], RAW_DTYPE_CODES[raw]
    else:
        from lw_kernels import quantize

        packed, scales = quantize(values, bits, group_size)
        arrays, raw_code = [packed, scales.view(torch.uint8)], 0
    finite = torch.stack(finite) if len(finite) > 1 else finite[0].reshape(1)  # a view: no launch for one
    finite, *host = _to_host([finite.view(torch.uint8), *arrays])
    if not finite[0]:
        raise NonFiniteValueError(f"{int((~torch.isfinite(values)).sum())} NaN/Inf values in the tensor to send")
    if bits == 16 and not finite[1]:
        raise NonFiniteValueError("values overflow fp16 (|x| > 65504); send bf16 or quantize instead")
    return host[0], (host[1] if bits != 16 else None), raw_code


def chunk_pieces(array: np.ndarray, start: int, count: int) -> list[np.ndarray]:
    """Tokens [start, start + count) of every row of a (B, K, n) array, as contiguous pieces in payload order."""
    if start == 0 and count == array.shape[1]:
        return [array]
    return [row[start : start + count] for row in array]


def seal_pieces(pieces) -> bytes:
    """header || payload pieces || CRC32C of them, with one copy of the bytes (the join)."""
    if _NATIVE_CRC32C is not None:  # the fallback has no incremental form here: it joins first
        crc = 0
        for piece in pieces:
            crc = _NATIVE_CRC32C_EXTEND(crc, piece)
        return b"".join([*pieces, crc.to_bytes(CRC_SIZE, "little")])
    return seal_body(b"".join(pieces))


def payload_arrays(h: PacketHeader, payload) -> tuple[np.ndarray, np.ndarray | None]:
    """Views (no copy) of a parsed packet's payload: codes uint8 (B, c, row_bytes) and the scales'
    fp16 bits as uint16 (B, c, G); or the raw 16-bit values' bits as uint16 (B, c, D) and None."""
    _require_little_endian()
    b, c, d = h.batch, h.chunk_count, h.dim
    if h.bits == 16:
        return np.frombuffer(payload, dtype=np.uint16).reshape(b, c, d), None
    split = b * c * packed_row_bytes(d, h.bits)
    codes = np.frombuffer(payload, dtype=np.uint8, count=split).reshape(b, c, -1)
    return codes, np.frombuffer(payload, dtype=np.uint16, offset=split).reshape(b, c, d // h.group_size)


def check_payload(h: PacketHeader, first: np.ndarray, scales: np.ndarray | None) -> float:
    """Step 7 of docs/wire.md on the payload's bits, one pass over the scales (or 16-bit values):
    scales finite and non-negative (-0.0 allowed), 16-bit values finite.

    Returns the largest magnitude any value of the payload decodes to, before rescaling:
    2**(bits-1) x the largest scale (code 0 decodes to -2**(bits-1) x scale), or the largest |value|.
    Non-negative fp16 bit patterns sort like their values, so one integer max finds both the
    largest scale and, when it is above 65504's pattern, that something is wrong.
    """
    if scales is None:
        exponent = _EXPONENT_BITS[h.raw_dtype]
        magnitude = np.bitwise_and(first, 0x7FFF)
        top = int(magnitude.max())
        if top >= exponent:
            raise NonFiniteValueError(f"{int((magnitude >= exponent).sum())} NaN/Inf values in a 16-bit payload")
        if h.raw_dtype == 1:
            return float(np.uint16(top).view(np.float16))
        return float(np.uint32(top << 16).view(np.float32))
    top = int(scales.max())
    if top > _FP16_MAX_BITS:
        bad = int((np.bitwise_and(scales, 0x7C00) == 0x7C00).sum())
        if bad:
            raise NonFiniteScaleError(f"{bad} NaN/Inf quantization scales")
        negative = int((scales > _NEGATIVE_ZERO_BITS).sum())
        if negative:
            raise NegativeScaleError(f"{negative} negative quantization scales")
        top = int(np.where(scales == _NEGATIVE_ZERO_BITS, 0, scales).max())
    return 2 ** (h.bits - 1) * float(np.uint16(top).view(np.float16))
