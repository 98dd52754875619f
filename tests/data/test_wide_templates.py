"""relay-QA `wide_templates`: the extra training wordings stay off the held-out splits, format
cleanly, widen training, and leave runs without the option untouched."""

import re
from collections import defaultdict

import pytest

from train.data import KINDS, SPLITS, load_task, relay_qa
from train.data.pools import split_pool
from train.data.synthetic import article
from train.data.templates import RELAY_FACTS, RELAY_QUESTIONS
from train.data.wide_templates import WIDE_FACTS, WIDE_QUESTIONS

HELD_OUT = SPLITS[1:]
TABLES = (("facts", RELAY_FACTS, WIDE_FACTS), ("questions", RELAY_QUESTIONS, WIDE_QUESTIONS))
MIN_EXTRA = 12  # 20 were written; the ones too close to a held-out wording were dropped (test below)


def _loose(template: str) -> str:
    """Lowercased, punctuation dropped, spaces collapsed: catches a held-out wording that differs
    only in case, an apostrophe or a full stop."""
    return " ".join(re.sub(r"[^a-z{} ]", " ", template.lower()).split())


def test_every_kind_has_enough_distinct_extra_wordings():
    for _, _, extra in TABLES:
        assert set(extra) == set(KINDS)
        for kind in KINDS:
            assert len(extra[kind]) >= MIN_EXTRA
            assert len({_loose(t) for t in extra[kind]}) == len(extra[kind])


@pytest.mark.parametrize("what, base, extra", TABLES, ids=[t[0] for t in TABLES])
def test_extra_wordings_are_disjoint_from_every_validation_test_and_training_wording(what, base, extra):
    for kind in KINDS:
        held_out = {t for split in HELD_OUT for t in base[kind][split]}
        known = held_out | set(base[kind]["train"])
        loose_known = {_loose(t) for t in known}
        for template in extra[kind]:
            assert template not in known, f"{kind} {what}: {template!r} is already a template"
            assert _loose(template) not in loose_known, f"{kind} {what}: {template!r} matches a template loosely"
    # held-out wordings of other kinds too: a wording may not leak across slots either
    every_held_out = {_loose(t) for kind in KINDS for split in HELD_OUT for t in base[kind][split]}
    assert not {_loose(t) for kind in KINDS for t in extra[kind]} & every_held_out


def _words(template: str) -> list[str]:
    """Lower-cased words with the placeholders as tokens (the article and a possessive 's dropped)."""
    t = template.lower().replace("{name}", " NAME ").replace("{value}", " VALUE ").replace("{a}", " ")
    return [w for w in re.split(r"[^a-zA-Z]+", t) if w and w != "s"]


def _edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def _trigrams(words: list[str]) -> set:
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


@pytest.mark.parametrize("what, base, extra", [("fact", RELAY_FACTS, WIDE_FACTS), ("question", RELAY_QUESTIONS, WIDE_QUESTIONS)])
def test_extra_wordings_bring_training_no_closer_to_any_held_out_wording(what, base, extra):
    """Exact disjointness is not enough: "The code {value} belongs to {name}." next to the test's
    "Code {value} belongs to {name}." would make that test wording effectively seen. So no extra
    wording may be nearer (word edit distance) to a validation/test wording of its kind and slot
    than the nearest of the four original training wordings is, nor share a word 3-gram with it
    that none of those four shares."""
    offenders = []
    for kind, wordings in extra.items():
        train = [_words(t) for t in base[kind]["train"]]
        for held in (h for split in SPLITS[1:] for h in base[kind][split]):
            hw = _words(held)
            floor = min(_edit_distance(t, hw) for t in train)
            seen = set().union(*(_trigrams(t) & _trigrams(hw) for t in train))
            for wording in wordings:
                ww = _words(wording)
                new_shared = (_trigrams(ww) & _trigrams(hw)) - seen
                if _edit_distance(ww, hw) < floor or new_shared:
                    offenders.append((kind, wording, held, _edit_distance(ww, hw), floor, sorted(new_shared)))
    assert not offenders, f"{what} wordings too close to held-out ones: {offenders}"


def test_the_nearness_check_catches_a_planted_near_copy():
    train = [_words(t) for t in RELAY_FACTS["code"]["train"]]
    held = _words("Code {value} belongs to {name}.")
    floor = min(_edit_distance(t, held) for t in train)
    assert _edit_distance(_words("The code {value} belongs to {name}."), held) < floor


def test_fact_wordings_hold_name_and_value_once_and_format():
    sample = {"code": "4821", "city": "Porto", "job": "baker", "pet": "gecko", "colour": "amber", "age": "42"}
    for kind in KINDS:
        value = sample[kind]
        for template in WIDE_FACTS[kind]:
            assert template.count("{name}") == 1 and template.count("{value}") == 1, template
            assert set(re.findall(r"{(\w*)}", template)) <= {"name", "value", "a"}, template
            sentence = template.format(name="Ann Vale", value=value, a=article(value))
            assert sentence.endswith(".") and sentence.count(value) == 1 and "{" not in sentence
            assert sentence[0].isupper() or sentence[0].isdigit(), template  # no lower-case value opens it


def test_question_wordings_hold_only_the_name_and_format():
    for kind in KINDS:
        for template in WIDE_QUESTIONS[kind]:
            assert re.findall(r"{(\w*)}", template) == ["name"], template
            question = template.format(name="Ann Vale")
            assert question.endswith(("?", ".")) and "{" not in question


def test_no_extra_wording_hides_a_digit_or_a_training_value():
    """A wording that contained "red" ("hired") or a digit would make that answer ambiguous in every
    passage it lands in, so those passages would all be redrawn."""
    values = {v for pool in ("cities", "jobs", "pets", "colours", "first_names", "surnames")
              for v in split_pool(pool, "train")}
    for _, _, extra in TABLES:
        for kind in KINDS:
            for template in extra[kind]:
                text = re.sub(r"{\w*}", "|", template)
                assert not re.search(r"\d", text), template
                assert not [v for v in values if v in text], template


@pytest.mark.parametrize("n_facts", [1, 4])
def test_zero_draws_exactly_what_no_option_draws(n_facts):
    for split in SPLITS:
        assert relay_qa(split, 300, n_facts=n_facts, seed=5, wide_templates=0.0) == relay_qa(split, 300, n_facts=n_facts, seed=5)
    assert (relay_qa("train", 300, n_facts=n_facts, seed=5, wide=0.5, wide_templates=0.0)
            == relay_qa("train", 300, n_facts=n_facts, seed=5, wide=0.5))


def test_full_widening_uses_more_wordings_per_kind_and_keeps_one_answer_span():
    examples = relay_qa("train", 3000, n_facts=4, seed=1, wide_templates=1.0)
    facts, questions = defaultdict(set), defaultdict(set)
    for e in examples:
        *fact_templates, question_template = e.meta["templates"]
        for (_, kind, _), template in zip(e.meta["facts"], fact_templates):
            facts[kind].add(template)
        questions[e.meta["kind"]].add(question_template)
        assert e.passage.count(e.answer) == 1
        assert e.passage[e.meta["answer_start"]:].startswith(e.answer)
    for kind in KINDS:
        allowed = set(RELAY_FACTS[kind]["train"]) | set(WIDE_FACTS[kind])
        assert len(facts[kind]) > 4 and facts[kind] <= allowed
        assert len(questions[kind]) > 4 and questions[kind] <= set(RELAY_QUESTIONS[kind]["train"]) | set(WIDE_QUESTIONS[kind])


def test_half_widening_mixes_both_and_never_reaches_held_out_wordings():
    examples = relay_qa("train", 2000, n_facts=2, seed=2, wide_templates=0.5)
    used = {t for e in examples for t in e.meta["templates"]}
    base = {t for table in (RELAY_FACTS, RELAY_QUESTIONS) for kind in KINDS for t in table[kind]["train"]}
    extra = {t for table in (WIDE_FACTS, WIDE_QUESTIONS) for kind in KINDS for t in table[kind]}
    held_out = {t for table in (RELAY_FACTS, RELAY_QUESTIONS) for kind in KINDS for split in HELD_OUT
                for t in table[kind][split]}
    assert used & base and used & extra and not used & held_out
    assert all(e.passage.count(e.answer) == 1 for e in examples)


def test_ids_carry_the_setting_so_caches_do_not_mix_runs():
    plain, wide = relay_qa("train", 50, seed=0), relay_qa("train", 50, seed=0, wide_templates=0.9)
    assert not {e.id for e in plain} & {e.id for e in wide}
    assert all("-wtemplates0.9/" in e.id for e in wide)


def test_load_task_passes_it_to_relay_tasks_only():
    assert load_task("relay_qa:2", "train", 30, seed=4, wide_templates=0.7) == relay_qa("train", 30, n_facts=2, seed=4, wide_templates=0.7)
    assert load_task("relay_code", "train", 30, wide_templates=1.0) == relay_qa("train", 30, kinds=("code",), wide_templates=1.0)
    with pytest.raises(ValueError, match="relay-QA training augmentations"):
        load_task("arithmetic", "train", 3, wide_templates=0.5)


@pytest.mark.parametrize("kwargs", [dict(split="validation", wide_templates=0.5), dict(split="test", wide_templates=1.0),
                                    dict(wide_templates=-0.1), dict(wide_templates=1.5)])
def test_bad_wide_templates_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        relay_qa(**(dict(split="train", n=3) | kwargs))
