"""One-process training of a translator between a frozen source and a frozen target LLM.

Flow per step: source states (cached once per example, the source is frozen) -> translator ->
soft tokens -> target with the protocol's prompt and the teacher-forced answer -> loss
(answer CE [+ teacher KL] [+ InfoNCE]) -> AdamW step (gates: 3x LR, no decay). Every
``eval_every`` steps the validation accuracy is measured by greedy generation and strict answer
extraction; the best translator is kept and restored at the end (early stopping with patience).
The held-out test split is read once, at the end, for bridged and target-alone accuracy.

FSDP across processes is a separate issue; this module is what ``train.fsdp`` runs in one process.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from lw_runtime.data import load_task
from lw_runtime.generate import generate
from lw_runtime.leakage import check_disjoint, check_target_inputs
from lw_runtime.models import load_model
from lw_runtime.protocols import (
    answer_continuation,
    exact_match,
    full_text_prompt,
    source_text,
    target_alone_prompt,
    target_prompt,
)
from lw_runtime.source import encode_source
from lw_runtime.translator import BottleneckedGatedTranslator, TranslatorConfig

from . import losses
from .config import TrainConfig


def resolve_device(cfg: TrainConfig) -> tuple[torch.device, torch.dtype]:
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else ("cpu" if cfg.device == "auto" else cfg.device))
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    return device, dtype


def truncate_blocks(loaded, keep: int):
    """Keep the first ``keep`` decoder blocks of a model (same weights, fewer layers); returns a
    function that puts the removed blocks back."""
    if keep <= 0:
        return lambda: None
    decoder = loaded.model.base_model
    if keep > len(decoder.layers):
        raise ValueError(f"--target-layers {keep} exceeds the target's {len(decoder.layers)} blocks")
    text_cfg = loaded.model.config.get_text_config()
    saved = (decoder.layers, text_cfg.num_hidden_layers, getattr(text_cfg, "layer_types", None))
    decoder.layers = nn.ModuleList(list(decoder.layers)[:keep])
    text_cfg.num_hidden_layers = keep
    if saved[2]:
        text_cfg.layer_types = saved[2][:keep]

    def restore():
        decoder.layers, text_cfg.num_hidden_layers = saved[0], saved[1]
        if saved[2]:
            text_cfg.layer_types = saved[2]

    return restore


def build_translator(cfg: TrainConfig, source, target) -> BottleneckedGatedTranslator:
    overrides = {
        k: v
        for k, v in dict(num_soft_tokens=cfg.tokens, depth=cfg.depth, num_heads=cfg.heads, bottleneck_dim=cfg.bottleneck).items()
        if v
    }
    tcfg = TranslatorConfig.preset(
        cfg.preset,
        source_dim=source.hidden_size,
        target_dim=target.hidden_size,
        source_layer=cfg.source_layer,
        dropout=cfg.dropout,
        rms_match=cfg.rms_match,
        query_init_std=cfg.query_init_std,
        gate_init=cfg.gate_init,
        target_rms=target.embedding_rms(),
        source_model=cfg.source,
        target_model=cfg.target,
        **overrides,
    )
    return BottleneckedGatedTranslator(tcfg)


class SourceCache:
    """Source states per example id, computed once in batches (the source is frozen)."""

    def __init__(self, source, layer: int, max_tokens: int, protocol: str, enabled: bool = True):
        self.source, self.layer, self.max_tokens, self.protocol, self.enabled = source, layer, max_tokens, protocol, enabled
        self.store: dict[str, torch.Tensor] = {}

    def _encode(self, examples):
        states = encode_source(self.source, [source_text(e, self.protocol) for e in examples], self.layer, self.max_tokens)
        return [states.hidden[i][states.mask[i]] for i in range(len(examples))]

    def fill(self, examples, batch_size: int = 64):
        if not self.enabled:
            return
        todo = [e for e in examples if e.id not in self.store]
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            for e, h in zip(chunk, self._encode(chunk)):
                self.store[e.id] = h

    def batch(self, examples, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.enabled:
            missing = [e for e in examples if e.id not in self.store]
            self.fill(missing)
            rows = [self.store[e.id] for e in examples]
        else:
            rows = self._encode(examples)
        width = max(r.shape[0] for r in rows)
        hidden = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, r in enumerate(rows):  # left padding, like the tokenizer
            hidden[i, width - r.shape[0] :] = r
            mask[i, width - r.shape[0] :] = True
        return hidden.to(device), mask.to(device)


def param_groups(translator, extra: list[nn.Parameter], cfg: TrainConfig):
    gates = set(id(p) for p in translator.gate_parameters()) if cfg.gate_lr_boost else set()
    decay, no_decay, gate = [], [], []
    for name, p in translator.named_parameters():
        if id(p) in gates:
            gate.append(p)
        elif p.dim() < 2 or name == "queries":
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay + extra, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr},
    ]
    if gate:
        groups.append({"params": gate, "weight_decay": 0.0, "lr": cfg.gate_lr_mult * cfg.lr})
    for g in groups:
        g["base_lr"] = g["lr"]
    return groups


def lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate_bridge(translator, cache, target, examples, protocol, batch_size=32, max_new_tokens=8, device="cpu"):
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
    translator.train()
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


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


_MODELS: dict = {}


def shared_models(cfg: TrainConfig, device, dtype):
    """Load (or reuse, within one process: sweeps and tests) the frozen source and target."""
    key = (cfg.source, cfg.target, str(device), str(dtype))
    if key not in _MODELS:
        _MODELS.clear()
        _CACHES.clear()  # the caches hold the old source model
        _MODELS[key] = (load_model(cfg.source, dtype=dtype, device=device), load_model(cfg.target, dtype=dtype, device=device))
    return _MODELS[key]


_CACHES: dict = {}


def shared_cache(cfg: TrainConfig, source) -> "SourceCache":
    key = (id(source), cfg.source_layer, cfg.max_source_tokens, cfg.protocol, cfg.cache_source)
    if key not in _CACHES:
        _CACHES[key] = SourceCache(source, cfg.source_layer, cfg.max_source_tokens, cfg.protocol, cfg.cache_source)
    return _CACHES[key]


def train(cfg: TrainConfig, return_models: bool = False):
    """Train and evaluate; returns the summary dict (also written to ``out_dir/summary.json``).

    With ``return_models`` it returns ``(summary, translator, source, target)`` and the summary
    carries the test examples under ``_test_examples`` (not written to disk)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)  # CPU: denormals in the frozen target's backward cost 10x per step
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device, dtype = resolve_device(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    source, target = shared_models(cfg, device, dtype)
    restore_target = truncate_blocks(target, cfg.target_layers)
    try:
        summary, translator, test_set = _train(cfg, source, target, device, t0)
    finally:
        restore_target()
    if return_models:
        return {**summary, "_test_examples": test_set}, translator, source, target
    return summary


def _train(cfg: TrainConfig, source, target, device, t0) -> tuple:
    out = Path(cfg.out_dir)
    translator = build_translator(cfg, source, target).to(device)
    translator.check_compatible(source.hidden_size, target.hidden_size)

    train_set = load_task(cfg.task, "train", cfg.train_examples, seed=cfg.seed)
    eval_task = cfg.eval_task or cfg.task
    # answers are compared only within one task family: an arithmetic result that happens to
    # equal a relay-QA age is no leak
    same_family = eval_task.split(":")[0] == cfg.task.split(":")[0] or {eval_task, cfg.task} <= {"relay_code", "relay_qa"}
    compare_answers = same_family and eval_task.startswith("relay")
    val_set = load_task(eval_task, "validation", cfg.val_examples, seed=cfg.seed)
    test_set = load_task(eval_task, "test", cfg.test_examples, seed=cfg.seed)
    check_disjoint(train_set, val_set + test_set, compare_answers=compare_answers)
    check_disjoint(val_set, test_set, compare_answers=eval_task.startswith("relay"))
    cache = shared_cache(cfg, source)
    cache.fill(train_set + val_set + test_set)
    setup_s = time.time() - t0

    calib = train_set[: min(len(train_set), 512)]
    translator.calibrate_source(*cache.batch(calib, device))
    projection = nn.Linear(source.hidden_size, target.hidden_size, bias=False).to(device)
    extra = list(projection.parameters()) if cfg.infonce else []
    optimizer = torch.optim.AdamW(param_groups(translator, extra, cfg), betas=(0.9, 0.98))
    log = (out / "metrics.jsonl").open("a")
    rng = random.Random(cfg.seed)
    order: list = []
    best = {"acc": -1.0, "step": 0, "state": None}
    history, bad_evals, step = [], 0, 0

    try:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, disable=not cfg.progress, desc="train", dynamic_ncols=True)
    except ImportError:  # tqdm is a dependency; this only guards odd installs
        bar = None
    translator.train()
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:
            fresh = list(range(len(train_set)))
            rng.shuffle(fresh)
            order.extend(fresh)
        batch = [train_set[order.pop()] for _ in range(cfg.batch_size)]
        hidden, mask = cache.batch(batch, device)
        soft = translator(hidden, mask)
        answers = [answer_continuation(e.answer) for e in batch]
        logits, labels = losses.answer_logits(target, losses.student_inputs(target, soft, [target_prompt(e, cfg.protocol) for e in batch], answers))
        ce = losses.answer_cross_entropy(logits, labels)
        loss = ce
        parts = {"ce": ce.item()}
        if cfg.kl_teacher:
            kl = losses.teacher_kl(logits, losses.teacher_logits(target, [full_text_prompt(e) for e in batch], answers))
            loss = loss + cfg.kl_weight * kl
            parts["kl"] = kl.item()
        if cfg.infonce and step >= cfg.warmup // 2:
            nce = losses.info_nce(soft, losses.pooled_source(hidden, mask), projection)
            loss = loss + cfg.infonce_weight * nce
            parts["infonce"] = nce.item()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}: {parts}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            parts["grad_norm"] = float(nn.utils.clip_grad_norm_(translator.parameters(), cfg.grad_clip))
        factor = lr_factor(step, cfg)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        optimizer.step()
        record = {"step": step + 1, "loss": float(loss), **parts, "lr": cfg.lr * factor, "time_s": round(time.time() - t0, 2)}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            acc, _ = evaluate_bridge(translator, cache, target, val_set, cfg.protocol, max_new_tokens=cfg.max_new_tokens, device=device)
            record["val_acc"] = acc
            record["soft_cosine"] = losses.mean_pairwise_cosine(soft.detach())
            history.append((step + 1, acc))
            if acc > best["acc"]:
                best = {"acc": acc, "step": step + 1, "state": copy.deepcopy(translator.state_dict())}
                translator.save_pretrained(out / "best")
                bad_evals = 0
            else:
                bad_evals += 1
        log.write(json.dumps(record) + "\n")
        log.flush()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", val=record.get("val_acc", ""))
        if cfg.early_stopping and bad_evals >= cfg.patience:
            break
    if bar is not None:
        bar.close()
    log.close()
    train_s = time.time() - t0 - setup_s
    final_val = history[-1][1] if history else float("nan")
    if cfg.early_stopping and best["state"] is not None:
        translator.load_state_dict(best["state"])

    for e in test_set:
        check_target_inputs(e, {"prompt": target_prompt(e, cfg.protocol)})
    test_acc, test_out = evaluate_bridge(translator, cache, target, test_set, cfg.protocol, max_new_tokens=cfg.max_new_tokens, device=device)
    alone_acc, alone_out = evaluate_text(target, test_set, [target_alone_prompt(e, cfg.protocol) for e in test_set], max_new_tokens=cfg.max_new_tokens)
    translator.save_pretrained(out / "translator")
    summary = {
        "config": asdict(cfg),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "steps_run": step + 1,
        "best_val_acc": best["acc"],
        "best_step": best["step"],
        "final_val_acc": final_val,
        "test_bridged_acc": test_acc,
        "test_target_alone_acc": alone_acc,
        "test_examples": len(test_set),
        "num_soft_tokens": translator.config.num_soft_tokens,
        "setup_s": round(setup_s, 1),
        "train_s": round(train_s, 1),
        "samples": {"bridged": test_out[:5], "target_alone": alone_out[:5], "gold": [e.answer for e in test_set[:5]]},
    }
    if cfg.baselines:
        from .evaluate import evaluate_all

        summary["evaluation"] = evaluate_all(cfg, translator, source, target, cache, val_set, test_set, cfg.relay_tokens, device)
    summary["history"] = history
    _atomic_json(out / "summary.json", summary)
    return summary, translator, test_set
