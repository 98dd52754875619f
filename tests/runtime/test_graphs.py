"""CudaGraphed: the same outputs as the eager function (on the GPU, graph replays with new inputs; on CPU, a pass-through)."""

import pytest
import torch

from lw_runtime.graphs import CudaGraphed
from lw_runtime.translator import BottleneckedGatedTranslator, TranslatorConfig


def _translator(device):
    cfg = TranslatorConfig.preset("tiny", source_dim=48, target_dim=40, num_soft_tokens=6, dropout=0.0)
    with torch.device(device):
        tr = BottleneckedGatedTranslator(cfg)
    with torch.no_grad():
        for name, p in tr.named_parameters():
            if name.split(".")[-1].startswith("gate_"):
                p.fill_(0.5)
    return tr.eval().requires_grad_(False)


def _inputs(device, seed, batch=3, length=11):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, 48, generator=g).to(device)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[1, :4] = False
    return hidden, mask.to(device)


def test_cpu_is_a_pass_through_with_the_same_outputs():
    tr = _translator("cpu")
    graphed = CudaGraphed(lambda h, m: tr(h, m, return_bottleneck=True))
    h, m = _inputs("cpu", 0)
    soft, latent = graphed(h, m)
    want_soft, want_latent = tr(h, m, return_bottleneck=True)
    torch.testing.assert_close(soft, want_soft)
    torch.testing.assert_close(latent, want_latent)


def test_non_tensor_arguments_are_refused():
    with pytest.raises(TypeError, match="tensors only"):
        CudaGraphed(lambda x, n: x * n)(torch.ones(2), 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_replays_match_eager_for_new_inputs_and_shapes_on_the_gpu():
    tr = _translator("cuda")
    graphed = CudaGraphed(lambda h, m: tr(h, m, return_bottleneck=True), max_graphs=2)
    for seed, length in ((0, 11), (1, 11), (2, 7), (3, 11), (4, 5)):
        h, m = _inputs("cuda", seed, length=length)
        soft, latent = graphed(h, m)
        with torch.inference_mode():
            want_soft, want_latent = tr(h, m, return_bottleneck=True)
        torch.testing.assert_close(soft, want_soft, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(latent, want_latent, rtol=1e-4, atol=1e-4)
    assert len(graphed._graphs) == 2  # the LRU bound
