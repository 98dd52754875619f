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
- `wide` (training split only) is the chance that a fact of a word kind (city, job, pet, colour)
  takes its value from the wide vocabulary (pools.wide_words: ~26k words, none of them in any
  validation/test pool) instead of its kind's pool: one word, or two words in 30% of draws, so that
  multi-token values are copied too. The sentence stays the kind's template ("Ann keeps a compass").
  `wide=0` draws exactly what it drew before the option existed.
- `wide_templates` (training split only) is the chance that a fact sentence, and the question, take
  their wording from the kind's 4 training templates plus the extra ones of wide_templates.py
  instead of the 4 alone: with 4 wordings per slot a translator fits the wordings and misses unseen
  ones. It is one draw per sentence, made only when the option is on, so `wide_templates=0` draws
  exactly what it drew before the option existed.
- `pseudo_words` (training only, with `wide`) is the chance that each word of a wide value is an
  invented word (pseudo_words.py: 2-4 syllables, several tokens in both models) rather than a
  one-token wide-vocabulary word, so that the translator learns to carry how a word is spelled.
  `pseudo_words=0` draws exactly what it drew before the option existed.
- `multi_words` (training only, with `wide`) is the chance that each word of a wide value is a real
  word that SmolLM2 splits into 2-4 pieces (pools.multi_words, never a held-out word) rather than a
  one-token word: the held-out values a translator misses are mostly such words. One draw per word
  decides pseudo / multi / one-token (thresholds `pseudo_words`, then `pseudo_words + multi_words`),
  so `multi_words=0` draws exactly what it drew before the option existed.
- `kinds=("code",)` gives the 1-fact code relay: one short sentence; `code_digits=2` gives the
  shorter codes of the CPU learning test (task "relay_code2").
"""

from __future__ import annotations

import random

from .example import Example, check_split
from .pools import multi_words as multi_vocabulary, split_pool, wide_words
from .pseudo_words import pseudo_word
from .templates import RELAY_FACTS, RELAY_QUESTIONS
from .wide_templates import WIDE_FACTS, WIDE_QUESTIONS

KINDS = ("code", "city", "job", "pet", "colour", "age")
VALUE_POOLS = {"code": "codes", "city": "cities", "job": "jobs", "pet": "pets",
               "colour": "colours", "age": "ages"}
WORD_KINDS = ("city", "job", "pet", "colour")
MAX_REDRAWS = 200
WIDE_PAIR_FRACTION = 0.3


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _draw_names(rng: random.Random, firsts: tuple[str, ...], lasts: tuple[str, ...], k: int) -> list[str]:
    names: list[str] = []
    while len(names) < k:
        name = f"{rng.choice(firsts)} {rng.choice(lasts)}"
        if name not in names:
            names.append(name)
    return names


def _wide_value(rng: random.Random, taken: set[str], pseudo_words: float = 0.0, multi_words: float = 0.0) -> str:
    words = wide_words()

    def word() -> str:
        # no draw when both are 0, so that runs without the options keep their exact random stream
        if pseudo_words > 0 or multi_words > 0:
            draw = rng.random()
            if draw < pseudo_words:
                return pseudo_word(rng)
            if draw < pseudo_words + multi_words:
                return rng.choice(multi_vocabulary())
        return rng.choice(words)

    while True:
        n = 2 if rng.random() < WIDE_PAIR_FRACTION else 1
        value = " ".join(word() for _ in range(n))
        if value not in taken:
            return value


def _wording(rng: random.Random, templates: tuple[str, ...], extra: tuple[str, ...], wide_templates: float) -> str:
    # no draw at 0, so that runs without the option keep their exact random stream
    if wide_templates > 0 and rng.random() < wide_templates:
        templates = templates + extra
    return rng.choice(templates)


def _draw_example(rng: random.Random, split: str, n_facts: int, kinds: tuple[str, ...], code_digits: int = 4,
                  wide: float = 0.0, wide_templates: float = 0.0, pseudo_words: float = 0.0, multi_words: float = 0.0):
    firsts, lasts = split_pool("first_names", split), split_pool("surnames", split)
    n_people = rng.randint(-(-n_facts // len(kinds)), n_facts)
    people = _draw_names(rng, firsts, lasts, n_people)
    if n_facts == 1:
        pairs = [(people[0], rng.choice(kinds))]
    else:
        pairs = rng.sample([(person, kind) for person in people for kind in kinds], n_facts)
    is_wide = [wide > 0 and kind in WORD_KINDS and rng.random() < wide for _, kind in pairs]
    counts: dict[str, int] = {}
    for (_, kind), w in zip(pairs, is_wide):
        if not w:
            counts[kind] = counts.get(kind, 0) + 1
    values_by_kind: dict[str, list[str]] = {}
    for kind, count in counts.items():
        pool_name = VALUE_POOLS[kind] if kind != "code" or code_digits == 4 else f"codes{code_digits}"
        pool = split_pool(pool_name, split)
        if count > len(pool):
            raise ValueError(f"n_facts={n_facts}: the {split} pool for {kind!r} has only {len(pool)} values")
        values_by_kind[kind] = [rng.choice(pool)] if count == 1 else rng.sample(pool, count)
    facts, sentences, fact_templates = [], [], []
    taken = {value for values in values_by_kind.values() for value in values}
    for (person, kind), w in zip(pairs, is_wide):
        value = _wide_value(rng, taken, pseudo_words, multi_words) if w else values_by_kind[kind].pop()
        taken.add(value)
        template = _wording(rng, RELAY_FACTS[kind][split], WIDE_FACTS[kind], wide_templates)
        facts.append((person, kind, value))
        fact_templates.append(template)
        sentences.append(template.format(name=person, value=value, a=article(value)))
    asked = rng.randrange(n_facts)
    person, kind, answer = facts[asked]
    question_template = _wording(rng, RELAY_QUESTIONS[kind][split], WIDE_QUESTIONS[kind], wide_templates)
    passage = " ".join(sentences)
    return passage, question_template.format(name=person), answer, {
        "facts": tuple(facts), "asked": asked, "entity": person, "kind": kind,
        "answer_start": passage.find(answer), "names": tuple(people),
        "templates": tuple(fact_templates) + (question_template,),
    }


def relay_qa(split: str, n: int, n_facts: int = 1, seed: int = 0,
             kinds: tuple[str, ...] | None = None, code_digits: int = 4, wide: float = 0.0,
             wide_templates: float = 0.0, pseudo_words: float = 0.0, multi_words: float = 0.0) -> list[Example]:
    """`n` relay-QA examples of `n_facts` facts each from `split`; `kinds` restricts the attributes;
    `code_digits` (2, 3 or 4) sets the length of the code answers; `wide` (training only) is the
    chance that a word-kind fact's value comes from the wide vocabulary; `wide_templates` (training
    only) is the chance that a sentence's wording comes from the training plus the extra wordings;
    `pseudo_words` (training only, with `wide`) is the chance that each word of a wide value is an
    invented word (pseudo_words.py) instead of a wide-vocabulary word; `multi_words` (training only,
    with `wide`) the chance that it is a real word SmolLM2 splits into 2-4 pieces (pools.multi_words)."""
    check_split(split)
    kinds = tuple(kinds) if kinds is not None else KINDS
    unknown = [kind for kind in kinds if kind not in KINDS]
    if not kinds or unknown:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}")
    if code_digits not in (2, 3, 4):
        raise ValueError(f"code_digits must be 2, 3 or 4, got {code_digits}")
    if n_facts < 1:
        raise ValueError(f"n_facts must be at least 1, got {n_facts}")
    for name, chance, what, kept in (("wide", wide, "wide answers", "pools"),
                                     ("wide_templates", wide_templates, "wide templates", "wordings"),
                                     ("pseudo_words", pseudo_words, "pseudo words", "pools"),
                                     ("multi_words", multi_words, "multi-piece words", "pools")):
        if not 0.0 <= chance <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {chance}")
        if chance > 0 and split != "train":
            raise ValueError(f"{what} are a training-only augmentation; the {split} split keeps its own unseen {kept}")
    if pseudo_words > 0 and wide == 0:
        raise ValueError("pseudo_words replaces words of wide answers; set wide > 0 too")
    if multi_words > 0 and wide == 0:
        raise ValueError("multi_words replaces words of wide answers; set wide > 0 too")
    if pseudo_words + multi_words > 1.0:
        raise ValueError(f"pseudo_words + multi_words is the chance a wide word is either; got {pseudo_words + multi_words:g} > 1")
    if wide > 0 and not set(kinds) & set(WORD_KINDS):
        raise ValueError(f"wide answers replace word values ({', '.join(WORD_KINDS)}); kinds {kinds} have none")
    tag = ("all" if kinds == KINDS else "+".join(kinds)) + ("" if code_digits == 4 else f"-d{code_digits}")
    tag += f"-wide{wide:g}" if wide > 0 else ""
    tag += f"-wtemplates{wide_templates:g}" if wide_templates > 0 else ""
    tag += f"-pseudo{pseudo_words:g}" if pseudo_words > 0 else ""
    tag += f"-multi{multi_words:g}" if multi_words > 0 else ""
    rng = random.Random(f"relay_qa|{split}|{n_facts}|{tag}|{seed}")
    examples = []
    for index in range(n):
        for _ in range(MAX_REDRAWS):
            passage, question, answer, meta = _draw_example(rng, split, n_facts, kinds, code_digits, wide, wide_templates,
                                                            pseudo_words, multi_words)
            if passage.count(answer) == 1:
                break
        else:
            raise RuntimeError(f"relay_qa could not draw an unambiguous passage in {MAX_REDRAWS} tries")
        examples.append(Example(
            id=f"relay_qa/{split}/f{n_facts}/{tag}/s{seed}/{index:06d}", task="relay_qa",
            passage=passage, question=question, answer=answer, split=split,
            n_facts=n_facts, meta=meta))
    return examples
