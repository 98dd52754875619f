"""Static runtime: greedy parity with HF generate (fp32, CPU), chunked prefill, prefix cache, stopping, sampling, errors."""

import copy
import random

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import lw_runtime
from lw_runtime.decode_loop import DecodeLoop, logits_processors
from lw_runtime.generate import stream
from lw_runtime.kv_cache import CacheFullError
from lw_runtime.models import LoadedModel
from lw_runtime.runtime import StaticRuntime, UnsupportedModelError, cache_length
from lw_runtime.wire import ChunkError

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}


def tiny_llama(seed=0, vocab=256, **overrides):
    """2 layers, hidden 64, GQA 4:2; a wide init so greedy tokens vary from step to step."""
    torch.manual_seed(seed)
    kw = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=vocab, max_position_embeddings=256, tie_word_embeddings=True, initializer_range=0.3)
    kw.update(overrides)
    return LlamaForCausalLM(LlamaConfig(**kw)).eval()


def left_padded(lengths, width, dim=64, seed=1):
    torch.manual_seed(seed)
    embeds = torch.randn(len(lengths), width, dim) * 0.5
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, width - n :] = 1
    return embeds, mask


def hf_greedy(model, embeds, mask, n, **kw):
    kw.setdefault("eos_token_id", None)
    return model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=0,
                          temperature=None, top_p=None, top_k=None, **kw)


def ours_greedy(rt, embeds, mask, n, **kw):
    rt.start(embeds.shape[0], cache_length(embeds.shape[1] + n))
    rt.prefill_chunk(embeds, mask)
    procs = logits_processors(do_sample=False, temperature=1.0, top_p=1.0, top_k=None,
                              repetition_penalty=kw.pop("repetition_penalty", 1.0),
                              no_repeat_ngram_size=kw.pop("no_repeat_ngram_size", 0))
    return DecodeLoop(rt, rt.prefill_logits(), max_new_tokens=n, pad_token_id=0, processors=procs, **kw).run()


@pytest.mark.parametrize("overrides", [{}, {"rope_parameters": LLAMA3_ROPE, "tie_word_embeddings": False},
                                       {"num_key_value_heads": 4, "attention_bias": True}],
                         ids=["gqa-tied", "llama3-rope-untied", "mha-bias"])
def test_greedy_tokens_equal_hf_generate_on_left_padded_batches(overrides):
    model = tiny_llama(**overrides)
    embeds, mask = left_padded([9, 4, 1], width=9)
    want = hf_greedy(model, embeds, mask, 12)
    got = ours_greedy(StaticRuntime(model), embeds, mask, 12)
    assert len(set(want[0].tolist())) > 3  # the test would be weak if the model repeated one token
    assert torch.equal(got, want)


def test_first_step_logits_match_hf_forward():
    model = tiny_llama()
    embeds, mask = left_padded([7, 3], width=7)
    rt = StaticRuntime(model)
    rt.start(2, 64)
    rt.prefill_chunk(embeds, mask)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        want = model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids).logits[:, -1]
    torch.testing.assert_close(rt.prefill_logits(), want, atol=1e-5, rtol=1e-5)


def test_runtime_is_rebuilt_when_the_model_moves():
    from lw_runtime.runtime import runtime_for

    model = tiny_llama()
    first = runtime_for(model)
    assert runtime_for(model) is first
    model.to(torch.float64)
    assert runtime_for(model) is not first and runtime_for(model).dtype == torch.float64


def test_runtime_follows_blocks_cut_and_restored_like_target_layers():
    from lw_runtime.runtime import runtime_for

    model = tiny_llama(num_hidden_layers=3)
    embeds, mask = left_padded([5, 3], width=5)
    full = runtime_for(model)
    blocks = model.model.layers
    model.model.layers = torch.nn.ModuleList(list(blocks)[:1])  # what --target-layers 1 does
    model.config.num_hidden_layers = 1
    cut = runtime_for(model)
    assert cut is not full and cut.forward.num_layers == 1
    assert torch.equal(ours_greedy(cut, embeds, mask, 6), hf_greedy(model, embeds, mask, 6))
    model.model.layers, model.config.num_hidden_layers = blocks, 3
    assert runtime_for(model).forward.num_layers == 3


def test_fused_weights_give_the_same_tokens_and_leave_the_hf_model_intact():
    model = tiny_llama()
    embeds, mask = left_padded([6, 2], width=6)
    want = hf_greedy(model, embeds, mask, 10)
    fused = copy.deepcopy(model)
    got = ours_greedy(StaticRuntime(fused, fuse_weights=True), embeds, mask, 10)
    assert torch.equal(got, want)
    assert torch.equal(hf_greedy(fused, embeds, mask, 10), want)


def test_chunked_prefill_equals_one_shot():
    """[soft chunk][soft chunk][pad][text] prefilled in pieces == HF on [pad][soft][text] in one go."""
    model = tiny_llama()
    torch.manual_seed(3)
    soft = torch.randn(2, 5, 64) * 0.5
    text, text_mask = left_padded([4, 2], width=4, seed=4)
    rt = StaticRuntime(model)
    rt.start(2, 64)
    for start, stop in ((0, 2), (2, 3), (3, 5)):
        rt.prefill_chunk(soft[:, start:stop])
    rt.prefill_chunk(text, text_mask)
    chunked = DecodeLoop(rt, rt.prefill_logits(), max_new_tokens=8, pad_token_id=0).run()
    # the same rows laid out the HF way: left padding in front of everything
    embeds = torch.zeros(2, 9, 64)
    mask = torch.zeros(2, 9, dtype=torch.long)
    for i, n in enumerate([4, 2]):
        row = torch.cat([soft[i], text[i, 4 - n :]])
        embeds[i, 9 - len(row) :], mask[i, 9 - len(row) :] = row, 1
    assert torch.equal(chunked, hf_greedy(model, embeds, mask, 8))
    assert torch.equal(chunked, ours_greedy(rt, embeds, mask, 8))


def test_prefix_cache_equals_separate_prefills():
    model = tiny_llama()
    torch.manual_seed(5)
    soft = torch.randn(1, 6, 64) * 0.5
    texts, text_mask = left_padded([3, 1, 5], width=5, seed=6)
    rt = StaticRuntime(model)
    prefix = rt.prefill_prefix(soft)
    assert prefix.length == 6 and prefix.nbytes() == 6 * rt.cache.bytes_per_token
    rt.start(3, 64, prefix=prefix)
    rt.prefill_chunk(texts, text_mask)
    shared = DecodeLoop(rt, rt.prefill_logits(), max_new_tokens=8, pad_token_id=0).run()
    for i, n in enumerate([3, 1, 5]):
        row = torch.cat([soft[0], texts[i, 5 - n :]])[None]
        alone = ours_greedy(rt, row, torch.ones(1, row.shape[1], dtype=torch.long), 8)
        assert torch.equal(shared[i : i + 1], alone), i


def test_eos_stops_rows_and_pads_like_hf():
    model = tiny_llama()
    embeds, mask = left_padded([5, 3, 4], width=5)
    free = hf_greedy(model, embeds, mask, 12)
    eos = int(free[0, 3])  # row 0 stops at step 4, other rows when (if) they produce it
    want = hf_greedy(model, embeds, mask, 12, eos_token_id=eos)
    got = ours_greedy(StaticRuntime(model), embeds, mask, 12, eos_token_id=eos, sync_every=5)
    assert torch.equal(got, want)
    assert (got[0, 4:] == 0).all()


PENALTY_LENGTHS = [23, 1, 9, 2]  # left padding of 0, 22, 14 and 21 tokens in a batch of width 23


@pytest.mark.filterwarnings("ignore:Passing `(repetition_penalty|no_repeat_ngram_size)` with `inputs_embeds`")
@pytest.mark.parametrize("kw", [dict(repetition_penalty=1.3), dict(repetition_penalty=1.3, no_repeat_ngram_size=2),
                                dict(repetition_penalty=0.7)], ids=["penalty", "penalty-ngram", "reward"])
def test_repetition_penalty_rows_of_a_padded_batch_equal_their_single_row_output(kw):
    """The penalty sees each row's generated tokens, however much padding the batch gave the row:
    every row equals HF generate on that row alone (no padding), and HF on the batch equals it too
    once given our processor (what generate(runtime="hf") passes; transformers 5.x's own skips a
    padded row's first generated tokens)."""
    from transformers.generation.logits_process import LogitsProcessorList

    from lw_runtime.decode_loop import repetition_penalty_processor

    model = tiny_llama(seed=2)
    width = max(PENALTY_LENGTHS)
    embeds, mask = left_padded(PENALTY_LENGTHS, width=width)
    batched = ours_greedy(StaticRuntime(model), embeds, mask, 16, **kw)
    assert not torch.equal(batched, ours_greedy(StaticRuntime(model), embeds, mask, 16))  # the penalty acts here
    for i, n in enumerate(PENALTY_LENGTHS):
        alone = hf_greedy(model, embeds[i : i + 1, width - n :], torch.ones(1, n, dtype=torch.long), 16, **kw)
        assert torch.equal(batched[i : i + 1], alone), i
        assert torch.equal(ours_greedy(StaticRuntime(model), embeds[i : i + 1, width - n :],
                                       torch.ones(1, n, dtype=torch.long), 16, **kw), alone), i
    ours_in_hf = LogitsProcessorList([repetition_penalty_processor(kw["repetition_penalty"])])
    assert torch.equal(hf_greedy(model, embeds, mask, 16, logits_processor=ours_in_hf, **kw), batched)


def test_sampling_with_a_seeded_generator_is_reproducible():
    model = tiny_llama()
    embeds, mask = left_padded([6, 4], width=6)
    rt = StaticRuntime(model)
    procs = logits_processors(do_sample=True, temperature=0.8, top_p=0.9, top_k=50, repetition_penalty=1.1,
                              no_repeat_ngram_size=0)

    def sample(seed):
        rt.start(2, 64)
        rt.prefill_chunk(embeds, mask)
        gen = torch.Generator().manual_seed(seed)
        return DecodeLoop(rt, rt.prefill_logits(), max_new_tokens=12, pad_token_id=0, processors=procs,
                          do_sample=True, generator=gen).run()

    first = sample(0)
    assert torch.equal(first, sample(0))
    assert not torch.equal(first, sample(1))


def test_unsupported_architecture_raises_and_generate_falls_back(target):
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=len(target.tokenizer))).eval()
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel"):
        StaticRuntime(gpt2)
    wrapped = tiny_llama()
    wrapped.model.layers[1] = torch.nn.Sequential(wrapped.model.layers[1])
    with pytest.raises(UnsupportedModelError, match="not plain Llama layers"):
        StaticRuntime(wrapped)
    small = LoadedModel(model=gpt2, tokenizer=target.tokenizer, name="tiny-gpt2")
    with pytest.raises(UnsupportedModelError):
        lw_runtime.generate(small, texts=["Hello"], max_new_tokens=2, runtime="static")
    assert lw_runtime.generate(small, texts=["Hello"], max_new_tokens=2) == lw_runtime.generate(
        small, texts=["Hello"], max_new_tokens=2, runtime="hf")
    with pytest.raises(ValueError, match="runtime must be one of"):
        lw_runtime.generate(small, texts=["Hello"], runtime="fast")


def test_autocast_around_generation_changes_nothing():
    model = tiny_llama()
    embeds, mask = left_padded([5, 2], width=5)
    want = hf_greedy(model, embeds, mask, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ours_greedy(StaticRuntime(model), embeds, mask, 6)
    assert torch.equal(got, want)


def test_bad_prefill_input_and_full_cache_raise():
    rt = StaticRuntime(tiny_llama())
    rt.start(2, 8)
    with pytest.raises(ValueError, match="expects"):
        rt.prefill_chunk(torch.randn(3, 4, 64))
    with pytest.raises(ValueError, match="mask of shape"):
        rt.prefill_chunk(torch.randn(2, 4, 64), torch.ones(2, 5))
    rt.prefill_chunk(torch.randn(2, 6, 64))
    with pytest.raises(CacheFullError, match="exceed the static cache of 8"):
        rt.prefill_chunk(torch.randn(2, 3, 64))


# ----------------------------------------------------------------------------- the real embedded target (SmolLM2)
SOFT_TEXTS = ["\nAnswer:", "\nQuestion: What is the capital of France?\nAnswer:"]


def soft_tokens(target, batch, k=4, seed=0):
    torch.manual_seed(seed)
    return torch.randn(batch, k, target.hidden_size) * target.embedding_rms()


def test_smollm2_greedy_parity_with_soft_tokens_and_left_padded_text(target):
    soft = soft_tokens(target, 2)
    kw = dict(texts=SOFT_TEXTS, max_new_tokens=8, return_ids=True)
    want = lw_runtime.generate(target, soft, runtime="hf", **kw)
    got = lw_runtime.generate(target, soft, runtime="static", **kw)
    assert torch.equal(got, want)


def test_smollm2_packets_in_any_order_and_shared_prefix(target):
    """Chunks prefilled as they arrive == the decoded message; one soft row serves several texts."""
    soft = soft_tokens(target, 1, k=6, seed=1)
    packets = lw_runtime.encode_soft_tokens(soft, b"\x01" * 8, bits=8, chunk_tokens=2)
    order = packets[:]
    random.Random(0).shuffle(order)
    decoded = lw_runtime.decode(packets)
    got = lw_runtime.generate(target, packets=iter(order), texts=SOFT_TEXTS, max_new_tokens=6)
    assert got == lw_runtime.generate(target, decoded, texts=SOFT_TEXTS, max_new_tokens=6, runtime="hf")
    with pytest.raises(ChunkError, match="incomplete"):
        lw_runtime.generate(target, packets=packets[:-1], texts=SOFT_TEXTS[:1], max_new_tokens=2)


def test_smollm2_stop_strings_match_hf(target):
    kw = dict(texts=["Count: 1, 2, 3,", "List: a, b,"], max_new_tokens=10, stop_strings=[","], return_ids=True)
    assert torch.equal(lw_runtime.generate(target, **kw), lw_runtime.generate(target, runtime="hf", **kw))


def test_stream_pieces_join_to_generate_text(target):
    soft = soft_tokens(target, 1, seed=2)
    pieces = list(stream(target, soft, texts=["\nAnswer:"], max_new_tokens=8))
    assert len(pieces) > 1
    assert "".join(pieces) == lw_runtime.generate(target, soft, texts=["\nAnswer:"], max_new_tokens=8)[0]
    assert "".join(stream(target, soft, texts=["\nAnswer:"], max_new_tokens=8, runtime="hf")) == "".join(pieces)
    with pytest.raises(ValueError, match="one row"):
        list(stream(target, soft_tokens(target, 2), texts=SOFT_TEXTS, max_new_tokens=2))


def test_runtime_options_configure_the_static_runtime(target):
    from lw_runtime.runtime import runtime_for

    soft = soft_tokens(target, 1)
    want = lw_runtime.generate(target, soft, texts=SOFT_TEXTS[:1], max_new_tokens=4)
    got = lw_runtime.generate(target, soft, texts=SOFT_TEXTS[:1], max_new_tokens=4, runtime_options={"max_slots": 3})
    configured = runtime_for(target.model, max_slots=3)
    assert got == want and configured.max_slots == 3
    assert runtime_for(target.model, max_slots=3) is configured  # same options: kept
    assert runtime_for(target.model).max_slots == 2  # no options means the defaults, not the last options
    with pytest.raises(ValueError, match="unknown runtime_options"):
        lw_runtime.generate(target, soft, texts=SOFT_TEXTS[:1], runtime_options={"graphs": True})
    with pytest.raises(ValueError, match="runtime='hf'"):
        lw_runtime.generate(target, soft, texts=SOFT_TEXTS[:1], runtime="hf", runtime_options={"max_slots": 3})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="graph_prefill"):
            lw_runtime.generate(target, soft, texts=SOFT_TEXTS[:1], runtime_options={"graph_prefill": True})
    runtime_for(target.model)  # put the default runtime back for the other tests
