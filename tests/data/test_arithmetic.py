"""Arithmetic word problems: correct answers, GSM8K-style solutions, held-out splits."""

import re
from itertools import combinations

import pytest

from train.data import SPLITS, arithmetic


def recompute(start, ops):
    """Independent of train.data.arithmetic.apply_ops, on purpose."""
    count = start
    for op, args in ops:
        assert count > 0
        if op == "share":
            assert count % args[0] == 0
        count = {"add": lambda: count + args[0], "sub": lambda: count - args[0],
                 "groups": lambda: count + args[0] * args[1], "share": lambda: count // args[0]}[op]()
    return count


def test_same_arguments_give_identical_lists():
    assert arithmetic("train", 200, seed=3) == arithmetic("train", 200, seed=3)
    assert arithmetic("train", 200, seed=3) != arithmetic("train", 200, seed=4)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("max_steps", [1, 2, 3])
def test_answer_is_recomputed_from_the_structured_problem(split, max_steps):
    examples = arithmetic(split, 500, seed=1, max_steps=max_steps)
    assert {len(e.meta["ops"]) for e in examples} == set(range(1, max_steps + 1))
    for e in examples:
        answer = recompute(e.meta["start"], e.meta["ops"])
        assert answer > 0 and e.answer == str(answer)
        assert e.passage == "" and e.task == "arithmetic" and e.split == split


def test_solution_ends_with_the_answer_and_every_calculation_is_right():
    for e in arithmetic("test", 500, seed=2):
        assert e.solution.endswith(f"\n#### {e.answer}")
        calculations = re.findall(r"<<(\d+)([-+*/])(\d+)=(\d+)>>", e.solution)
        assert len(calculations) >= len(e.meta["ops"])
        for a, op, b, result in calculations:
            a, b = int(a), int(b)
            assert {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op] == int(result)


def test_question_states_the_name_item_and_every_number():
    for e in arithmetic("validation", 300, seed=5):
        assert e.meta["name"] in e.question and e.meta["item"] in e.question
        numbers = re.findall(r"\d+", e.question)
        assert str(e.meta["start"]) in numbers
        for _, args in e.meta["ops"]:
            assert all(str(arg) in numbers for arg in args)
        assert e.question.endswith("?")


def test_splits_share_no_name_item_template_or_question():
    seen = {split: arithmetic(split, 3000, seed=0) for split in SPLITS}
    for a, b in combinations(SPLITS, 2):
        for key in ("name", "item"):
            assert not {e.meta[key] for e in seen[a]} & {e.meta[key] for e in seen[b]}
        assert not {t for e in seen[a] for t in e.meta["templates"]} & {t for e in seen[b] for t in e.meta["templates"]}
        assert not {e.question for e in seen[a]} & {e.question for e in seen[b]}


def test_ids_are_unique_across_splits_and_settings():
    ids = [e.id for split in SPLITS for steps in (1, 3) for e in arithmetic(split, 300, max_steps=steps)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("kwargs", [dict(split="dev"), dict(max_steps=0)])
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        arithmetic(**(dict(split="train", n=3) | kwargs))
