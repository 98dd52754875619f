"""The leak guard: no gold answer in any text the target reads, except where the method needs it.

The original study's 81.5% GSM8K came from feeding the target ``prompt + gold solution`` and then
pulling the gold number out of degenerate output. Here every text the target receives is built
from named fields, and the guard is called on those fields before every test-split generation
(bridge, target alone, text upper bound, token budget, text relay; not on validation passes, the
source's own prompts or the teacher-forced training inputs, whose answer continuation is the label):

- ``check_target_inputs(example, fields, allowed)``: raises ``AnswerLeakError`` when the normalised
  gold answer occurs (as whole words) in any field not in ``allowed``. Only text baselines that
  *read the passage by design* allow ``passage`` (relay-QA answers are spans of it), and the text
  relay allows ``relay_message`` (what the source chose to say). The gold answer, the solution and
  anything derived from them are never fields.
- ``check_disjoint(train, evaluation)``: raises ``SplitOverlapError`` when an evaluation example
  shares an id, a passage+question pair, or (for synthetic tasks) an answer with training.
"""

from __future__ import annotations

import re

from .protocols import normalize_answer


class LeakageError(AssertionError):
    """Evaluation would be contaminated; the message says how."""


class AnswerLeakError(LeakageError):
    """The gold answer is in a text the target would read."""


class SplitOverlapError(LeakageError):
    """An evaluation example also occurs in training (id, passage+question, or answer)."""


def _contains(haystack: str, needle: str) -> bool:
    needle = normalize_answer(needle)
    if not needle:
        return False
    return re.search(r"(?<!\S)" + re.escape(needle) + r"(?!\S)", normalize_answer(haystack)) is not None


def check_target_inputs(example, fields: dict[str, str], allowed: tuple[str, ...] = ()) -> None:
    for name, text in fields.items():
        if name in allowed or not text:
            continue
        if _contains(text, example.answer):
            raise AnswerLeakError(
                f"example {example.id}: the gold answer {example.answer!r} appears in the target's "
                f"field {name!r} ({text[:80]!r}...); only {allowed or 'no fields'} may hold it"
            )


def check_disjoint(train, evaluation, compare_answers: bool = True) -> None:
    train_ids = {e.id for e in train}
    train_pairs = {(e.passage, e.question) for e in train}
    train_answers = {normalize_answer(e.answer) for e in train} if compare_answers else set()
    for e in evaluation:
        if e.id in train_ids:
            raise SplitOverlapError(f"evaluation example {e.id} is also a training example")
        if (e.passage, e.question) in train_pairs:
            raise SplitOverlapError(f"evaluation example {e.id} repeats a training passage and question")
        if compare_answers and normalize_answer(e.answer) in train_answers:
            raise SplitOverlapError(f"evaluation example {e.id}: answer {e.answer!r} was seen in training")
