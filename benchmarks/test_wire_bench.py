"""Packets on the wire: encode (quantize + header + CRC32C) and decode (parse, CRC, dequantize) of one
message, 8 x 64 x 4096 INT8 at 8B batch 8 (CUDA) or 1 x 64 x 4096 (CPU); and the CRC alone with
google-crc32c's C library against the numpy fallback, on one 278 KB packet (8B, K 64, INT8)."""
import os

import pytest
import torch
from harness import DEVICE, size

from lw_runtime import wire
from lw_runtime.packets import decode, encode_soft_tokens

FINGERPRINT = b"benchfp0"


def test_packet_encode_decode(run):
    soft = torch.randn(size(8, 1), 64, 4096, device=DEVICE, dtype=torch.bfloat16)

    def roundtrip():
        return decode(encode_soft_tokens(soft, FINGERPRINT, 8, 32), fingerprint=FINGERPRINT, dtype=torch.bfloat16, device=DEVICE)

    out = run(roundtrip)
    assert out.shape == soft.shape


@pytest.mark.parametrize("impl", ["google_crc32c", "numpy"])
def test_crc32c_one_packet(benchmark, impl):
    if impl == "google_crc32c" and wire._NATIVE_CRC32C is None:
        pytest.skip("google-crc32c's C library is not installed")
    fn = wire.crc32c if impl == "google_crc32c" else wire.crc32c_numpy
    data = os.urandom(278_596)
    assert benchmark(fn, data) == wire.crc32c_reference(data)
