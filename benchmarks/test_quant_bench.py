"""Group-wise quantization: quantize / dequantize 64M values (CUDA) or 1M (CPU), and one 64x4096 packet."""
import pytest
import torch
from harness import DEVICE, size

import lw_kernels

N = size(64 * 1024 * 1024, 1024 * 1024)


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_quantize(run, bits):
    x = torch.randn(N // 4096, 4096, device=DEVICE, dtype=torch.bfloat16)
    packed, scales = run(lw_kernels.quantize, x, bits)
    assert packed.shape[-1] == lw_kernels.packed_row_bytes(4096, bits)


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_dequantize(run, bits):
    x = torch.randn(N // 4096, 4096, device=DEVICE, dtype=torch.bfloat16)
    packed, scales = lw_kernels.quantize(x, bits)
    y = run(lambda: lw_kernels.dequantize(packed, scales, bits, dtype=torch.bfloat16))
    assert (y.float() - x.float()).abs().max() <= scales.float().max() / 2 + 1e-2


@pytest.mark.parametrize("bits", [4, 6])
def test_packet_to_soft_tokens(run, bits):
    packed, scales = lw_kernels.quantize(torch.randn(64, 4096, device=DEVICE), bits)
    out = run(lambda: lw_kernels.dequantize_rms_match(packed, scales, bits, target_rms=0.015, dtype=torch.bfloat16))
    assert out.shape == (64, 4096)
