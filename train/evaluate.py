"""Every baseline in one run, on the same test examples, with the leak guard on for each.

Methods (each a list of outputs for the same examples, scored by ``train.metrics``):
- ``target_alone``: the target with the protocol's text and no soft tokens.
- ``text_upper``: the target reads everything the source reads.
- ``token_budget``: the target reads the source's text truncated to K target tokens.
- ``source_alone``: the source answers itself from the full text.
- ``text_relay``: the source writes a message of at most ``relay_tokens`` tokens; the target reads
  it (+ the protocol's text). Its wall time per example is measured.
- ``bridge_fp16`` / ``bridge_int8`` / ``bridge_int6`` / ``bridge_int4``: soft tokens through the
  real group-wise codec of ``lw_kernels`` (quantize -> packed bytes -> dequantize) before the target.

Diagnostics beside them: first-token entropy (bridge vs text), soft-token RMS vs the target's embedding
RMS, mean pairwise cosine of the soft tokens (collapse), compression, and the spelled fraction (of the
(slot, answer token) pairs the spelling loss pulls, how many soft tokens have that token as their
nearest target embedding: whether the bridge hands over the answer's form).

Prompt formats for the text baselines (``plain`` "Passage/Question/Answer:" and the target's
``chat`` template) are chosen on the validation split, then fixed before the test split is read.
"""

from __future__ import annotations

import time

import torch

import lw_kernels
from lw_runtime.generate import build_inputs, generate
from lw_runtime.protocols import ANCHOR, answer_continuation, full_text_prompt, source_text, target_alone_prompt, target_prompt
from lw_runtime.wire import message_bytes

from .leakage import check_target_inputs
from .losses import mean_pairwise_cosine, spelled_fraction
from .metrics import entropy, summarize

FORMATS = ("plain", "chat")
BITS = (16, 8, 6, 4)


def _chat(target, body: str) -> str:
    tok = target.tokenizer
    if not getattr(tok, "chat_template", None):
        raise ValueError("no chat template")
    return tok.apply_chat_template([{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True)


def format_prompt(target, fmt: str, body: str) -> str:
    """``body`` ends with the anchor ("Answer:"); the chat format moves it into the user turn."""
    if fmt == "plain":
        return body
    return _chat(target, body[: -len(ANCHOR)].rstrip() + "\nAnswer with the answer only.")


def _batched(fn, items, batch_size):
    out = []
    for i in range(0, len(items), batch_size):
        out += fn(items[i : i + batch_size])
    return out


def truncate_to_tokens(tokenizer, text: str, k: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:k]
    return tokenizer.decode(ids)


def text_method_prompts(method: str, e, protocol, target, k: int) -> tuple[str, dict, tuple]:
    """(prompt body ending in the anchor, the guarded fields, the fields allowed to hold the answer)."""
    if method == "target_alone":
        body = target_alone_prompt(e, protocol)
        return body, {"prompt": body}, ()
    if method == "text_upper":
        return full_text_prompt(e), {"passage": e.passage, "question": e.question}, ("passage",)
    if method == "token_budget":
        cut = truncate_to_tokens(target.tokenizer, source_text(e, protocol), k)
        body = cut + target_prompt(e, protocol)
        return body, {"passage": cut, "question": target_prompt(e, protocol)}, ("passage",)
    raise ValueError(method)


def run_text_method(method, examples, protocol, target, k, fmt, max_new_tokens, batch_size=32):
    prompts = []
    for e in examples:
        body, fields, allowed = text_method_prompts(method, e, protocol, target, k)
        check_target_inputs(e, fields, allowed)
        prompts.append(format_prompt(target, fmt, body))
    return _batched(lambda p: generate(target, texts=p, max_new_tokens=max_new_tokens), prompts, batch_size)


def choose_format(method, val, protocol, target, k, max_new_tokens) -> tuple[str, dict]:
    scores = {}
    for fmt in FORMATS:
        try:
            outs = run_text_method(method, val, protocol, target, k, fmt, max_new_tokens)
        except ValueError:
            continue
        scores[fmt] = summarize(outs, [e.answer for e in val])["accuracy"]
    return max(scores, key=scores.get), scores


def relay_messages(source, examples, relay_tokens: int, batch_size=32) -> tuple[list[str], float]:
    """The source writes a short message (greedy, <= relay_tokens) for the target."""
    prompts = [full_text_prompt(e)[: -len(ANCHOR)] + "Key fact for answering, in a few words:" for e in examples]
    start = time.perf_counter()
    msgs = _batched(lambda p: generate(source, texts=p, max_new_tokens=relay_tokens), prompts, batch_size)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    per_example = (time.perf_counter() - start) / max(1, len(examples))
    return [m.strip().split("\n")[0] for m in msgs], per_example


def quantize_soft(soft: torch.Tensor, bits: int, group_size: int = 32) -> torch.Tensor:
    if bits >= 16:
        return soft.to(torch.float16).to(soft.dtype)
    packed, scales = lw_kernels.quantize(soft.float().contiguous(), bits, group_size)
    return lw_kernels.dequantize(packed, scales, bits, group_size, dim=soft.shape[-1], dtype=soft.dtype)


@torch.no_grad()
def first_token_entropy(target, soft, texts) -> float:
    inputs = build_inputs(target, soft, texts, len(texts))
    logits = target.model(inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"], position_ids=inputs["position_ids"]).logits
    return entropy(logits[:, -1])


@torch.no_grad()
def evaluate_all(cfg, translator, source, target, cache, val, test, relay_tokens: int = 16, device="cpu") -> dict:
    """All methods on ``test`` (formats chosen on ``val``); returns a JSON-ready dict."""
    translator.eval()
    started = time.perf_counter()

    def progress(what):
        print(f"[evaluate] {what} done at {time.perf_counter() - started:.1f}s", flush=True)

    k = translator.config.num_soft_tokens
    golds = [e.answer for e in test]
    results, formats = {}, {}
    for method in ("target_alone", "text_upper", "token_budget"):
        fmt, scores = choose_format(method, val, cfg.protocol, target, k, cfg.max_new_tokens)
        formats[method] = {"chosen": fmt, "validation_accuracy": scores}
        results[method] = summarize(run_text_method(method, test, cfg.protocol, target, k, fmt, cfg.max_new_tokens), golds)
        progress(method)

    src_prompts = [full_text_prompt(e) for e in test]
    results["source_alone"] = summarize(_batched(lambda p: generate(source, texts=p, max_new_tokens=cfg.max_new_tokens), src_prompts, 32), golds)

    progress("source_alone")
    msgs, relay_s = relay_messages(source, test, relay_tokens)
    relay_prompts = []
    for e, m in zip(test, msgs):
        tp = target_prompt(e, cfg.protocol)
        check_target_inputs(e, {"relay_message": m, "prompt": tp}, ("relay_message",))
        relay_prompts.append(f"Message: {m}{tp}")
    results["text_relay"] = summarize(_batched(lambda p: generate(target, texts=p, max_new_tokens=cfg.max_new_tokens), relay_prompts, 32), golds)
    results["text_relay"]["source_message_s_per_example"] = relay_s
    progress("text_relay")

    hidden, mask = cache.batch(test, device)
    soft = torch.cat([translator(hidden[i : i + 64], mask[i : i + 64]) for i in range(0, len(test), 64)])
    prompts = [target_prompt(e, cfg.protocol) for e in test]
    for e, p in zip(test, prompts):
        check_target_inputs(e, {"prompt": p})
    for bits in BITS:
        name = f"bridge_{'fp16' if bits == 16 else f'int{bits}'}"
        q = quantize_soft(soft, bits)
        outs = []
        for i in range(0, len(test), 32):
            outs += generate(target, q[i : i + 32], texts=prompts[i : i + 32], max_new_tokens=cfg.max_new_tokens)
        results[name] = summarize(outs, golds)
        results[name]["wire_bytes_per_example"] = message_bytes(1, k, soft.shape[-1], bits if bits < 16 else 16)
        if bits == 16:
            results[name]["samples"] = outs[:5]
        progress(name)

    n_diag = min(64, len(test))
    text_bodies = [full_text_prompt(e) for e in test[:n_diag]]
    diagnostics = {
        "first_token_entropy_bridge": first_token_entropy(target, soft[:n_diag], prompts[:n_diag]),
        "first_token_entropy_text_upper": first_token_entropy(target, None, text_bodies),
        "soft_token_rms": float(soft.float().pow(2).mean(-1).sqrt().mean()),
        "target_embedding_rms": target.embedding_rms(),
        "soft_mean_pairwise_cosine": mean_pairwise_cosine(soft),
        "spelled_fraction": spelled_fraction(target, soft, [answer_continuation(g) for g in golds]),
        "passage_utf8_bytes_mean": sum(len(e.passage.encode("utf-8")) for e in test) / len(test),
        "passage_tokens_mean": sum(len(target.tokenizer(e.passage, add_special_tokens=False)["input_ids"]) for e in test) / len(test),
        "soft_tokens": k,
    }
    diagnostics["compression_ratio"] = diagnostics["passage_tokens_mean"] / k
    return {"methods": results, "formats": formats, "diagnostics": diagnostics, "gold_samples": golds[:5]}
