"""Fused gated cross-attention: Triton forward/backward vs the float64 reference, padding, CPU dispatch."""
import pytest
import torch

import lw_kernels
from lw_kernels.reference import gated_cross_attention_ref

triton = pytest.importorskip("triton")
from lw_kernels.cross_attention import gated_cross_attention_triton  # noqa: E402

# bf16: inputs, P and dO are rounded to bf16 for the dots (and the interpreter truncates).
FWD_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
BWD_TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}


def _inputs(B, H, Lq, Lk, Dh, dtype, device, gate=0.6):
    q = torch.randn(B, H, Lq, Dh, device=device).to(dtype)
    k = torch.randn(B, H, Lk, Dh, device=device).to(dtype)
    v = torch.randn(B, H, Lk, Dh, device=device).to(dtype)
    mask = torch.rand(B, Lk, device=device) > 0.3
    mask[:, 0] = True
    g = torch.tensor(gate, device=device).to(dtype)
    res = torch.randn(B, Lq, H * Dh, device=device).to(dtype)
    return [q, k, v, mask, g, res]


def _run_both(inputs, grad):
    q, k, v, mask, gate, res = inputs
    ours = [t.detach().clone().requires_grad_() for t in (q, k, v, gate, res)]
    theirs = [t.detach().double().requires_grad_() for t in (q, k, v, gate, res)]
    out = gated_cross_attention_triton(ours[0], ours[1], ours[2], mask, ours[3], ours[4])
    ref = gated_cross_attention_ref(theirs[0], theirs[1], theirs[2], mask, theirs[3], theirs[4])
    out.backward(grad)
    ref.backward(grad.double())
    return out, ref, [(a.grad, b.grad) for a, b in zip(ours, theirs)]


@pytest.mark.parametrize(
    "B,H,Lq,Lk,Dh,dtype",
    [
        (2, 3, 8, 70, 16, torch.float32),
        (3, 2, 20, 130, 24, torch.float32),  # Lq, Lk, Dh all off the block sizes
        (2, 2, 72, 33, 32, torch.float32),  # two query blocks, fewer keys than one block
        (2, 2, 16, 96, 32, torch.bfloat16),
        (2, 2, 12, 80, 64, torch.float16),
    ],
)
def test_forward_and_all_grads_match_float64_reference(B, H, Lq, Lk, Dh, dtype, device, rel_rms):
    inputs = _inputs(B, H, Lq, Lk, Dh, dtype, device)
    grad = torch.randn(B, Lq, H * Dh, device=device).to(dtype)
    out, ref, grads = _run_both(inputs, grad)
    assert out.shape == (B, Lq, H * Dh) and out.dtype == dtype
    # compare the attention term, not the residual that dominates the sum; the bound is the error of
    # rounding the exact answer to `dtype` once (x3: the interpreter truncates) plus the kernel's own
    res = inputs[5].double()
    rounding = rel_rms(ref.to(dtype).double() - res, ref - res)
    assert rel_rms(out.double() - res, ref - res) < 3 * rounding + FWD_TOL[dtype]
    for name, (got, want) in zip("q k v gate residual".split(), grads):
        assert got.shape == want.shape and got.dtype == dtype, name
        assert rel_rms(got, want) < BWD_TOL[dtype], name


def test_fully_padded_row_outputs_residual_and_no_nan(device, rel_rms):
    inputs = _inputs(3, 2, 8, 40, 16, torch.float32, device)
    inputs[3][1] = False  # batch row 1 has no real key
    grad = torch.randn(3, 8, 32, device=device)
    out, ref, grads = _run_both(inputs, grad)
    assert torch.equal(out[1], inputs[5][1])  # attention contributes exactly 0
    assert not torch.equal(out[0], inputs[5][0])
    assert rel_rms(out, ref) < 1e-5
    dq, dk, dv = (g[0] for g in grads[:3])
    for got, (_, want) in zip((dq, dk, dv), grads[:3]):
        assert rel_rms(got, want) < 1e-5
    assert dq[1].abs().max() == 0 and dk[1].abs().max() == 0 and dv[1].abs().max() == 0
    masked = ~inputs[3][0]
    assert dk[0][:, masked].abs().max() == 0 and dv[0][:, masked].abs().max() == 0


def test_zero_gate_still_gets_gradient(device, rel_rms):
    """tanh(0) = 0 is the usual init: the gate's gradient must come from sum(g * attn), not from out."""
    inputs = _inputs(2, 2, 8, 64, 16, torch.float32, device, gate=0.0)
    grad = torch.randn(2, 8, 32, device=device)
    out, ref, grads = _run_both(inputs, grad)
    dgate, dgate_ref = grads[3]
    assert dgate_ref.abs() > 1e-3
    assert rel_rms(dgate, dgate_ref) < 1e-5
    assert torch.equal(out, inputs[5])


def test_non_contiguous_projection_layout(device, rel_rms):
    """q/k/v as the usual (B, L, H, Dh) projections viewed as (B, H, L, Dh); residual and grad strided too."""
    B, H, Lq, Lk, Dh = 2, 4, 10, 50, 16
    q = torch.randn(B, Lq, H, Dh, device=device).transpose(1, 2)
    kv = torch.randn(B, Lk, 2, H, Dh, device=device)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    res = torch.randn(B, H * Dh, Lq, device=device).transpose(1, 2)
    assert not (q.is_contiguous() or k.is_contiguous() or res.is_contiguous())
    mask = torch.rand(B, Lk, device=device) > 0.5
    gate = torch.tensor(-0.4, device=device)
    grad = torch.randn(B, H * Dh, Lq, device=device).transpose(1, 2)
    out, ref, grads = _run_both([q, k, v, mask, gate, res], grad)
    assert rel_rms(out, ref) < 1e-5
    for got, want in grads:
        assert rel_rms(got, want) < 1e-5


def test_translator_shape_bf16_few_heads(device, rel_rms):
    """Dh=64, Lq=64 (one full query block), Lk=256 (four key blocks), as in the benchmark, scaled down in B, H."""
    inputs = _inputs(1, 2, 64, 256, 64, torch.bfloat16, device)
    grad = torch.randn(1, 64, 128, device=device).bfloat16()
    out, ref, grads = _run_both(inputs, grad)
    res = inputs[5].double()
    rounding = rel_rms(ref.bfloat16().double() - res, ref - res)
    assert rel_rms(out.double() - res, ref - res) < 3 * rounding + FWD_TOL[torch.bfloat16]
    for got, want in grads:
        assert rel_rms(got, want) < BWD_TOL[torch.bfloat16]


def test_bad_shapes_raise(device):
    q, k, v, mask, gate, res = _inputs(2, 2, 8, 16, 16, torch.float32, device)
    with pytest.raises(ValueError, match="residual"):
        gated_cross_attention_triton(q, k, v, mask, gate, res[:, :, :16])
    with pytest.raises(ValueError, match="key_padding_mask"):
        gated_cross_attention_triton(q, k, v, mask[:, :8], gate, res)
    with pytest.raises(ValueError, match="gate"):
        gated_cross_attention_triton(q, k, v, mask, torch.ones(2, device=device), res)


def test_cpu_dispatch_public_api_uses_reference():
    q, k, v, mask, gate, res = _inputs(2, 2, 8, 24, 16, torch.float32, "cpu")
    mask[0] = False
    leaves = [t.clone().requires_grad_() for t in (q, k, v, gate, res)]
    out = lw_kernels.gated_cross_attention(leaves[0], leaves[1], leaves[2], mask, leaves[3], leaves[4])
    assert torch.equal(out, gated_cross_attention_ref(q, k, v, mask, gate, res))
    assert torch.equal(out[0], res[0])
    out.square().sum().backward()
    for t in leaves:
        assert t.grad is not None and torch.isfinite(t.grad).all()
    assert leaves[3].grad.abs() > 0
