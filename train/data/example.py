"""The record every LatentWire task produces, and the error raised for malformed dataset files.

Decisions:
- One flat `Example` for synthetic tasks and real datasets, so training and evaluation code never
  branches on where a question came from; task-specific structure goes in `meta`.
- `Example` is frozen, and `meta` is a plain dict excluded from `__hash__` (`field(hash=False)`) but
  kept in `__eq__`: examples stay hashable (sets, dict keys) while equal examples still hash equal.
  Treat `meta` as read-only; values inside it are tuples, numbers and strings only.
- `DatasetFormatError` subclasses ValueError and its message always names the file, the record and
  the field at fault, because the person reading it is holding a 90 MB json they did not write.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Example:
    id: str
    task: str
    passage: str
    question: str
    answer: str
    split: str
    n_facts: int = 0
    solution: str = ""
    meta: dict = field(default_factory=dict, hash=False)


class DatasetFormatError(ValueError):
    """A dataset file does not have the layout its loader expects."""


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split
