"""RMS-matched LayerNorm: Triton kernel (interpreter on CPU) vs the float64 reference, plus CPU dispatch."""
import pytest
import torch

import lw_kernels
from lw_kernels.reference import rms_matched_layer_norm_ref

triton = pytest.importorskip("triton")
from lw_kernels.rms_layernorm import rms_matched_layer_norm_triton  # noqa: E402

# relative-RMS bounds per dtype: fp32 arithmetic, and one rounding of bf16/fp16 outputs (the
# interpreter truncates fp32 -> bf16, so bf16 gets twice its rounding error).
FWD_TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
BWD_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _inputs(shape, dtype, device, affine):
    D = shape[-1]
    x = (torch.randn(shape, device=device) * 2.5 + 0.7).to(dtype)
    w = (torch.randn(D, device=device) * 0.5 + 1.0).to(dtype) if affine in ("w", "wb") else None
    b = (torch.randn(D, device=device) * 0.3).to(dtype) if affine == "wb" else None
    return x, w, b


def _run_both(x, w, b, t, g):
    """Triton on the given inputs; reference in float64 on the same (already rounded) values."""
    leaves = [p.detach().clone().requires_grad_() if p is not None else None for p in (x, w, b)]
    ref_leaves = [p.detach().double().requires_grad_() if p is not None else None for p in (x, w, b)]
    t_k = t.detach().clone().requires_grad_() if isinstance(t, torch.Tensor) else t
    t_r = t.detach().double().requires_grad_() if isinstance(t, torch.Tensor) else t
    out = rms_matched_layer_norm_triton(leaves[0], leaves[1], leaves[2], t_k)
    ref = rms_matched_layer_norm_ref(ref_leaves[0], ref_leaves[1], ref_leaves[2], t_r)
    out.backward(g)
    ref.backward(g.double())
    grads = [(a.grad, r.grad) for a, r in zip(leaves, ref_leaves) if a is not None]
    if isinstance(t, torch.Tensor):
        grads.append((t_k.grad, t_r.grad))
    return out, ref, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows,D,affine", [(7, 576, "wb"), (33, 640, "w"), (5, 640, None), (3, 100, "wb")])
def test_forward_and_grads_match_float64_reference(rows, D, affine, dtype, device, rel_rms):
    x, w, b = _inputs((rows, D), dtype, device, affine)
    g = torch.randn(rows, D, device=device).to(dtype)
    out, ref, grads = _run_both(x, w, b, 1.7, g)
    assert out.dtype == dtype and out.shape == x.shape
    assert rel_rms(out, ref) < FWD_TOL[dtype]
    for got, want in grads:
        assert got.dtype == dtype
        assert rel_rms(got, want) < BWD_TOL[dtype]


@pytest.mark.parametrize("D,dtype", [(3584, torch.bfloat16), (4096, torch.float32), (5120, torch.bfloat16)])
def test_llm_hidden_sizes_few_rows(D, dtype, device, rel_rms):
    x, w, b = _inputs((3, D), dtype, device, "wb")
    g = torch.randn(3, D, device=device).to(dtype)
    out, ref, grads = _run_both(x, w, b, 0.02, g)
    assert rel_rms(out, ref) < FWD_TOL[dtype]
    for got, want in grads:
        assert rel_rms(got, want) < BWD_TOL[dtype]


def test_output_rows_have_target_rms_per_row_tensor(device, rel_rms):
    x, w, b = _inputs((2, 5, 576), torch.float32, device, "wb")
    t = torch.rand(2, 5, device=device) * 3 + 0.1
    g = torch.randn(2, 5, 576, device=device)
    out, ref, grads = _run_both(x, w, b, t, g)
    rms = out.double().pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, t.double(), rtol=1e-5, atol=0)
    assert rel_rms(out, ref) < 1e-5
    for got, want in grads:  # dx, dw, db and the per-row d target_rms
        assert rel_rms(got, want) < 1e-5


def test_scalar_tensor_target_gets_gradient(device, rel_rms):
    x, w, b = _inputs((9, 640), torch.float32, device, None)
    t = torch.tensor(2.0, device=device)
    g = torch.randn(9, 640, device=device)
    _, _, grads = _run_both(x, w, b, t, g)
    dt, dt_ref = grads[-1]
    assert dt.shape == t.shape
    assert rel_rms(dt, dt_ref) < 1e-5


def test_non_contiguous_inputs(device, rel_rms):
    base = torch.randn(6, 2 * 640, device=device)
    x = base[:, ::2]  # last-dim stride 2: copied to rows
    assert not x.is_contiguous()
    w = torch.randn(640, device=device)
    out = rms_matched_layer_norm_triton(x, w, None, 1.3)
    assert rel_rms(out, rms_matched_layer_norm_ref(x.double(), w.double(), None, 1.3)) < 1e-5
    rows = torch.randn(12, 576, device=device)[::3]  # row stride 3*576: taken as a strided view
    g = torch.randn(4, 576, device=device)[:, :].t().contiguous().t()  # transposed-then-back grad
    out, ref, grads = _run_both(rows, None, None, 0.5, g)
    assert rel_rms(out, ref) < 1e-5
    assert rel_rms(grads[0][0], grads[0][1]) < 1e-5


def test_weight_shape_mismatch_raises(device):
    with pytest.raises(ValueError, match="weight"):
        rms_matched_layer_norm_triton(torch.randn(2, 64, device=device), torch.randn(32, device=device))


def test_cpu_dispatch_uses_reference_and_matches_target():
    assert not lw_kernels.use_triton(torch.randn(2))
    x = torch.randn(3, 4, 96, requires_grad=True)
    w = torch.randn(96, requires_grad=True)
    out = lw_kernels.rms_matched_layer_norm(x, w, None, target_rms=0.05)
    torch.testing.assert_close(out, rms_matched_layer_norm_ref(x, w, None, 0.05), rtol=0, atol=0)
    torch.testing.assert_close(out.pow(2).mean(-1).sqrt(), torch.full((3, 4), 0.05), rtol=1e-4, atol=0)
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and w.grad.abs().sum() > 0
