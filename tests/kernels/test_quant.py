"""Group-wise INT8/6/4 quantization: bit-exact packing vs the reference packer, error bounds, fused receiver, STE."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lw_kernels
from lw_kernels import reference as ref

triton = pytest.importorskip("triton")
from lw_kernels import quant  # noqa: E402

BITS = [4, 6, 8]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _values(shape, dtype, device):
    """Random rows with a spread of group magnitudes, one all-zero group, and exact ties at x/scale = k + 0.5."""
    x = torch.randn(shape, device=device) * torch.exp(torch.randn(*shape[:-1], 1, device=device))
    x = x.to(dtype)
    flat = x.reshape(-1, shape[-1])
    flat[0, :32] = 0
    return x


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,group_size", [((7, 640), 32), ((3, 5, 576), 64), ((2, 96), 16)])
def test_packed_bytes_and_scales_bit_exact(shape, group_size, dtype, bits, device):
    x = _values(shape, dtype, device)
    packed, scales = quant.quantize_triton(x, bits, group_size)
    want_packed, want_scales = ref.quantize_ref(x.cpu(), bits, group_size)
    assert packed.dtype == torch.uint8 and scales.dtype == torch.float16
    assert packed.shape == (*shape[:-1], ref.packed_row_bytes(shape[-1], bits))
    assert scales.shape == (*shape[:-1], shape[-1] // group_size)
    assert torch.equal(packed.cpu(), want_packed)
    assert torch.equal(scales.cpu(), want_scales)


def test_large_row_bit_exact_int6(device):
    x = _values((2, 4096), torch.bfloat16, device)
    packed, scales = quant.quantize_triton(x, 6)
    want_packed, want_scales = ref.quantize_ref(x.cpu(), 6)
    assert torch.equal(packed.cpu(), want_packed) and torch.equal(scales.cpu(), want_scales)


@pytest.mark.parametrize("bits", BITS)
def test_roundtrip_error_within_half_scale(bits, device):
    x = _values((9, 640), torch.float32, device)
    packed, scales = quant.quantize_triton(x, bits)
    y = quant.dequantize_triton(packed, scales, bits, dtype=torch.float32)
    half = scales.float().repeat_interleave(32, dim=-1) / 2
    err = (y - x).abs()
    assert (err <= half * (1 + 1e-6)).all(), (err - half).max()
    # The bound is tight enough to mean something: the error is not identically tiny.
    assert err.max() > 0.1 * half.max()
    assert torch.equal(y.cpu(), ref.dequantize_ref(packed.cpu(), scales.cpu(), bits))


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("out_dtype", DTYPES)
def test_dequantize_matches_reference(bits, out_dtype, device):
    x = _values((5, 3, 192), torch.float32, device)
    packed, scales = ref.quantize_ref(x.cpu(), bits, 32)
    y = quant.dequantize_triton(packed.to(device), scales.to(device), bits, 32, dtype=out_dtype)
    want = ref.dequantize_ref(packed, scales, bits, 32, dtype=torch.float32)
    assert y.dtype == out_dtype and y.shape == x.shape
    if out_dtype == torch.float32:
        assert torch.equal(y.cpu(), want)
    else:  # one rounding (the interpreter truncates fp32 -> bf16: up to one ulp)
        ulp = torch.finfo(out_dtype).eps
        assert ((y.cpu().float() - want).abs() <= want.abs() * ulp + 1e-7).all()


def test_zero_group_gets_zero_scale_and_offset_codes(device):
    x = _values((3, 64), torch.float32, device)
    packed, scales = quant.quantize_triton(x, 4)
    assert scales[0, 0] == 0 and (scales[0, 1:] > 0).all()
    assert (packed[0, :16] == 0x88).all()  # codes 8 | 8 << 4: q = 0 at offset 8


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dequantize_rms_match_fused(bits, dtype, device, rel_rms):
    x = _values((64, 576), torch.float32, device)
    packed, scales = quant.quantize_triton(x, bits)
    out = quant.dequantize_rms_match_triton(packed, scales, bits, target_rms=0.03, dtype=dtype)
    want = ref.dequantize_rms_match_ref(packed.cpu(), scales.cpu(), bits, target_rms=0.03)
    assert out.dtype == dtype
    assert rel_rms(out.cpu(), want) < (1e-6 if dtype == torch.float32 else 8e-3)
    rms = out.float().pow(2).mean(-1).sqrt()  # eps=1e-6 under mean(y^2) moves it by <1e-3 here
    torch.testing.assert_close(rms, torch.full_like(rms, 0.03), rtol=1e-2 if dtype != torch.float32 else 1e-3, atol=0)


def _rms_match_paths(device):
    """Every way dequantize_rms_match runs: the reference, the public op on this device, the Triton
    launcher (the interpreter without a GPU) and the launcher's own fallbacks to the reference."""
    return {
        "reference": lambda pk, sc, *a, **k: ref.dequantize_rms_match_ref(pk.cpu(), sc.cpu(), *a, **k),
        "public": lambda pk, sc, *a, **k: lw_kernels.dequantize_rms_match(pk.to(device), sc.to(device), *a, **k),
        "triton": lambda pk, sc, *a, **k: quant.dequantize_rms_match_triton(pk.to(device), sc.to(device), *a, **k),
    }


def _expected_rms_match(x, bits, group_size, t, eps=1e-6):
    """float64 spec, independent of the code under test: dequantized rows, row i scaled to RMS t[i]."""
    pk, sc = ref.quantize_ref(x, bits, group_size)
    y = ref.dequantize_ref(pk, sc, bits, group_size).double()
    return pk, sc, y * (t.double().reshape(*x.shape[:-1], 1) / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + eps))


# (shape, group_size): rows == dim (a (rows,) vector broadcast along values would pass the shape
# check there), batched leading dims, one row, group sizes the Triton path takes and ones that send
# the launcher to the reference (12: not a power of two; a row above MAX_FUSED_DIM).
PER_ROW_CASES = [((3, 96), 32), ((96, 96), 32), ((40, 40), 8), ((2, 3, 96), 16), ((5, 7, 64), 64), ((1, 96), 32),
                 ((7, 96), 12), ((24, 24), 12), ((2, 16416), 32)]


@pytest.mark.parametrize("path", ["reference", "public", "triton"])
@pytest.mark.parametrize("shape,group_size", PER_ROW_CASES, ids=[f"{s}-g{g}" for s, g in PER_ROW_CASES])
@pytest.mark.parametrize("form", ["rows", "rows_1"])
def test_per_row_target_rms_scales_each_row_to_its_own_target(shape, group_size, form, path, device):
    bits = 6 if group_size % 4 == 0 else 8
    x = _values(shape, torch.float32, "cpu")
    t = torch.rand(shape[:-1]) + 0.5
    pk, sc, want = _expected_rms_match(x, bits, group_size, t)
    arg = t if form == "rows" else t.unsqueeze(-1)
    out = _rms_match_paths(device)[path](pk, sc, bits, group_size, target_rms=arg.to(device)).cpu()
    assert out.shape == shape
    torch.testing.assert_close(out.double(), want, rtol=2e-6, atol=1e-7)
    rms = out.double().pow(2).mean(-1).sqrt()
    live = want.abs().amax(-1) > 0  # _values zeroes 32 values: a row of 24 or 32 zeros stays zero
    assert live.sum() >= live.numel() - 1
    torch.testing.assert_close(rms[live], t.double()[live], rtol=1e-3, atol=0)  # eps moves it by < 1e-3 here


@pytest.mark.parametrize("path", ["reference", "public", "triton"])
@pytest.mark.parametrize("target", [0.37, 2, "0-d", "1-element", "1x1"])
@pytest.mark.parametrize("shape,group_size", [((3, 96), 32), ((96, 96), 32), ((7, 96), 12)])
def test_one_target_rms_serves_every_row(shape, group_size, target, path, device):
    bits = 6 if group_size % 4 == 0 else 8
    x = _values(shape, torch.float32, "cpu")
    value = 1.7 if isinstance(target, str) else target
    arg = {"0-d": torch.tensor(value), "1-element": torch.tensor([value]), "1x1": torch.tensor([[value]])}.get(target, target)
    if isinstance(arg, torch.Tensor):
        arg = arg.to(device)
    pk, sc, want = _expected_rms_match(x, bits, group_size, torch.full(shape[:-1], float(value)))
    out = _rms_match_paths(device)[path](pk, sc, bits, group_size, target_rms=arg).cpu()
    torch.testing.assert_close(out.double(), want, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("path", ["reference", "public", "triton"])
@pytest.mark.parametrize("shape,group_size", [((3, 96), 32), ((96, 96), 32), ((2, 3, 96), 32), ((7, 96), 12)])
def test_target_rms_of_another_shape_is_refused_on_every_path(shape, group_size, path, device):
    """A target that does not name one value per row (or one for all) must raise, never broadcast."""
    bits = 6 if group_size % 4 == 0 else 8
    pk, sc = ref.quantize_ref(_values(shape, torch.float32, "cpu"), bits, group_size)
    rows = shape[:-1]
    bad = [torch.rand(*rows[:-1], rows[-1] + 1), torch.rand(*rows, 2), torch.rand(1, *rows), torch.rand(int(torch.tensor(rows).prod()) * 2)]
    if len(rows) > 1:
        bad += [torch.rand(*reversed(rows)), torch.rand(int(torch.tensor(rows).prod()))]  # transposed; flattened
    if rows != (shape[-1],):
        bad.append(torch.rand(shape[-1]))  # one value per column
    run = _rms_match_paths(device)[path]
    for t in bad:
        with pytest.raises(ValueError, match="does not fit rows"):
            run(pk, sc, bits, group_size, target_rms=t.to(device))
    for t in ("1.0", None, torch.ones(rows, dtype=torch.bool)):
        with pytest.raises(TypeError, match="target_rms"):
            run(pk, sc, bits, group_size, target_rms=t)


def test_reference_rejects_the_per_row_vector_the_issue_found():
    """Issue 20, defect 4: (rows,) raised on CPU for 3x96 and was silently applied per column at 96x96."""
    for rows in (3, 96):
        pk, sc = lw_kernels.quantize(torch.randn(rows, 96), 6, 32)
        t = torch.rand(rows) + 0.5
        out = lw_kernels.dequantize_rms_match(pk, sc, 6, 32, t, 96)
        torch.testing.assert_close(out.pow(2).mean(-1).sqrt(), t, rtol=1e-3, atol=0)


@pytest.mark.parametrize("bits", BITS)
def test_fake_quant_forward_is_roundtrip_and_gradient_is_identity(bits, device):
    x = _values((6, 640), torch.float32, device)
    assert torch.equal(quant.fake_quant_triton(x, bits).cpu(), ref.fake_quant_ref(x.cpu(), bits))
    xb = x.bfloat16()
    got, want = quant.fake_quant_triton(xb, bits).cpu().float(), ref.fake_quant_ref(xb.cpu().float(), bits)
    assert ((got - want).abs() <= want.abs() * torch.finfo(torch.bfloat16).eps).all()  # one bf16 rounding
    xr = x.float().requires_grad_()
    y = lw_kernels.fake_quant(xr, bits)
    packed, scales = lw_kernels.quantize(xr.detach(), bits)
    assert torch.equal(y.detach(), lw_kernels.dequantize(packed, scales, bits))
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.equal(xr.grad, g)


def test_non_contiguous_input(device):
    x = _values((4, 2 * 128), torch.float32, device).t().contiguous().t()[:, :128]
    assert not x.is_contiguous()
    packed, scales = quant.quantize_triton(x, 4)
    want_packed, want_scales = ref.quantize_ref(x.cpu().contiguous(), 4)
    assert torch.equal(packed.cpu(), want_packed) and torch.equal(scales.cpu(), want_scales)


@given(
    bits=st.sampled_from(BITS),
    group_size=st.sampled_from([4, 8, 32, 64]),
    n_groups=st.integers(1, 6),
    rows=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=40, deadline=None)
def test_reference_packer_roundtrips_any_codes(bits, group_size, n_groups, rows, seed):
    gen = torch.Generator().manual_seed(seed)
    dim = group_size * n_groups
    codes = torch.randint(0, 2**bits, (rows, dim), generator=gen, dtype=torch.int32)
    packed = ref.pack_codes_ref(codes, bits, group_size)
    assert packed.shape[-1] == dim * bits // 8
    assert torch.equal(ref.unpack_codes_ref(packed, bits, group_size, dim), codes)


def test_int6_plane_layout_is_documented_one():
    codes = torch.arange(64, dtype=torch.int32).reshape(1, 64)[:, :32] * 2 + 1  # 1, 3, ..., 63
    packed = ref.pack_codes_ref(codes, 6, 32)[0]
    assert packed[0] == (1 & 15) | ((3 & 15) << 4)  # nibble plane first
    assert packed[16] == (1 >> 4) | ((3 >> 4) << 2) | ((5 >> 4) << 4) | ((7 >> 4) << 6)  # then crumbs
    assert packed[23] == (57 >> 4) | ((59 >> 4) << 2) | ((61 >> 4) << 4) | ((63 >> 4) << 6)


def test_packed_row_bytes():
    assert lw_kernels.packed_row_bytes(4096, 8) == 4096
    assert lw_kernels.packed_row_bytes(4096, 6) == 3072
    assert lw_kernels.packed_row_bytes(4096, 4) == 2048
    with pytest.raises(ValueError):
        lw_kernels.packed_row_bytes(4096, 5)


@pytest.mark.parametrize("fn", [lw_kernels.quantize, quant.quantize_triton, lw_kernels.fake_quant])
def test_bad_inputs_raise(fn, device):
    x = torch.randn(2, 100, device=device)
    with pytest.raises(ValueError, match="multiple of group_size"):
        fn(x, 4, 32)
    with pytest.raises(ValueError, match="bits"):
        fn(torch.randn(2, 64, device=device), 5, 32)
    with pytest.raises(ValueError, match="multiple of 4"):
        fn(torch.randn(2, 60, device=device), 6, 6)


def test_dequantize_rejects_wrong_packed_width(device):
    packed, scales = lw_kernels.quantize(torch.randn(2, 64), 4)
    with pytest.raises(ValueError, match="bytes"):
        lw_kernels.dequantize(packed, scales, 6)
    with pytest.raises(ValueError, match="bytes"):
        quant.dequantize_triton(packed.to(device), scales.to(device), 8)


def test_cpu_dispatch_public_api_roundtrip():
    x = torch.randn(2, 3, 128)
    for bits in BITS:
        packed, scales = lw_kernels.quantize(x, bits)
        assert torch.equal(packed, ref.quantize_ref(x, bits)[0])
        y = lw_kernels.dequantize(packed, scales, bits, dtype=torch.bfloat16)
        assert y.dtype == torch.bfloat16 and y.shape == x.shape
        z = lw_kernels.dequantize_rms_match(packed, scales, bits, target_rms=2.0)
        torch.testing.assert_close(z.pow(2).mean(-1).sqrt(), torch.full((2, 3), 2.0), rtol=1e-5, atol=0)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_values_near_rounding_ties_bit_exact(bits, dtype, device):
    """x / scale within 4 ulps of k + 0.5, the only values where a division that is not
    correctly rounded (or a floor done differently) would change a code."""
    qmax = 2 ** (bits - 1) - 1
    n_groups = 96
    amax = torch.exp(torch.randn(n_groups, 1) * 2).clamp(1e-3, 1e3)
    scale = (amax / torch.full_like(amax, qmax)).to(torch.float16).float()
    k = torch.randint(-qmax, qmax, (n_groups, 32)).float()  # |x| < amax: the pinned absmax stays the max
    x = ((k + 0.5) * scale).view(torch.int32) + torch.randint(-4, 5, (n_groups, 32), dtype=torch.int32)
    x = x.view(torch.float32)
    x[:, 0] = amax[:, 0]
    x = x.reshape(-1, 256).to(dtype)
    packed, scales = quant.quantize_triton(x.to(device), bits)
    want_packed, want_scales = ref.quantize_ref(x, bits)
    assert torch.equal(scales.cpu(), want_scales)
    assert torch.equal(packed.cpu(), want_packed)
