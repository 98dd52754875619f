"""Word pools for the synthetic tasks, and their deterministic train/validation/test partition.

Decisions:
- Pools are hand-written .txt files shipped as package data (one entry a line), read once with
  importlib.resources and cached.
- Each pool is partitioned by sorting its entries on a salted blake2b digest and slicing 70/15/15.
  Sorting (rather than bucketing each hash) gives exact split sizes, so even a 68-entry colour pool
  gives every split enough values; the salt keeps different pools' partitions independent.
  The partition depends only on the file contents: editing a pool file reshuffles its splits.
- ``words.txt`` (scripts/make_words.py: ~26k words that are one whole-word token in both embedded
  models' vocabularies) is a training-only answer vocabulary for ``--wide-answers``: with a few
  dozen training values per kind a translator can pass training by memorising a label set and then
  fails on every unseen value; thousands of values force it to carry the word itself.
  ``wide_words()`` removes, case-insensitively, every word of every validation and test entry of
  every pool and its simple plural / singular forms ("canaries" for canary: until session 8 only the
  exact words were removed, which let 41 forms of held-out answer words through, e.g. "midwives"),
  so validation/test answers stay unseen in training; and the slurs and sexual terms of
  ``blocked_words.txt`` (exact words).
- ``words_multi.txt`` (same script, from wordfreq's English list: ~27k real words that SmolLM2 splits
  into 2-4 pieces) is the vocabulary of ``--multi-words``; ``multi_words()`` removes the held-out
  words the same way.
- Numeric answer pools (4-digit codes, ages; 2- and 3-digit codes for cheaper tests) are partitioned the same way on their decimal strings,
  so no answer value is shared between splits.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

from .example import SPLITS, check_split

SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
POOL_FILES = ("first_names", "surnames", "cities", "jobs", "pets", "colours", "items")
CODES = tuple(str(code) for code in range(1000, 10000))
SHORT_CODES = {digits: tuple(str(code) for code in range(10 ** (digits - 1), 10**digits)) for digits in (2, 3)}
AGES = tuple(str(age) for age in range(18, 100))


@lru_cache(maxsize=None)
def read_pool(name: str) -> tuple[str, ...]:
    if name not in POOL_FILES:
        raise ValueError(f"unknown word pool {name!r}; pools are {POOL_FILES}")
    text = resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    entries = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(set(entries)) != len(entries):
        raise ValueError(f"word pool {name}.txt has duplicate entries")
    return entries


def _digest(salt: str, entry: str) -> bytes:
    return hashlib.blake2b(f"{salt}\x00{entry}".encode(), digest_size=8).digest()


def partition(entries: tuple[str, ...], salt: str) -> dict[str, tuple[str, ...]]:
    """Split `entries` into disjoint train/validation/test tuples, the same on every run."""
    ordered = sorted(entries, key=lambda entry: _digest(salt, entry))
    n_train = round(len(ordered) * SPLIT_FRACTIONS[0])
    n_validation = round(len(ordered) * SPLIT_FRACTIONS[1])
    bounds = (0, n_train, n_train + n_validation, len(ordered))
    return {split: tuple(ordered[bounds[i]:bounds[i + 1]]) for i, split in enumerate(SPLITS)}


@lru_cache(maxsize=None)
def split_pool(name: str, split: str) -> tuple[str, ...]:
    """The entries of pool `name` ("codes" and "ages" included) that belong to `split`."""
    check_split(split)
    numeric = {"codes": CODES, "ages": AGES, "codes2": SHORT_CODES[2], "codes3": SHORT_CODES[3]}
    entries = numeric.get(name) or read_pool(name)
    return partition(entries, salt=name)[split]


WIDE_FILE = "words"
MULTI_FILE = "words_multi"


def _read_list(stem: str) -> list[str]:
    text = resources.files(__package__).joinpath(f"{stem}.txt").read_text(encoding="utf-8")
    return [w for w in (line.strip() for line in text.splitlines()) if w and not w.startswith("#")]


@lru_cache(maxsize=None)
def blocked_words() -> frozenset[str]:
    """Slurs and sexual or abusive terms (blocked_words.txt, lower case): never a training answer."""
    return frozenset(w.lower() for w in _read_list("blocked_words"))


def inflections(word: str) -> set[str]:
    """``word`` (lower case) with its simple English plural / singular forms: "canary" -> "canaries",
    "midwife" -> "midwives", "apples" -> "apple"; enough to keep a held-out value's near-copies out of
    training, where the exact-answer leak guard would not see them."""
    forms = {word, word + "s", word + "es", word + "'s"}
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    if word.endswith("f"):
        forms.add(word[:-1] + "ves")
    if word.endswith("fe"):
        forms.add(word[:-2] + "ves")
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if word.endswith("es"):
        forms.add(word[:-2])
    if word.endswith("s"):
        forms.add(word[:-1])
    return forms


@lru_cache(maxsize=None)
def held_out_forms() -> frozenset[str]:
    """Every held-out word (``held_out_words``) with its plural / singular forms."""
    return frozenset(form for word in held_out_words() for form in inflections(word))


def _training_words(stem: str) -> tuple[str, ...]:
    excluded = held_out_forms() | blocked_words()
    return tuple(w for w in _read_list(stem) if w.lower() not in excluded)


@lru_cache(maxsize=None)
def wide_words() -> tuple[str, ...]:
    """The training-only wide answer vocabulary, without any word of a validation/test pool entry."""
    return _training_words(WIDE_FILE)


@lru_cache(maxsize=None)
def multi_words() -> tuple[str, ...]:
    """The training-only vocabulary of real words SmolLM2 splits into 2-4 pieces (``--multi-words``),
    without any word of a validation/test pool entry."""
    return _training_words(MULTI_FILE)


@lru_cache(maxsize=None)
def held_out_words() -> frozenset[str]:
    """Every word (lower case) of every validation and test entry of the word pools."""
    return frozenset(word.lower() for name in POOL_FILES for split in SPLITS[1:]
                     for entry in split_pool(name, split) for word in entry.split())
