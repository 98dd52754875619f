"""The leak guard: no gold answer in any text the target reads, except where the method needs it.

The original study's 81.5% GSM8K came from feeding the target ``prompt + gold solution`` and then
pulling the gold number out of degenerate output. Here every text the target receives is built
from named fields, and the guard is called on those fields before every test-split generation
(bridge, target alone, text upper bound, token budget, text relay; not on validation passes, the
source's own prompts or the teacher-forced training inputs, whose answer continuation is the label):

- ``check_target_inputs(example, fields, allowed)``: raises ``AnswerLeakError`` when the gold
  answer occurs in any field not in ``allowed``. Only text baselines that *read the passage by
  design* allow ``passage`` (relay-QA answers are spans of it), and the text relay allows
  ``relay_message`` (what the source chose to say). The gold answer, the solution and anything
  derived from them are never fields.
- ``check_disjoint(train, evaluation)``: raises ``SplitOverlapError`` when an evaluation example
  shares an id, a passage+question pair, or (for synthetic tasks) an answer with training.

Matching contract (``leak_tokens``; scoring keeps SQuAD's ``protocols.normalize_answer``, which
deletes punctuation and would glue "x=37" into "x37"): text is NFKC-normalised and case-folded,
then split into tokens, each a run of letters or a number, delimited by ANY other character (space,
punctuation, "=", ":", "/", "<<", "#", a letter/digit change), so "Answer:4821", "x=37", "37/37",
"<<19-12=7>>7" and "37km" all hold their number. A number is digits with optional ".digits" parts
("3.7" is one token, never 3 and 7; a sentence-final "37." is 37), thousands commas removed
("4,821" is 4821) and trailing fractional zeros dropped ("2.50" is 2.5, "7.0" is 7); signs are
ignored ("-5" holds 5). Articles (a, an, the) are dropped, as in SQuAD. The gold leaks when its
token sequence occurs contiguously in a field's tokens (so "code 948219" does not hold 4821, and
"Eiffel Tower" is found in "the eiffel-tower"). A gold with no tokens is never reported.
Splits are compared on the same tokens joined by spaces: case, whitespace, punctuation and
articles do not make a training example new.
"""

from __future__ import annotations

import re
import unicodedata


class LeakageError(AssertionError):
    """Evaluation would be contaminated; the message says how."""


class AnswerLeakError(LeakageError):
    """The gold answer is in a text the target would read."""


class SplitOverlapError(LeakageError):
    """An evaluation example also occurs in training (id, passage+question, or answer)."""


# A number (thousands groups, then optional ".digits" parts) or a run of letters; \d and [^\W\d_]
# are Unicode-aware. The thousands form needs every group to be exactly 3 digits, so "3,7" stays 3 and 7.
_TOKEN = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)*(?!,?\d)|\d+(?:\.\d+)*|[^\W\d_]+")
_ARTICLES = frozenset({"a", "an", "the"})


def _number(token: str) -> str:
    token = token.replace(",", "")
    if "." in token:
        head, _, frac = token.rpartition(".")
        frac = frac.rstrip("0")
        token = f"{head}.{frac}" if frac else head
    return token


def leak_tokens(text: str) -> list[str]:
    """``text`` as the guard compares it: case-folded words and normalised numbers (module docstring)."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    tokens = []
    for tok in _TOKEN.findall(text):
        if tok[0].isdigit():
            tokens.append(_number(tok))
        elif tok not in _ARTICLES:
            tokens.append(tok)
    return tokens


def contains_answer(text: str, answer: str) -> bool:
    """True when ``answer``'s tokens occur contiguously in ``text``'s tokens."""
    needle = leak_tokens(answer)
    if not needle:
        return False
    # tokens hold no spaces, so a contiguous token run is a space-delimited substring
    return f" {' '.join(needle)} " in f" {' '.join(leak_tokens(text))} "


def split_key(text: str) -> str:
    """The form under which two texts count as the same example text (case, spacing, punctuation ignored)."""
    return " ".join(leak_tokens(text))


def check_target_inputs(example, fields: dict[str, str], allowed: tuple[str, ...] = ()) -> None:
    for name, text in fields.items():
        if name in allowed or not text:
            continue
        if contains_answer(text, example.answer):
            raise AnswerLeakError(
                f"example {example.id}: the gold answer {example.answer!r} appears in the target's "
                f"field {name!r} ({text[:80]!r}...); only {allowed or 'no fields'} may hold it"
            )


def check_disjoint(train, evaluation, compare_answers: bool = True) -> None:
    train_ids = {e.id for e in train}
    train_pairs = {(split_key(e.passage), split_key(e.question)) for e in train}
    train_answers = {split_key(e.answer) for e in train} if compare_answers else set()
    for e in evaluation:
        if e.id in train_ids:
            raise SplitOverlapError(f"evaluation example {e.id} is also a training example")
        if (split_key(e.passage), split_key(e.question)) in train_pairs:
            raise SplitOverlapError(f"evaluation example {e.id} repeats a training passage and question")
        if compare_answers and split_key(e.answer) in train_answers:
            raise SplitOverlapError(f"evaluation example {e.id}: answer {e.answer!r} was seen in training")
