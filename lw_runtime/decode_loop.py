"""The token loop over a ``StaticRuntime``: HF ``generate``'s greedy/sampling and stopping semantics, step by step.

Decisions:
- The logits processors and ``StopStringCriteria`` are HF's own classes applied to our logits, in
  HF's order (repetition penalty, no-repeat n-gram; then temperature, top-k, top-p when sampling),
  with the generated ids as their ``input_ids`` (with ``inputs_embeds`` HF's ids start empty too).
  ``top_k`` defaults to the model's generation config (HF's default 50), as HF sampling does.
- Repetition penalty and no-repeat n-grams see a row's generated tokens only, all of them, so a
  row's output does not depend on how much left padding the batch gave it. transformers 5.x builds
  its penalty with ``prompt_ignore_length`` = the row's padding, which with ``inputs_embeds`` (no
  prompt ids) skips a padded row's first N *generated* tokens: its batched output then differs from
  its own single-row output. Ours equals the single row; ``generate(runtime="hf")`` hands HF this
  same processor (docs/runtime.md, "Repetition penalty and padding").
- Finished rows (EOS or a stop string) emit the pad id, and the loop ends when every row has
  finished or ``max_new_tokens`` are made; output ids are trimmed to where HF would have stopped.
- Nothing syncs with the device per step unless the consumer reads the tokens (streaming): the
  "all finished" test runs every ``sync_every`` steps; steps past the end only make pad ids.
- ``generator`` (a torch.Generator on the model's device) makes sampling reproducible.
"""

from __future__ import annotations

import collections

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


def repetition_penalty_processor(penalty: float) -> RepetitionPenaltyLogitsProcessor:
    """HF's penalty over every id it is given (no ``prompt_ignore_length``): the generated tokens here."""
    return RepetitionPenaltyLogitsProcessor(penalty=float(penalty))


def logits_processors(*, do_sample: bool, temperature: float, top_p: float, top_k: int | None,
                      repetition_penalty: float, no_repeat_ngram_size: int) -> LogitsProcessorList:
    """HF's processors for these arguments, in the order HF's ``generate`` applies them."""
    procs = LogitsProcessorList()
    if repetition_penalty is not None and repetition_penalty != 1.0:
        procs.append(repetition_penalty_processor(repetition_penalty))
    if no_repeat_ngram_size is not None and no_repeat_ngram_size > 0:
        procs.append(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size))
    if do_sample:
        if temperature is not None and temperature != 1.0:
            procs.append(TemperatureLogitsWarper(temperature))
        if top_k is not None and top_k != 0:
            procs.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
        if top_p is not None and top_p < 1.0:
            procs.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return procs


class DecodeLoop:
    """Iterate to get each step's (B,) next tokens (on the model's device); ``ids()`` afterwards."""

    def __init__(self, runtime, first_logits: torch.Tensor, *, max_new_tokens: int, pad_token_id: int,
                 eos_token_id=None, processors: LogitsProcessorList | None = None, do_sample: bool = False,
                 stop_criteria=None, generator: torch.Generator | None = None, sync_every: int = 16):
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        self.runtime, self.first_logits = runtime, first_logits
        self.max_new_tokens, self.pad = max_new_tokens, int(pad_token_id)
        eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        device = first_logits.device
        self.eos = torch.tensor(eos, dtype=torch.long, device=device)
        self.processors = processors or LogitsProcessorList()
        self.do_sample, self.stop_criteria, self.generator = do_sample, stop_criteria, generator
        self.sync_every = sync_every
        b = first_logits.shape[0]
        self.generated = torch.full((b, max_new_tokens), self.pad, dtype=torch.long, device=device)
        self.alive = torch.ones(max_new_tokens, dtype=torch.bool, device=device)
        self.steps = 0

    def __iter__(self):
        logits = self.first_logits
        unfinished = torch.ones(self.generated.shape[0], dtype=torch.bool, device=self.generated.device)
        for step in range(self.max_new_tokens):
            scores = self.processors(self.generated[:, :step], logits.clone()) if self.processors else logits
            if self.do_sample:
                probs = torch.softmax(scores, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
            else:
                nxt = scores.argmax(-1)
            nxt = torch.where(unfinished, nxt, torch.full_like(nxt, self.pad))
            self.generated[:, step] = nxt
            done = torch.isin(nxt, self.eos)
            if self.stop_criteria is not None:
                done = done | self.stop_criteria(self.generated[:, : step + 1], scores).to(done.device)
            unfinished = unfinished & ~done
            self.alive[step] = unfinished.any()
            self.steps = step + 1
            yield nxt
            if step + 1 == self.max_new_tokens:
                break
            if (step + 1) % self.sync_every == 0 and not bool(self.alive[step]):
                break
            logits = self.runtime.decode_step(nxt)

    def ids(self) -> torch.Tensor:
        """(B, n) generated ids, n = the step at which HF would have stopped."""
        alive = self.alive[: self.steps]
        stopped = (~alive).nonzero()
        n = int(stopped[0]) + 1 if len(stopped) else self.steps
        return self.generated[:, :n]

    def run(self) -> torch.Tensor:
        collections.deque(self, maxlen=0)  # run every step; the tokens are kept in self.generated
        return self.ids()
