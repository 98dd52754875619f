"""Random-weight Llama-family models shaped like real ones, for tests and throughput benchmarks.

Decisions:
- One byte-level tokenizer (256 byte tokens + pad/EOS/BOS, built with ``tokenizers``, no download)
  serves every shape: throughput and memory depend on the model's shape, not on its vocabulary's
  contents, and the token ids it emits (< 259) are valid in every vocabulary here. Byte tokens make
  prompts longer than a real tokenizer would (about 3-4x), which benchmarks state.
- ``build_random`` builds on the target device in the target dtype (``torch.device`` context) and
  draws weights with one ``normal_(0, 0.02)`` per tensor; nothing is materialised on the CPU first.
- ``save_random`` writes a tiny model + tokenizer folder so tests go through ``load_model`` like a
  real checkpoint would.
"""

from __future__ import annotations

from pathlib import Path

import torch

PAD, EOS, BOS = "<|pad|>", "<|eos|>", "<|bos|>"

# Published shapes (config.json of each model); vocab and RoPE as released.
SHAPES: dict[str, dict] = {
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192),
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32768, rope_theta=1000000.0, max_position_embeddings=8192),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0, max_position_embeddings=8192),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=260, max_position_embeddings=1024),
    "tiny-wide": dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=260, max_position_embeddings=1024),
}


def byte_tokenizer():
    """A byte-level BPE with no merges: every UTF-8 byte is one token; ids 256/257/258 = pad/EOS/BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for token in (PAD, EOS, BOS):
        vocab[token] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([PAD, EOS, BOS])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, bos_token=BOS)
    tok.padding_side = "left"
    return tok


def llama_config(shape: str, **overrides):
    from transformers import LlamaConfig

    tok_ids = dict(pad_token_id=256, eos_token_id=257, bos_token_id=258)
    return LlamaConfig(**{**SHAPES[shape], **tok_ids, "tie_word_embeddings": False, **overrides})


@torch.no_grad()
def build_random(shape: str, device="cpu", dtype=torch.bfloat16, seed: int = 0, **overrides):
    """A frozen ``LoadedModel`` with random weights of a named shape, built directly on ``device``."""
    from transformers import LlamaForCausalLM

    from lw_runtime.models import LoadedModel, fix_tokenizer

    config = llama_config(shape, **overrides)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        else:
            p.normal_(0.0, 0.02, generator=gen)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 256, 257
    model.eval().requires_grad_(False)
    return LoadedModel(model=model, tokenizer=fix_tokenizer(byte_tokenizer()), name=f"random:{shape}")


def save_random(path: str | Path, shape: str = "tiny", seed: int = 0, **overrides) -> str:
    """Save a random-weight model of ``shape`` with the byte tokenizer (fp32) to ``path``; returns it."""
    loaded = build_random(shape, dtype=torch.float32, seed=seed, **overrides)
    loaded.model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    return str(path)
