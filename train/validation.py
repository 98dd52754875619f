"""Validation and test scoring by greedy generation and strict answer extraction.

Decisions: accuracy is exact match of the first answer line (``lw_runtime.protocols.exact_match``);
under torchrun each rank scores an equal contiguous share and the counts are summed, so every rank
gets the same figure; with a sharded target every rank keeps stepping until all are done.
"""

from __future__ import annotations

import math

import torch

from lw_runtime.generate import generate
from lw_runtime.protocols import exact_match, target_prompt

from .distributed import DistContext


@torch.no_grad()
def evaluate_bridge(translator, cache, target, examples, protocol, batch_size=32, max_new_tokens=8, device="cpu"):
    was_training = translator.training
    translator.eval()
    correct, outputs = 0, []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        hidden, mask = cache.batch(chunk, device)
        soft = translator(hidden, mask)
        texts = generate(target, soft, texts=[target_prompt(e, protocol) for e in chunk], max_new_tokens=max_new_tokens)
        for e, t in zip(chunk, texts):
            outputs.append(t)
            correct += exact_match(t, e.answer)
    translator.train(was_training)
    return correct / max(1, len(examples)), outputs


@torch.no_grad()
def evaluate_text(target, examples, prompts, batch_size=32, max_new_tokens=8):
    correct, outputs = 0, []
    for i in range(0, len(examples), batch_size):
        texts = generate(target, texts=prompts[i : i + batch_size], max_new_tokens=max_new_tokens)
        for e, t in zip(examples[i : i + batch_size], texts):
            outputs.append(t)
            correct += exact_match(t, e.answer)
    return correct / max(1, len(examples)), outputs


def greedy_texts(target, soft, prompts, max_new_tokens, synced: bool) -> list[str]:
    """``lw_runtime.generate`` (greedy); with a sharded target every rank keeps stepping until all
    are done (HF ``synced_gpus``), since each forward all-gathers the blocks' weights."""
    if not synced:
        return generate(target, soft, texts=prompts, max_new_tokens=max_new_tokens)
    from lw_runtime.generate import build_inputs

    with torch.no_grad():
        batch = len(prompts)
        inputs = build_inputs(target, soft, prompts, batch)
        tok = target.tokenizer
        out = target.model.generate(
            inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"], max_new_tokens=max_new_tokens,
            do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id, synced_gpus=True,
        )
    return tok.batch_decode(out, skip_special_tokens=True)


@torch.no_grad()
def evaluate_sharded(ctx: DistContext, examples, run_chunk, batch_size: int = 32) -> tuple[float, list[str]]:
    """Each rank scores an equal contiguous share (the last one padded by repeating the final
    example, not scored, so every rank runs the same number of batches); correct counts are summed
    over ranks and the outputs gathered in order on every rank."""
    n = len(examples)
    per = math.ceil(n / ctx.world)
    start = ctx.rank * per
    mine = examples[start : start + per]
    real = len(mine)
    padded = mine + [examples[-1]] * (per - real) if n else []
    outputs = []
    for i in range(0, per, batch_size):
        outputs += run_chunk(padded[i : i + batch_size])
    outputs = outputs[:real]
    correct = sum(exact_match(t, e.answer) for t, e in zip(outputs, mine))
    total = ctx.all_reduce_sum([float(correct)])[0]
    gathered = ctx.gather_objects(outputs)
    return total / max(1, n), [t for part in gathered for t in part]
