"""Reconstruction objective: the target, reading only the soft tokens and a fixed instruction, is
trained teacher-forced to regenerate the text the source read, every token supervised.

Why: the answer cross-entropy supervises one short answer per passage, so early in training the
translator gets no usable gradient until it happens onto the asked fact (the bistable onset), and
later nothing forces the passage's other facts through the bottleneck. Regenerating the source's
text supervises every token of it from the first step.

Decisions:
- The text regenerated is exactly what the source read (``lw_runtime.protocols.source_text``): the
  passage in ``context``, passage and question in ``soft_only``, in the run's source order. It is
  the source's input, never the answer alone, so the target is taught to read the latents, not to
  emit answers; the gold answer appears only because the passage states it, as it does for the
  source.
- The instruction (``RECON_PROMPT``) is a fixed string after the soft tokens, distinct from the QA
  anchor ("Answer:"), so the two tasks do not share a prompt.
- Validation (``reconstruction_metrics``): teacher-forced token accuracy, the share of passages
  regenerated exactly by greedy decoding, and fact recall — the share of the passage's facts whose
  value appears verbatim in the greedy regeneration.
"""

from __future__ import annotations

import re

import torch

from lw_runtime.generate import build_inputs, generate
from lw_runtime.protocols import source_text

from . import losses

RECON_PROMPT = "\nRepeat the text:"


def reconstruction_targets(examples, protocol: str, order: str) -> list[str]:
    """The teacher-forced continuation of each row: a space, then the text its source read."""
    return [" " + source_text(e, protocol, order) for e in examples]


def reconstruction_logits(target, soft_tokens, examples, protocol: str, order: str):
    """(logits at the labelled positions, labels) of the teacher-forced regeneration."""
    texts = reconstruction_targets(examples, protocol, order)
    inputs = build_inputs(target, soft_tokens, [RECON_PROMPT] * len(examples), len(examples), continuations=texts,
                          padding_side="right")
    return losses.answer_logits(target, inputs)


def appears(value: str, text: str) -> bool:
    """``value`` occurs in ``text`` verbatim and delimited (not "48" inside "4821" or "Bern" in "Bernard")."""
    return re.search(r"(?<![A-Za-z0-9])" + re.escape(value) + r"(?![A-Za-z0-9])", text) is not None


def fact_values(example) -> list[str]:
    """The values a passage states: every fact of a relay-QA passage, else the answer alone."""
    facts = example.meta.get("facts") if example.meta else None
    values = [value for _, _, value in facts] if facts else [example.answer]
    return [v for v in values if v.strip()]  # an unanswerable question (SQuAD v2) states no fact


@torch.no_grad()
def reconstruction_metrics(target, translator, cache, examples, protocol: str, order: str, device,
                           batch_size: int = 32, synced_gpus: bool = False) -> dict:
    """Token accuracy (teacher-forced), exact regenerations and fact recall (greedy) on ``examples``."""
    was_training = translator.training
    translator.eval()
    correct = total = exact = recalled = facts = 0
    try:
        for i in range(0, len(examples), batch_size):
            chunk = examples[i : i + batch_size]
            hidden, mask = cache.batch(chunk, device)
            soft = translator(hidden, mask)
            logits, labels = reconstruction_logits(target, soft, chunk, protocol, order)
            correct += int(logits.argmax(-1).eq(labels).sum())
            total += labels.numel()
            wanted = [t.strip() for t in reconstruction_targets(chunk, protocol, order)]
            longest = max(len(target.tokenizer(w, add_special_tokens=False)["input_ids"]) for w in wanted)
            outputs = generate(target, soft, texts=[RECON_PROMPT] * len(chunk), max_new_tokens=longest + 4,
                               synced_gpus=synced_gpus)
            for out, want, example in zip(outputs, wanted, chunk):
                exact += out.strip() == want
                values = fact_values(example)
                recalled += sum(appears(value, out) for value in values)
                facts += len(values)
    finally:
        translator.train(was_training)
    n = max(1, len(examples))
    return {"recon_token_acc": correct / max(1, total), "recon_exact": exact / n, "fact_recall": recalled / max(1, facts)}
