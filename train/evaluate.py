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

import argparse
import contextlib
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch

import lw_kernels
from lw_runtime.generate import build_inputs, generate
from lw_runtime.protocols import ANCHOR, answer_continuation, full_text_prompt, source_text, target_alone_prompt, target_prompt
from lw_runtime.translator import CONFIG_NAME
from lw_runtime.wire import message_bytes

from .config import TrainConfig, check_config
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
def evaluate_all(cfg, translator, source, target, cache, val, test, relay_tokens: int = 16, device="cpu",
                 text_baselines: bool = True) -> dict:
    """All methods on ``test`` (formats chosen on ``val``); returns a JSON-ready dict. Without
    ``text_baselines`` only the bridge rows (fp16 and through the codec) and the diagnostics."""
    translator.eval()
    started = time.perf_counter()

    def progress(what):
        print(f"[evaluate] {what} done at {time.perf_counter() - started:.1f}s", flush=True)

    k = translator.config.num_soft_tokens
    golds = [e.answer for e in test]
    results, formats = {}, {}
    if text_baselines:
        _text_baselines(cfg, source, target, val, test, k, relay_tokens, results, formats, progress)
    hidden, mask = cache.batch(test, device)
    soft = torch.cat([translator(hidden[i : i + 64], mask[i : i + 64]) for i in range(0, len(test), 64)])
    prompts = [target_prompt(e, cfg.protocol) for e in test]
    for e, p in zip(test, prompts):
        check_target_inputs(e, {"prompt": p})
    _bridge_rows(cfg, target, soft, prompts, golds, results, progress)
    return {"methods": results, "formats": formats, "diagnostics": _diagnostics(target, soft, prompts, test),
            "gold_samples": golds[:5]}


def _text_baselines(cfg, source, target, val, test, k, relay_tokens, results, formats, progress) -> None:
    golds = [e.answer for e in test]
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


def _bridge_rows(cfg, target, soft, prompts, golds, results, progress) -> None:
    """bridge_fp16 / int8 / int6 / int4: the soft tokens through the real codec, then the target."""
    k = soft.shape[1]
    for bits in BITS:
        name = f"bridge_{'fp16' if bits == 16 else f'int{bits}'}"
        q = quantize_soft(soft, bits)
        outs = []
        for i in range(0, len(prompts), 32):
            outs += generate(target, q[i : i + 32], texts=prompts[i : i + 32], max_new_tokens=cfg.max_new_tokens)
        results[name] = summarize(outs, golds)
        results[name]["wire_bytes_per_example"] = message_bytes(1, k, soft.shape[-1], bits if bits < 16 else 16)
        if bits == 16:
            results[name]["samples"] = outs[:5]
        progress(name)


def _diagnostics(target, soft, prompts, test) -> dict:
    k = soft.shape[1]
    golds = [e.answer for e in test]
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
    return diagnostics


# ---- python -m train.evaluate RUN: score a finished run's saved translator again ----

class NotARunError(ValueError):
    """The folder is not a finished ``train.fsdp`` run (no summary.json with a config, or no translator)."""


def read_summary(run_dir: Path) -> dict:
    """A finished run's summary.json, with the config it trained with (``NotARunError`` otherwise)."""
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise NotARunError(f"{run_dir} is not a finished train.fsdp run: {summary_path} is missing")
    summary = json.loads(summary_path.read_text())
    if not isinstance(summary.get("config"), dict):
        raise NotARunError(f"{summary_path} has no 'config' section: not written by train.fsdp")
    return summary


def run_config(summary: dict, overrides: dict) -> tuple[TrainConfig, list[str]]:
    """The TrainConfig a run trained with (``read_summary``), with ``overrides`` (model paths, device,
    threads) applied; also the names of recorded fields this version no longer has (ignored)."""
    recorded = summary["config"]
    known = {f.name for f in fields(TrainConfig)}
    dropped = sorted(set(recorded) - known)
    cfg = TrainConfig(**{k: v for k, v in recorded.items() if k in known})
    # where the run started from (a curriculum's previous stage, on the machine it trained on) does not
    # change its test split or its saved translator
    cfg.init_from = ""
    for name, value in overrides.items():
        if value is not None:
            setattr(cfg, name, value)
    return cfg, dropped


class SplitMismatchError(ValueError):
    """The test split rebuilt today from a run's recorded config is not the one the run was scored on
    (a task generator or a default changed since the run's commit)."""


def _check_same_split(run_dir: Path, summary: dict, test_set: list) -> None:
    """The rebuilt test split has the run's size and its first gold answers (summary.json keeps five)."""
    want_n, want_golds = summary.get("test_examples"), (summary.get("samples") or {}).get("gold")
    got_golds = [e.answer for e in test_set[: len(want_golds or [])]]
    if want_n != len(test_set) or (want_golds is not None and got_golds != want_golds):
        raise SplitMismatchError(
            f"{run_dir}: the test split rebuilt from its config is not the run's ({len(test_set)} examples, first "
            f"answers {got_golds}; the run had {want_n}, {want_golds}); score it at the run's commit")


def evaluate_run(run_dir: str | Path, text_baselines: bool = True, **overrides) -> dict:
    """Score ``run_dir``'s saved translator (``RUN/translator``: the weights its test pass used) on the
    run's own test split, rebuilt from its recorded config and seed, with the leak guard on. Writes
    ``RUN/evaluation.json`` (a previous one moves to ``evaluation.prev.json``; summary.json is left as
    it is) and returns its content."""
    from lw_runtime.translator import BottleneckedGatedTranslator

    from .loop import atomic_json, load_splits, matmul_precision, process_settings, resolve_device
    from .source_cache import shared_cache, shared_models, truncate_blocks

    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    cfg, dropped = run_config(summary, overrides)
    if not (run_dir / "translator" / CONFIG_NAME).is_file():
        raise NotARunError(f"{run_dir} has no saved translator ({run_dir / 'translator' / CONFIG_NAME} is missing)")
    check_config(cfg)
    device, dtype = resolve_device(cfg)
    with contextlib.ExitStack() as scope, process_settings(cfg), matmul_precision(cfg, device, dtype):
        source, target = shared_models(cfg, device, dtype)
        scope.callback(truncate_blocks(target, cfg.target_layers))
        _, val_set, test_set = load_splits(cfg)
        _check_same_split(run_dir, summary, test_set)
        cache = shared_cache(cfg, source)
        cache.fill(val_set + test_set)
        translator = BottleneckedGatedTranslator.from_pretrained(run_dir / "translator").to(device)
        result = evaluate_all(cfg, translator, source, target, cache, val_set, test_set, cfg.relay_tokens, device,
                              text_baselines=text_baselines)
    result["run"] = {
        "dir": str(run_dir), "test_examples": len(test_set), "ignored_config_fields": dropped,
        "test_bridged_acc_of_the_run": summary.get("test_bridged_acc"), "device": str(device) if device.type == "cpu"
        else torch.cuda.get_device_name(device), "text_baselines": text_baselines,
    }
    out = run_dir / "evaluation.json"
    if out.exists():
        out.replace(run_dir / "evaluation.prev.json")
    atomic_json(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.evaluate",
        description="Score a finished train.fsdp run's saved translator again on its own test split: the bridge "
                    "in fp16 and through the INT8/6/4 codec, and (unless --bridge-only) every text baseline. "
                    "Writes RUN/evaluation.json.")
    parser.add_argument("run", help="the run's --out-dir (summary.json and translator/ in it)")
    parser.add_argument("--bridge-only", action="store_true", help="only the bridge rows and diagnostics (no text baselines)")
    parser.add_argument("--source", help="the source model (default: the path the run recorded)")
    parser.add_argument("--target", help="the target model (default: the path the run recorded)")
    parser.add_argument("--device", help="cpu, cuda or auto (default: the run's)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    try:
        result = evaluate_run(args.run, text_baselines=not args.bridge_only, source=args.source, target=args.target,
                              device=args.device, threads=args.threads)
    except ValueError as exc:  # NotARunError, SplitMismatchError, a recorded config today's checks refuse
        parser.error(str(exc))
    run = result["run"]
    print(f"{args.run}: {run['test_examples']} test examples on {run['device']}")
    for name, row in result["methods"].items():
        print(f"  {name:<13} {100 * row['accuracy']:5.1f}%")
    recorded = run["test_bridged_acc_of_the_run"]
    if recorded is not None:
        print(f"  the run's own test pass (unquantized): {100 * recorded:.1f}%")
    if run["ignored_config_fields"]:
        print(f"  recorded config fields this version does not have (ignored): {', '.join(run['ignored_config_fields'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
