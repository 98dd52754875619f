"""relay-QA: SQuAD-like passages of facts about people, with a question whose answer is a span.

Decisions:
- A passage is `n_facts` sentences, one fact each, about distinct (person, attribute) pairs drawn
  from a cast of 1..n_facts people; the question asks about one fact chosen uniformly. Facts about
  the same person and facts about the same attribute both occur, so the reader has to bind name to
  attribute rather than spot the only number in sight.
- Names, answer values (4-digit codes, ages, cities, jobs, pets, colours) and templates come from
  split-specific partitions (pools.py, templates.py): validation and test names, values and
  wordings never occur in training, so a bridge cannot pass by memorising a label set.
- The answer must occur exactly once in the passage as a raw substring (so "48" may not hide inside
  "4821", nor "Bern" inside "Bernard"); passages that break this are redrawn.
- One random.Random per call, seeded from a string of all arguments: identical arguments give an
  identical list, and `relay_qa(s, n)` is a prefix of `relay_qa(s, m)` for n < m.
- `kinds=("code",)` gives the 1-fact code relay: one short sentence; `code_digits=2` gives the
  shorter codes of the CPU learning test (task "relay_code2").
"""

from __future__ import annotations

import random

from .example import Example, check_split
from .pools import split_pool
from .templates import RELAY_FACTS, RELAY_QUESTIONS

KINDS = ("code", "city", "job", "pet", "colour", "age")
VALUE_POOLS = {"code": "codes", "city": "cities", "job": "jobs", "pet": "pets",
               "colour": "colours", "age": "ages"}
MAX_REDRAWS = 200


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _draw_names(rng: random.Random, firsts: tuple[str, ...], lasts: tuple[str, ...], k: int) -> list[str]:
    names: list[str] = []
    while len(names) < k:
        name = f"{rng.choice(firsts)} {rng.choice(lasts)}"
        if name not in names:
            names.append(name)
    return names


def _draw_example(rng: random.Random, split: str, n_facts: int, kinds: tuple[str, ...], code_digits: int = 4):
    firsts, lasts = split_pool("first_names", split), split_pool("surnames", split)
    n_people = rng.randint(-(-n_facts // len(kinds)), n_facts)
    people = _draw_names(rng, firsts, lasts, n_people)
    if n_facts == 1:
        pairs = [(people[0], rng.choice(kinds))]
    else:
        pairs = rng.sample([(person, kind) for person in people for kind in kinds], n_facts)
    counts: dict[str, int] = {}
    for _, kind in pairs:
        counts[kind] = counts.get(kind, 0) + 1
    values_by_kind: dict[str, list[str]] = {}
    for kind, count in counts.items():
        pool_name = VALUE_POOLS[kind] if kind != "code" or code_digits == 4 else f"codes{code_digits}"
        pool = split_pool(pool_name, split)
        if count > len(pool):
            raise ValueError(f"n_facts={n_facts}: the {split} pool for {kind!r} has only {len(pool)} values")
        values_by_kind[kind] = [rng.choice(pool)] if count == 1 else rng.sample(pool, count)
    facts, sentences, fact_templates = [], [], []
    for person, kind in pairs:
        value = values_by_kind[kind].pop()
        template = rng.choice(RELAY_FACTS[kind][split])
        facts.append((person, kind, value))
        fact_templates.append(template)
        sentences.append(template.format(name=person, value=value, a=article(value)))
    asked = rng.randrange(n_facts)
    person, kind, answer = facts[asked]
    question_template = rng.choice(RELAY_QUESTIONS[kind][split])
    passage = " ".join(sentences)
    return passage, question_template.format(name=person), answer, {
        "facts": tuple(facts), "asked": asked, "entity": person, "kind": kind,
        "answer_start": passage.find(answer), "names": tuple(people),
        "templates": tuple(fact_templates) + (question_template,),
    }


def relay_qa(split: str, n: int, n_facts: int = 1, seed: int = 0,
             kinds: tuple[str, ...] | None = None, code_digits: int = 4) -> list[Example]:
    """`n` relay-QA examples of `n_facts` facts each from `split`; `kinds` restricts the attributes;
    `code_digits` (2, 3 or 4) sets the length of the code answers."""
    check_split(split)
    kinds = tuple(kinds) if kinds is not None else KINDS
    unknown = [kind for kind in kinds if kind not in KINDS]
    if not kinds or unknown:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}")
    if code_digits not in (2, 3, 4):
        raise ValueError(f"code_digits must be 2, 3 or 4, got {code_digits}")
    if n_facts < 1:
        raise ValueError(f"n_facts must be at least 1, got {n_facts}")
    tag = ("all" if kinds == KINDS else "+".join(kinds)) + ("" if code_digits == 4 else f"-d{code_digits}")
    rng = random.Random(f"relay_qa|{split}|{n_facts}|{tag}|{seed}")
    examples = []
    for index in range(n):
        for _ in range(MAX_REDRAWS):
            passage, question, answer, meta = _draw_example(rng, split, n_facts, kinds, code_digits)
            if passage.count(answer) == 1:
                break
        else:
            raise RuntimeError(f"relay_qa could not draw an unambiguous passage in {MAX_REDRAWS} tries")
        examples.append(Example(
            id=f"relay_qa/{split}/f{n_facts}/{tag}/s{seed}/{index:06d}", task="relay_qa",
            passage=passage, question=question, answer=answer, split=split,
            n_facts=n_facts, meta=meta))
    return examples
