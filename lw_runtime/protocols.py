"""What each side reads under each protocol, built from an explicit allow-list of example fields.

Protocols:
- ``soft_only``: the source reads passage + question; the target sees only the soft tokens and a
  fixed anchor ("Answer:").
- ``context``: the source reads the passage; the target sees the soft tokens and the question as
  text (context compression). Compression ratio = passage tokens / soft tokens.

Source order (``soft_only`` only, where the source reads both fields): ``passage_first`` (the
default, "Passage: ... / Question: ...") or ``question_first``. A causal source reading the question
first can mark the asked fact in the passage's own hidden states; reading it last, only the
question's positions can know which fact is asked. The text baselines keep the passage-first format.

Decisions:
- The target's text is built only from the fields in ``TARGET_FIELDS[protocol]``; the gold answer
  is never among them. Training appends the answer as the teacher-forced continuation, after the
  prompt, and only there.
- Text baselines use the plain "Passage: / Question: / Answer:" format (SmolLM2-135M scored 40% in
  it against 3% in its chat format on 3 codes).
- Answers are extracted strictly: the text the target generates after the anchor, up to the first
  newline, stripped of surrounding punctuation. Nothing scans the output for any matching number.
"""

from __future__ import annotations

import re
import string

PROTOCOLS = ("soft_only", "context")
ANCHOR = "Answer:"
SOURCE_ORDERS = ("passage_first", "question_first")
SOURCE_FIELDS = {"soft_only": ("passage", "question"), "context": ("passage",)}
TARGET_FIELDS = {"soft_only": (), "context": ("question",)}


def _check(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


def check_source_order(order: str, what: str = "source order") -> str:
    """``order`` if it is one of SOURCE_ORDERS, else a ValueError naming ``what`` (the flag or field)."""
    if order not in SOURCE_ORDERS:
        raise ValueError(f"unknown {what} {order!r}; known: {', '.join(SOURCE_ORDERS)}")
    return order


def _join(passage: str, question: str, question_first: bool = False) -> str:
    parts = []
    if passage:
        parts.append(f"Passage: {passage}")
    if question:
        parts.insert(0 if question_first else len(parts), f"Question: {question}")
    return "\n".join(parts)


def source_text(example, protocol: str, order: str = "passage_first") -> str:
    """What the source reads; ``order`` puts the question before or after the passage."""
    _check(protocol)
    check_source_order(order)
    allowed = SOURCE_FIELDS[protocol]
    passage = example.passage if "passage" in allowed else ""
    question = example.question if "question" in allowed else ""
    if protocol == "context" and not passage:
        raise ValueError(f"example {example.id}: the context protocol needs a passage; use soft_only")
    return _join(passage, question, question_first=order == "question_first")


def target_prompt(example, protocol: str) -> str:
    """The text the target reads after the soft tokens."""
    _check(protocol)
    question = example.question if "question" in TARGET_FIELDS[protocol] else ""
    return ("\n" + _join("", question) + "\n" if question else "\n") + ANCHOR


def target_alone_prompt(example, protocol: str) -> str:
    """Target-alone baseline: the same text as the bridge, without soft tokens."""
    return target_prompt(example, protocol).lstrip("\n")


def full_text_prompt(example) -> str:
    """The target reading everything the source reads (text upper bound; the KL teacher's input)."""
    return _join(example.passage, example.question) + "\n" + ANCHOR


def answer_continuation(answer: str) -> str:
    return " " + answer.strip()


def extract_answer(generated: str) -> str:
    """Strict extraction: the first line of what follows the anchor, trimmed of punctuation."""
    line = generated.strip().split("\n", 1)[0].strip()
    return line.strip(string.punctuation + " ")


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(extract_answer(prediction)) == normalize_answer(gold)
