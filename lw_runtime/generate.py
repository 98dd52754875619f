"""``lw_runtime.generate``: HF ``generate`` semantics, with soft tokens in front of the target's text.

First version: builds ``inputs_embeds`` (left padding) = [soft tokens][target text] and calls the
target's own ``generate``. The fast runtime (static KV cache, CUDA graphs, streaming packets) is its
own issue and keeps this signature.

Inputs: either ``soft_tokens`` (B, K, D) or ``translator`` + ``source`` + ``source_texts``; and
optional ``texts`` (one per row) that the target reads after the soft tokens. ``streamer`` is
passed to HF ``generate`` (``TextIteratorStreamer`` gives the text as it is generated). Soft tokens with NaN
or Inf, or of the wrong width, raise a ``SoftTokenError`` naming the problem.
"""

from __future__ import annotations

import torch

from .models import LoadedModel
from .source import encode_source


class SoftTokenError(ValueError):
    """Soft tokens that cannot be fed to the target (wrong shape, NaN or Inf)."""


def check_soft_tokens(soft_tokens: torch.Tensor, target_dim: int) -> None:
    if not torch.is_tensor(soft_tokens) or soft_tokens.dim() != 3:
        raise SoftTokenError(f"soft tokens must be a (batch, K, dim) tensor, got {getattr(soft_tokens, 'shape', type(soft_tokens))}")
    if soft_tokens.shape[-1] != target_dim:
        raise SoftTokenError(f"soft tokens have width {soft_tokens.shape[-1]}, the target's embeddings {target_dim}")
    if not torch.isfinite(soft_tokens).all():
        bad = (~torch.isfinite(soft_tokens)).sum().item()
        raise SoftTokenError(f"soft tokens contain {bad} NaN/Inf values")


def bos_prefix(tokenizer) -> list[int]:
    """[BOS] when the tokenizer puts one in front of every text (Gemma, Llama), else [] (SmolLM2)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if ids and ids[0] == bos else []


def build_inputs(
    target: LoadedModel,
    soft_tokens: torch.Tensor | None,
    texts: list[str] | None,
    batch_size: int,
    continuations: list[str] | None = None,
    padding_side: str = "left",
) -> dict:
    """inputs_embeds / attention_mask / position_ids / labels for rows of
    [BOS if the tokenizer uses one][soft tokens][text][continuation + EOS], padded on one side.

    ``continuations`` (training only) are the teacher-forced answers; ``labels`` holds their ids
    (and EOS) at their own positions and -100 everywhere else.
    """
    tok = target.tokenizer
    device = target.device
    emb_layer = target.model.get_input_embeddings()
    texts = texts if texts is not None else [""] * batch_size
    if len(texts) != batch_size:
        raise ValueError(f"got {len(texts)} texts for a batch of {batch_size}")
    k = 0 if soft_tokens is None else soft_tokens.shape[1]
    prefix = bos_prefix(tok)
    rows = []  # (ids before the soft tokens, ids after them, labels of the ids after them)
    for i in range(batch_size):
        after = tok(texts[i], add_special_tokens=False)["input_ids"] if texts[i] else []
        labels = [-100] * len(after)
        if continuations is not None:
            answer = tok(continuations[i], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            after, labels = after + answer, labels + answer
        rows.append((prefix, after, labels))
    lengths = [len(p) + k + len(a) for p, a, _ in rows]
    width = max(lengths)
    if width == 0:
        raise ValueError("nothing for the target to read: no soft tokens and empty texts")
    ids = torch.full((batch_size, width), tok.pad_token_id, dtype=torch.long)
    is_soft = torch.zeros(batch_size, width, dtype=torch.bool)
    mask = torch.zeros(batch_size, width, dtype=torch.long)
    lab = torch.full((batch_size, width), -100, dtype=torch.long)
    for i, ((pre, after, labels), n) in enumerate(zip(rows, lengths)):
        start = width - n if padding_side == "left" else 0
        pos = start + len(pre)
        ids[i, start:pos] = torch.tensor(pre, dtype=torch.long)
        is_soft[i, pos : pos + k] = True
        ids[i, pos + k : start + n] = torch.tensor(after, dtype=torch.long)
        lab[i, pos + k : start + n] = torch.tensor(labels, dtype=torch.long)
        mask[i, start : start + n] = 1
    embeds = emb_layer(ids.to(device))
    if soft_tokens is not None:
        soft = soft_tokens.to(device=device, dtype=embeds.dtype)
        embeds = embeds.masked_scatter(is_soft.to(device).unsqueeze(-1), soft)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "inputs_embeds": embeds,
        "attention_mask": mask.to(device),
        "position_ids": position_ids.to(device),
        "labels": lab.to(device),
    }


def generate(
    target: LoadedModel,
    soft_tokens: torch.Tensor | None = None,
    *,
    translator=None,
    source: LoadedModel | None = None,
    source_texts: list[str] | None = None,
    texts: list[str] | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    stop_strings: list[str] | None = None,
    eos_token_id: int | list[int] | None = None,
    source_max_tokens: int = 512,
    return_ids: bool = False,
    streamer=None,
):
    """Generate from soft tokens (and optional target text); returns the decoded new text per row."""
    if soft_tokens is None and translator is not None:
        if source is None or source_texts is None:
            raise ValueError("generate with a translator needs `source` and `source_texts`")
        translator.check_compatible(source.hidden_size, target.hidden_size)
        states = encode_source(source, source_texts, translator.config.source_layer, source_max_tokens)
        with torch.no_grad():
            soft_tokens = translator(states.hidden.to(next(translator.parameters()).device), states.mask.to(next(translator.parameters()).device))
    if soft_tokens is not None:
        check_soft_tokens(soft_tokens, target.hidden_size)
        batch = soft_tokens.shape[0]
    elif texts is not None:
        batch = len(texts)
    else:
        raise ValueError("generate needs soft tokens, a translator with source texts, or texts")
    with torch.no_grad():
        inputs = build_inputs(target, soft_tokens, texts, batch)
        kwargs = dict(
            inputs_embeds=inputs["inputs_embeds"],
            attention_mask=inputs["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            pad_token_id=target.tokenizer.pad_token_id,
            eos_token_id=eos_token_id if eos_token_id is not None else target.tokenizer.eos_token_id,
        )
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if stop_strings:
            kwargs.update(stop_strings=stop_strings, tokenizer=target.tokenizer)
        if streamer is not None:  # e.g. transformers.TextIteratorStreamer(target.tokenizer, skip_prompt=True)
            kwargs.update(streamer=streamer)
        out = target.model.generate(**kwargs)
    if return_ids:
        return out
    return target.tokenizer.batch_decode(out, skip_special_tokens=True)
