"""Receiver runtime: generation on the static runtime vs HF generate, and prefill of soft tokens vs a text prompt.

Random-weight Llama: SmolLM2-135M's shape on CUDA, a 2-layer 64-wide one on CPU (numbers on CPU
say little). Full GPU measurements with rooflines and memory: benchmarks/gpu_runtime.py.
"""
import pytest
import torch
from harness import DEVICE, ON_CUDA, size
from transformers import LlamaConfig, LlamaForCausalLM

from lw_runtime.decode_loop import DecodeLoop
from lw_runtime.runtime import StaticRuntime, cache_length

NEW_TOKENS = size(64, 16)
SOFT, TEXT = size(64, 16), size(150, 40)


@pytest.fixture(scope="module")
def model():
    shape = size(dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=49152),
                 dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=256))
    torch.manual_seed(0)
    with torch.device(DEVICE):
        m = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=True, max_position_embeddings=2048, **shape))
    return m.to(torch.bfloat16 if ON_CUDA else torch.float32).eval().requires_grad_(False)


def prompt(model, batch, length):
    torch.manual_seed(1)
    return torch.randn(batch, length, model.config.hidden_size, device=DEVICE, dtype=model.dtype) * 0.02


def static_generate(rt, embeds):
    rt.start(embeds.shape[0], cache_length(embeds.shape[1] + NEW_TOKENS))
    rt.prefill_chunk(embeds)
    return DecodeLoop(rt, rt.prefill_logits(), max_new_tokens=NEW_TOKENS, pad_token_id=0).run()


@pytest.mark.parametrize("batch", [1, 4])
def test_static_generate(run, model, batch):
    rt = StaticRuntime(model)
    embeds = prompt(model, batch, 8)
    out = run(static_generate, rt, embeds)
    assert out.shape == (batch, NEW_TOKENS)


def test_hf_generate(run, model):
    embeds = prompt(model, 1, 8)
    kw = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0, eos_token_id=None,
              temperature=None, top_p=None, top_k=None)
    out = run(lambda: model.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], device=DEVICE), **kw))
    assert out.shape == (1, NEW_TOKENS)


@pytest.mark.parametrize("what", ["soft", "text"])
def test_time_to_first_token(run, model, what):
    """Prefill + first logits: K soft tokens vs a longer text prompt (the receiver's saving)."""
    rt = StaticRuntime(model)
    embeds = prompt(model, 1, SOFT if what == "soft" else TEXT)

    def first_token():
        rt.start(1, cache_length(embeds.shape[1] + 1))
        rt.prefill_chunk(embeds)
        return rt.prefill_logits().argmax(-1)

    assert run(first_token).shape == (1,)
