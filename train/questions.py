"""Every question of a passage in one step (``--all-questions``): one relay-QA training passage
becomes one example per fact it states, all sharing the passage.

Decisions:
- The asked fact keeps its drawn question; every other fact gets a question worded from its kind's
  training templates, chosen by a generator seeded from the example id, so the expansion of an
  example is the same in every process and every epoch and the base data stream is untouched.
- A fact whose value does not occur exactly once in the passage as a raw substring is skipped (the
  same rule the generator enforces for the asked fact: "48" must not hide inside "4821").
- Only the training split is expanded; validation and test keep one question per passage, so
  figures stay comparable with runs trained without the option.
- In ``context`` the source reads only the passage, so the translator runs once per passage and its
  soft tokens serve every question (``shared_rows``), as the runtime's prefix cache does at
  inference. In ``soft_only`` the source reads the question too, so each question is its own source
  read; the questions of one passage still land in the same step.
"""

from __future__ import annotations

import random
from dataclasses import replace

from .data.example import Example
from .data.templates import RELAY_QUESTIONS


def fact_questions(example: Example) -> list[Example]:
    """One example per fact of ``example``'s passage (the asked one first); ``[example]`` for tasks
    without facts (code relay of one fact, arithmetic, real datasets)."""
    facts = example.meta.get("facts") if example.meta else None
    if not facts or len(facts) < 2:
        return [example]
    rng = random.Random(f"questions|{example.id}")
    asked = example.meta.get("asked", 0)
    out = [example]
    for index, (person, kind, value) in enumerate(facts):
        if index == asked or example.passage.count(value) != 1:
            continue
        question = rng.choice(RELAY_QUESTIONS[kind]["train"]).format(name=person)
        meta = {**example.meta, "asked": index, "entity": person, "kind": kind,
                "answer_start": example.passage.find(value)}
        out.append(replace(example, id=f"{example.id}/q{index}", question=question, answer=value, meta=meta))
    return out


def expand(batch: list[Example], all_questions: bool) -> tuple[list[Example], list[int]]:
    """The rows one step trains on and, for each row, the index of its passage in ``batch``."""
    if not all_questions:
        return list(batch), list(range(len(batch)))
    rows, owner = [], []
    for i, example in enumerate(batch):
        for row in fact_questions(example):
            rows.append(row)
            owner.append(i)
    return rows, owner
