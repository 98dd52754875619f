"""Reading the frozen source LLM: hidden states of one chosen layer, nothing computed past it.

Decisions:
- ``layer`` counts like transformers' ``hidden_states``: 0 is the embedding output, ``i`` the output
  of block ``i``; negative values count from the end (-1 = the last block, before the final norm).
- The forward pass stops right after that block (a forward hook raises), so a middle layer costs
  only the blocks below it.
- Runs under ``torch.inference_mode``: the source is frozen and nothing flows back into it.
- Texts are tokenized with left padding; the mask returned is True on real tokens. Empty texts are
  rejected; texts over ``max_tokens`` are truncated from the left (the end of a prompt, where the
  question sits, is kept) — documented behaviour, not silent: the count is returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .models import LoadedModel


class _StopForward(Exception):
    """Raised by the forward hook once the chosen layer has run: nothing above it is computed."""


class EmptyTextError(ValueError):
    """A text to encode is empty or only whitespace."""


@dataclass
class SourceStates:
    hidden: torch.Tensor  # (B, T, D) float
    mask: torch.Tensor  # (B, T) bool, True = real token
    num_truncated: int = 0


def _blocks(model: torch.nn.Module):
    inner = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    return inner.layers


def resolve_layer(num_layers: int, layer: int) -> int:
    resolved = layer if layer >= 0 else num_layers + 1 + layer
    if not 0 <= resolved <= num_layers:
        raise ValueError(f"source layer {layer} is out of range for a model with {num_layers} blocks")
    return resolved


def tokenize_texts(tokenizer, texts: list[str], max_tokens: int, device) -> tuple[dict, int]:
    if isinstance(texts, str):
        texts = [texts]
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise EmptyTextError(f"text {i} is empty; the source needs something to read")
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        full = tokenizer(texts, add_special_tokens=True)["input_ids"]
        num_truncated = sum(len(ids) > max_tokens for ids in full)
        batch = tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=max_tokens
        )
    finally:
        tokenizer.truncation_side = side
    return {k: v.to(device) for k, v in batch.items()}, num_truncated


def encode_source(
    source: LoadedModel, texts: list[str], layer: int = -1, max_tokens: int = 512, runtime=None
) -> SourceStates:
    """Hidden states of ``layer`` for a batch of texts. ``runtime``: the source's StaticRuntime (a
    Llama-family source) reads them with ``hidden_states`` on its static cache (graphed with
    ``graph_prefill=True``) instead of the HF forward; positions then count real tokens only."""
    batch, num_truncated = tokenize_texts(source.tokenizer, texts, max_tokens, source.device)
    resolved = resolve_layer(source.num_layers, layer)
    mask = batch["attention_mask"].bool()
    if runtime is not None:
        hidden = runtime.hidden_states(source.embed(batch["input_ids"]), mask, resolved)
        return SourceStates(hidden=hidden.float(), mask=mask, num_truncated=num_truncated)
    captured = {}

    def grab(_module, _args, output):
        captured["hidden"] = output[0] if isinstance(output, tuple) else output
        raise _StopForward

    if resolved == 0:
        handle = source.model.get_input_embeddings().register_forward_hook(grab)
    else:
        handle = _blocks(source.model)[resolved - 1].register_forward_hook(grab)
    try:
        with torch.inference_mode():
            source.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    except _StopForward:
        pass  # expected: the hook stopped the forward pass after the chosen layer
    finally:
        handle.remove()
    # Clone outside inference mode: the translator trains on these and autograd may save them.
    hidden = captured["hidden"].float().clone()
    return SourceStates(hidden=hidden, mask=mask, num_truncated=num_truncated)
