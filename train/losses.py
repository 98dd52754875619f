"""Training losses: answer cross-entropy through the frozen target, teacher KL, InfoNCE anti-collapse.

Decisions:
- Gradients flow through the frozen target into the soft tokens; only the positions that predict
  answer tokens go through the LM head (the vocabulary projection is the costliest matmul and the
  other positions carry no loss).
- The teacher is the same target reading the full text the bridge replaces, with the same answer
  continuation teacher-forced after it; the gold answer is never in its prompt.
- The spelling loss (``--spell-weight``, off by default) pulls soft token i toward the target's
  input embedding of the answer's i-th token (cosine, for the first min(answer tokens, K) soft
  tokens): the bridge then hands the target the answer's *form* in the target's own embedding space,
  which it can copy, where the answer cross-entropy alone lets a near word of the same meaning pass
  for an unseen value (" fox" for ferret). It reads only training answers, like the cross-entropy.
- InfoNCE pairs each example's mean-pooled soft tokens with its own mean-pooled (normalised) source
  states against the rest of the batch: soft tokens that collapse to one vector for every input
  cannot pick out their own source, so this loss rises exactly when the original study's collapse
  sets in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lw_runtime.generate import build_inputs


def answer_logits(target, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the positions that predict a labelled token, and those labels."""
    labels = inputs["labels"]
    base = target.model.base_model
    hidden = base(
        inputs_embeds=inputs["inputs_embeds"],
        attention_mask=inputs["attention_mask"],
        position_ids=inputs["position_ids"],
        use_cache=False,
    ).last_hidden_state
    shifted = labels[:, 1:]
    select = shifted != -100
    logits = target.model.get_output_embeddings()(hidden[:, :-1][select])
    softcap = getattr(target.model.config.get_text_config(), "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits.float(), shifted[select]


def labelled_token_count(tokenizer, continuations: list[str], token_ids=None) -> int:
    """Labelled tokens ``build_inputs`` makes for these teacher-forced continuations (ids + EOS each).
    ``token_ids``: a callable texts -> id lists to use instead of the tokenizer (the captured step's cache)."""
    if token_ids is not None:
        ids = token_ids(continuations)
    else:
        ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    return sum(len(i) + 1 for i in ids)


def student_inputs(target, soft_tokens, prompts, answers):
    return build_inputs(target, soft_tokens, prompts, len(prompts), continuations=answers, padding_side="right")


def answer_cross_entropy(logits, labels) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


@torch.no_grad()
def teacher_logits(target, teacher_prompts, answers) -> torch.Tensor:
    inputs = build_inputs(target, None, teacher_prompts, len(teacher_prompts), continuations=answers, padding_side="right")
    logits, _ = answer_logits(target, inputs)
    return logits


def teacher_kl(student_logits, teacher_logits_, temperature: float = 1.0) -> torch.Tensor:
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits_ / t, -1), log_target=True, reduction="batchmean"
    ) * (t * t)


def _spelling_pairs(target, soft_tokens: torch.Tensor, answers: list[str]):
    """(example index, soft slot, target token id) of every pulled pair: slot j of an example against
    the j-th token of its answer (tokenized as the target continues it), for j < min(len, K)."""
    k = soft_tokens.shape[1]
    rows, slots, ids = [], [], []
    for b, answer in enumerate(answers):
        tokens = target.tokenizer(answer, add_special_tokens=False)["input_ids"][:k]
        rows += [b] * len(tokens)
        slots += range(len(tokens))
        ids += tokens
    device = soft_tokens.device
    return tuple(torch.tensor(x, dtype=torch.long, device=device) for x in (rows, slots, ids))


def spelling_loss(target, soft_tokens: torch.Tensor, answers: list[str]) -> tuple[torch.Tensor, int]:
    """(sum of 1 - cos(soft token i, target embedding of answer token i), number of pairs) over the
    first min(len(answer ids), K) soft tokens of each example; answers are tokenized as the target
    continues them (leading space, no special tokens). The embeddings are frozen targets."""
    rows, slots, ids = _spelling_pairs(target, soft_tokens, answers)
    if not len(ids):
        return soft_tokens.sum() * 0.0, 0
    with torch.no_grad():
        goal = target.embed(ids).float()
    picked = soft_tokens[rows, slots].float()
    return (1.0 - F.cosine_similarity(picked, goal, dim=-1)).sum(), len(ids)


@torch.no_grad()
def spelled_fraction(target, soft_tokens: torch.Tensor, answers: list[str], chunk: int = 8192) -> float:
    """Of the pairs ``spelling_loss`` pulls, the fraction whose soft token's nearest target input
    embedding (cosine, whole vocabulary) is that answer token: whether the bridge hands the target the
    answer's form (a diagnostic; near 0 without ``--spell-weight``, where slots are not laid out so).
    The vocabulary is scanned in chunks of ``chunk`` rows, so a 128k x 4096 table is never held in fp32."""
    rows, slots, ids = _spelling_pairs(target, soft_tokens, answers)
    if not len(ids):
        return float("nan")
    picked = F.normalize(soft_tokens[rows, slots].float(), dim=-1)
    best = torch.full((len(ids),), -2.0, device=picked.device)
    nearest = torch.zeros(len(ids), dtype=torch.long, device=picked.device)
    vocab = target.model.get_input_embeddings().num_embeddings
    for start in range(0, vocab, chunk):
        block = target.embed(torch.arange(start, min(start + chunk, vocab), device=picked.device))
        score, index = (picked @ F.normalize(block.float(), dim=-1).T).max(-1)
        better = score > best  # strict: the first of equal scores wins, as argmax over the whole table
        best, nearest = torch.where(better, score, best), torch.where(better, index + start, nearest)
    return int(nearest.eq(ids).sum()) / len(ids)


def info_nce(soft_tokens, source_pooled, projection, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE between pooled soft tokens and projected pooled source states (positives on the diagonal)."""
    if soft_tokens.shape[0] < 2:
        return soft_tokens.new_zeros(())
    z = F.normalize(soft_tokens.float().mean(1), dim=-1)
    s = F.normalize(projection(source_pooled.float()), dim=-1)
    logits = z @ s.t() / temperature
    return F.cross_entropy(logits, torch.arange(z.shape[0], device=z.device))


def pooled_source(hidden, mask) -> torch.Tensor:
    """Mean over real tokens of per-token RMS-normalised source states (massive activations tamed)."""
    h = hidden.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
    m = mask.unsqueeze(-1).float()
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


def mean_pairwise_cosine(soft_tokens) -> float:
    """Collapse detector: mean cosine between different inputs' pooled soft tokens (1.0 = collapsed)."""
    z = F.normalize(soft_tokens.float().flatten(1), dim=-1)
    n = z.shape[0]
    if n < 2:
        return float("nan")
    sim = z @ z.t()
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))
