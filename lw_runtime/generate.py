"""``lw_runtime.generate``: HF ``generate`` semantics, with soft tokens in front of the target's text.

First version: builds ``inputs_embeds`` (left padding) = [soft tokens][target text] and calls the
target's own ``generate``. The fast runtime (static KV cache, CUDA graphs, streaming packets) is its
own issue and keeps this signature.

Inputs: either ``soft_tokens`` (B, K, D) or ``translator`` + ``source`` + ``source_texts``; and
optional ``texts`` (one per row) that the target reads after the soft tokens. Soft tokens with NaN
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


def build_inputs(
    target: LoadedModel,
    soft_tokens: torch.Tensor | None,
    texts: list[str] | None,
    batch_size: int,
    continuations: list[str] | None = None,
    padding_side: str = "left",
) -> dict:
    """inputs_embeds / attention_mask for rows of [soft][text][continuation] with padding.

    ``continuations`` (training only) are appended after the text and their token positions are
    returned as ``labels`` (-100 elsewhere) and the answer's ids appended with EOS.
    """
    tok = target.tokenizer
    device = target.device
    emb_layer = target.model.get_input_embeddings()
    texts = texts if texts is not None else [""] * batch_size
    if len(texts) != batch_size:
        raise ValueError(f"got {len(texts)} texts for a batch of {batch_size}")
    rows, labels = [], []
    for i in range(batch_size):
        prompt_ids = tok(texts[i], add_special_tokens=False)["input_ids"] if texts[i] else []
        label_ids = []
        if continuations is not None:
            label_ids = tok(continuations[i], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append(prompt_ids + label_ids)
        labels.append([-100] * len(prompt_ids) + label_ids)
    k = 0 if soft_tokens is None else soft_tokens.shape[1]
    width = k + max(len(r) for r in rows)
    if width == 0:
        raise ValueError("nothing for the target to read: no soft tokens and empty texts")
    pad_id = tok.pad_token_id
    ids = torch.full((batch_size, width - k), pad_id, dtype=torch.long)
    mask = torch.zeros(batch_size, width, dtype=torch.long)
    lab = torch.full((batch_size, width), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        if padding_side == "left":
            start = width - k - n
            ids[i, start:] = torch.tensor(row, dtype=torch.long) if n else ids[i, start:]
            mask[i, start:] = 1
            lab[i, start + k :] = torch.tensor(labels[i], dtype=torch.long) if n else lab[i, start + k :]
        else:
            ids[i, :n] = torch.tensor(row, dtype=torch.long) if n else ids[i, :n]
            mask[i, : k + n] = 1
            lab[i, k : k + n] = torch.tensor(labels[i], dtype=torch.long) if n else lab[i, k : k + n]
    text_embeds = emb_layer(ids.to(device))
    if soft_tokens is None:
        embeds = text_embeds
    else:
        soft = soft_tokens.to(device=device, dtype=text_embeds.dtype)
        if padding_side == "left":
            # left padding: [pads][soft][text]; the pads sit in front of the soft tokens
            embeds = torch.empty(batch_size, width, text_embeds.shape[-1], device=device, dtype=text_embeds.dtype)
            for i, row in enumerate(rows):
                start = width - k - len(row)
                embeds[i, :start] = text_embeds[i, :start]
                embeds[i, start : start + k] = soft[i]
                embeds[i, start + k :] = text_embeds[i, start:]
                mask[i, start : start + k] = 1
        else:
            embeds = torch.cat([soft, text_embeds], dim=1)
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
        out = target.model.generate(**kwargs)
    if return_ids:
        return out
    return target.tokenizer.batch_decode(out, skip_special_tokens=True)
