"""Static runtime prefill paths: ``hidden_states`` (the sender's source read) against transformers'
``hidden_states``, and graphed prefill (``graph_prefill=True``, CUDA only) against eager prefill."""

import pytest
import torch

from lw_runtime.decode_loop import DecodeLoop
from lw_runtime.runtime import StaticRuntime, cache_length

from test_runtime import left_padded, tiny_llama

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_hidden_states_equal_transformers_hidden_states(layer):
    model = tiny_llama(num_hidden_layers=3)
    torch.manual_seed(3)
    embeds = torch.randn(2, 7, 64) * 0.5  # unpadded: a plain HF forward numbers positions from slot 0 too
    with torch.no_grad():
        want = model(inputs_embeds=embeds, output_hidden_states=True).hidden_states[layer]
    got = StaticRuntime(model).hidden_states(embeds, None, layer)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_hidden_states_of_left_padded_rows_equal_each_row_alone():
    model = tiny_llama(num_hidden_layers=3)
    embeds, mask = left_padded([7, 3], width=7)
    rt = StaticRuntime(model)
    both = rt.hidden_states(embeds, mask, 2)
    alone = rt.hidden_states(embeds[1:, -3:], None, 2)
    torch.testing.assert_close(both[1, -3:], alone[0], rtol=1e-4, atol=1e-4)  # fp32 summation order differs


def test_hidden_states_rejects_a_layer_out_of_range_and_counts_negative_layers_like_encode_source():
    model = tiny_llama()
    rt = StaticRuntime(model)
    with pytest.raises(ValueError, match="out of range"):
        rt.hidden_states(torch.zeros(1, 2, 64), None, 3)
    x = torch.randn(1, 5, 64)
    torch.testing.assert_close(rt.hidden_states(x, None, -1), rt.hidden_states(x, None, 2))


def test_hidden_states_leaves_no_request_to_continue():
    rt = StaticRuntime(tiny_llama())
    rt.hidden_states(torch.randn(1, 5, 64), None, 1)
    with pytest.raises(RuntimeError, match="start"):
        rt.prefill_logits()


def test_graph_prefill_needs_cuda_graphs():
    with pytest.raises(ValueError, match="graph_prefill"):
        StaticRuntime(tiny_llama(), graph_prefill=True)


def _greedy(rt, embeds, mask, chunks, n=10):
    rt.start(embeds.shape[0], cache_length(embeds.shape[1] + n))
    for a, b in chunks:
        rt.prefill_chunk(embeds[:, a:b], mask[:, a:b])
    first = rt.prefill_logits().clone()
    return first, DecodeLoop(rt, rt.prefill_logits(), max_new_tokens=n, pad_token_id=0, eos_token_id=None).run()


@cuda
def test_graphed_prefill_equals_eager_prefill_on_the_gpu():
    model = tiny_llama().cuda()
    embeds, mask = left_padded([9, 4, 1], width=9)
    embeds, mask = embeds.cuda(), mask.cuda()
    eager = StaticRuntime(model)
    graphed = StaticRuntime(model, graph_prefill=True)
    for chunks in ([(0, 9)], [(0, 4), (4, 9)]):
        want_logits, want = _greedy(eager, embeds, mask, chunks)
        for _ in range(3):  # the first call captures, the next ones replay
            got_logits, got = _greedy(graphed, embeds, mask, chunks)
            torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-4)
            assert torch.equal(got, want)
    # other inputs of the same shape replay the same graph with the new values
    embeds2 = torch.randn_like(embeds)
    want_logits, want = _greedy(eager, embeds2, mask, [(0, 9)])
    got_logits, got = _greedy(graphed, embeds2, mask, [(0, 9)])
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(got, want)


@cuda
def test_graphed_prefill_after_a_prefix_with_eviction_and_outside_inference_mode_on_the_gpu():
    model = tiny_llama().cuda()
    embeds, mask = left_padded([9, 4, 1], width=9)
    embeds, mask = embeds.cuda(), mask.cuda()
    eager, graphed = StaticRuntime(model), StaticRuntime(model, graph_prefill=True, max_prefill_graphs=1)
    prefix = eager.prefill_prefix(embeds[:, :3], mask[:, :3])
    for rt in (eager, graphed):  # a chunk starting at slot 3 after a loaded prefix, alternating shapes
        outs = []
        for width in (6, 4, 6):
            rt.start(3, 16, prefix=prefix)
            rt.prefill_chunk(embeds[:, 3:3 + width], mask[:, 3:3 + width])
            outs.append(rt.prefill_logits().clone())
        if rt is eager:
            want = outs
    for got, ref in zip(outs, want):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    with torch.inference_mode():  # first use of a shape inside inference mode, the next one outside
        graphed.start(3, 16)
        graphed.prefill_chunk(embeds[:, :5], mask[:, :5])
    graphed.start(3, 16)
    graphed.prefill_chunk(embeds[:, :5], mask[:, :5])


@cuda
def test_graphed_hidden_states_equal_eager_on_the_gpu():
    model = tiny_llama(num_hidden_layers=3).cuda()
    embeds, mask = left_padded([7, 3], width=7)
    embeds, mask = embeds.cuda(), mask.cuda()
    want = StaticRuntime(model).hidden_states(embeds, mask, 2)
    rt = StaticRuntime(model, graph_prefill=True)
    for scale in (1.0, 1.0, 0.5):
        got = rt.hidden_states(embeds * scale, mask, 2)
        ref = want if scale == 1.0 else StaticRuntime(model).hidden_states(embeds * scale, mask, 2)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_encode_source_on_the_static_runtime_equals_the_hf_read():
    from lw_runtime.source import encode_source
    from train.random_models import build_random

    src = build_random("tiny", device="cpu", dtype=torch.float32, seed=0)
    texts = ["the vault code is 4821", "a code of 7730 was set"]  # same byte length: no padding
    want = encode_source(src, texts, layer=1)
    got = encode_source(src, texts, layer=1, runtime=StaticRuntime(src.model))
    assert torch.equal(got.mask, want.mask) and got.hidden.dtype == want.hidden.dtype
    torch.testing.assert_close(got.hidden, want.hidden, rtol=1e-5, atol=1e-5)
