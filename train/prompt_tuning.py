"""The trained-text baseline: the target reads the passage (and question) as text with K trained
soft-prompt tokens in front (prompt tuning, Lester et al. 2021), trained on the same data, steps,
batch and learning-rate schedule as the bridge.

Why: the bridge is trained on the task, the text baselines are not. "bridge / tuned text" separates
how much of the passage the latents retain from "the translator was trained on the task".

Decisions:
- Same flags and splits as ``python -m train.fsdp`` (one parser, ``load_splits``); the QA loss alone
  (the bridge's auxiliary losses have no counterpart here); its final prompt is scored, where the
  bridge keeps its best validation checkpoint. ``--tokens`` is the prompt length K (the
  preset's when 0). The prompt is K free vectors initialised like the translator's output (random
  directions at the RMS of the target's embedding table); AdamW with the bridge's learning rate,
  weight decay, warmup and cosine decay; no InfoNCE (no source), no early stopping (fixed budget).
- The target reads [BOS][K prompt tokens]["Passage: … / Question: … / Answer:"] — the text upper
  bound's plain format — and is teacher-forced on the answer; held-out test accuracy by greedy
  generation and strict extraction, exactly as the bridge is scored, with the leak guard on.
Usage: ``python -m train.prompt_tuning --task relay_qa:4 --steps 1000 --out-dir DIR [train.fsdp flags]``
writes ``DIR/prompt_tuning.json``.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from lw_runtime.generate import generate
from lw_runtime.protocols import answer_continuation, exact_match, full_text_prompt
from lw_runtime.translator import PRESETS

from . import losses
from .config import TrainConfig, check_config, parse_args
from .leakage import check_target_inputs
from .loop import atomic_json, load_splits, lr_factor, matmul_precision, next_batch, process_settings, resolve_device
from .source_cache import shared_models, truncate_blocks


def prompt_text(example) -> str:
    """What the target reads after the trained prompt: the whole passage and question as text."""
    return "\n" + full_text_prompt(example)


def train_prompt(cfg: TrainConfig) -> dict:
    check_config(cfg)
    if cfg.all_questions:
        raise ValueError("--all-questions changes what one step trains on; prompt tuning trains one question per passage")
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device, dtype = resolve_device(cfg)
    with contextlib.ExitStack() as scope:  # puts back threads, denormal flushing, matmul precision and the target's blocks
        scope.enter_context(process_settings(cfg))
        precision = scope.enter_context(matmul_precision(cfg, device, dtype))
        t0 = time.time()
        _, target = shared_models(cfg, device, dtype)
        scope.callback(truncate_blocks(target, cfg.target_layers))
        train_set, _, test_set = load_splits(cfg)  # the bridge's own splits and disjointness checks
        k = cfg.tokens or PRESETS[cfg.preset]["num_soft_tokens"]
        rms = target.embedding_rms()
        init = torch.randn(k, target.hidden_size, device=device)
        prompt = torch.nn.Parameter(init / init.pow(2).mean(-1, keepdim=True).sqrt() * rms)
        optimizer = torch.optim.AdamW([prompt], lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
        rng = random.Random(cfg.seed)
        order: list[int] = []
        curve = []
        for step in range(cfg.steps):
            batch = next_batch(train_set, order, rng, cfg.batch_size)  # the bridge's own order for this seed
            soft = prompt.unsqueeze(0).expand(len(batch), -1, -1)
            inputs = losses.student_inputs(target, soft, [prompt_text(e) for e in batch],
                                           [answer_continuation(e.answer) for e in batch])
            logits, labels = losses.answer_logits(target, inputs)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([prompt], cfg.grad_clip)
            for g in optimizer.param_groups:
                g["lr"] = cfg.lr * lr_factor(step, cfg)
            optimizer.step()
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                curve.append((step + 1, float(loss.detach())))
        train_s = time.time() - t0
        for e in test_set:
            # the passage states the answer, as in the text upper bound; nothing else may
            check_target_inputs(e, {"passage": e.passage, "question": e.question}, ("passage",))
        outputs = []
        with torch.no_grad():
            for i in range(0, len(test_set), 32):
                chunk = test_set[i : i + 32]
                soft = prompt.detach().unsqueeze(0).expand(len(chunk), -1, -1)
                outputs += generate(target, soft, texts=[prompt_text(e) for e in chunk], max_new_tokens=cfg.max_new_tokens)
    correct = [exact_match(o, e.answer) for o, e in zip(outputs, test_set)]
    summary = {
        "method": "prompt_tuning", "config": asdict(cfg), "soft_prompt_tokens": k,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "test_examples": len(test_set), "test_acc": sum(correct) / max(1, len(correct)),
        "train_s": round(train_s, 1), "matmul_precision": precision, "loss_curve": curve,
        "samples": {"outputs": outputs[:5], "gold": [e.answer for e in test_set[:5]]},
        "correct": correct,
    }
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_json(out / "prompt_tuning.json", summary)
    return summary


def main(argv=None) -> int:
    cfg = parse_args(argv, prog="python -m train.prompt_tuning")
    summary = train_prompt(cfg)
    print(f"prompt tuning ({summary['soft_prompt_tokens']} tokens + the passage as text), {cfg.task}: "
          f"held-out test {100 * summary['test_acc']:.1f}% of {summary['test_examples']}; {cfg.out_dir}/prompt_tuning.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
