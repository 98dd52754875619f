"""The leak guard stops the original study's leak and respects each method's allow-list; golds are
found on token boundaries (any non-alphanumeric character), never inside a longer number or a
decimal, and splits are compared on normalised text (issue 20, defect 6)."""

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train.data import arithmetic, relay_qa
from train.data.example import Example
from train.leakage import (
    AnswerLeakError,
    SplitOverlapError,
    check_disjoint,
    check_target_inputs,
    contains_answer,
    leak_tokens,
)
from lw_runtime.protocols import target_prompt


def test_original_leak_prompt_plus_gold_solution_is_stopped():
    """The original eval fed the target prompt + gold solution; the guard must refuse it."""
    e = arithmetic("test", 1)[0]
    leaked = e.question + "\n" + e.solution  # what the original collator built
    with pytest.raises(AnswerLeakError, match="gold answer"):
        check_target_inputs(e, {"prompt": leaked})


def test_bridge_prompts_pass_and_a_planted_answer_fails():
    for e in relay_qa("test", 50, n_facts=2):
        check_target_inputs(e, {"prompt": target_prompt(e, "soft_only")})
        check_target_inputs(e, {"prompt": target_prompt(e, "context")})
        with pytest.raises(AnswerLeakError):
            check_target_inputs(e, {"prompt": target_prompt(e, "context") + " " + e.answer})


def test_allowed_fields_may_hold_the_answer():
    e = relay_qa("test", 1)[0]
    check_target_inputs(e, {"passage": e.passage}, allowed=("passage",))
    with pytest.raises(AnswerLeakError, match="passage"):
        check_target_inputs(e, {"passage": e.passage})


def test_answers_match_as_whole_words_only():
    e = relay_qa("test", 1, kinds=("code",))[0]
    check_target_inputs(e, {"prompt": "code 9" + e.answer + "9"})  # a longer number is not the answer
    with pytest.raises(AnswerLeakError):
        check_target_inputs(e, {"prompt": f"code: {e.answer}."})


def test_split_overlap_is_refused():
    train = relay_qa("train", 100)
    check_disjoint(train, relay_qa("test", 100))
    with pytest.raises(SplitOverlapError, match="also a training example"):
        check_disjoint(train, train[:1])


# ----------------------------------------------------------------------------- token-boundary matching (issue 20, defect 6)
def example(answer, passage="", question="What is it?", id="t/0"):
    return Example(id=id, task="t", passage=passage, question=question, answer=answer, split="test")


@pytest.mark.parametrize("text,gold", [
    ("Passage: ...\nAnswer:4821", "4821"),
    ("x=37", "37"),
    ("total:37", "37"),
    ("37/37", "37"),
    ("(37)", "37"),
    ("costs $37.", "37"),
    ("a 37km walk", "37"),
    ("#37#", "37"),
    ("he paid 1,234 dollars", "1234"),
    ("he paid 1234 dollars", "1,234"),
    ("3.50 litres", "3.5"),
    ("7.0", "7"),
    ("3.7 km", "3.7"),
    ("ＡＮＳＷＥＲ：３７", "37"),
    ("THE EIFFEL-TOWER", "Eiffel Tower"),
    ("it is paris.", "Paris"),
])
def test_gold_glued_to_punctuation_is_a_leak(text, gold):
    with pytest.raises(AnswerLeakError, match="gold answer"):
        check_target_inputs(example(gold), {"prompt": text})


def test_worked_solution_without_its_final_line_is_a_leak():
    """The original leak with the '#### N' line cut off: the number sits only inside <<...>>N."""
    for e in arithmetic("test", 20):
        body = e.solution.rsplit("\n####", 1)[0]
        assert "####" not in body
        with pytest.raises(AnswerLeakError):
            check_target_inputs(e, {"prompt": e.question + "\n" + body})
    e = example("7")
    with pytest.raises(AnswerLeakError):
        check_target_inputs(e, {"prompt": "Irina has 19 - 12 = <<19-12=7>>7 sunflowers."})


@pytest.mark.parametrize("text,gold", [
    ("The trail is 3.7 km long.", "37"),  # a decimal is one number: not 3 and 7
    ("The trail is 37.5 km long.", "37"),
    ("0.37 of them", "37"),
    ("code 948219", "4821"),
    ("room 137, floor 370", "37"),
    ("3,7 and 12", "37"),  # a list, not a thousands group
    ("1,2345", "12345"),
    ("Eiffel and a tower", "Eiffel Tower"),
    ("Tower Eiffel", "Eiffel Tower"),
    ("the a an", "the"),  # a gold of articles alone has no tokens: nothing to find
])
def test_clean_text_with_similar_numbers_or_words_is_silent(text, gold):
    check_target_inputs(example(gold), {"prompt": text})


# separators that cannot extend a number or a word ("." and "," can, before digits)
SEPARATORS = st.text(alphabet=" \t\n:;=/()<>#$%*+-!?'\"[]{}|_~^&@", min_size=1, max_size=3)
WORDS = st.text(alphabet=string.ascii_letters, min_size=1, max_size=8)


FRACTIONS = st.one_of(st.none(), st.from_regex(r"\A[0-9]{0,2}[1-9]\Z"))  # ".5", ".05", ".125"; never a trailing 0


@given(
    whole=st.integers(0, 10**7), frac=FRACTIONS, left=st.lists(WORDS, max_size=3), sep=SEPARATORS,
    tail=st.one_of(st.tuples(SEPARATORS, st.lists(WORDS, max_size=3)).map(lambda t: t[0] + " ".join(t[1])),
                   st.sampled_from(["", ".", ",", "?", ". Next", ", then 5", ".\n", ",\n"])),
)
@settings(max_examples=300, deadline=None)
def test_a_number_between_any_separators_is_caught(whole, frac, left, sep, tail):
    gold = str(whole) + (f".{frac}" if frac else "")
    text = " ".join(left) + sep + gold + tail
    assert contains_answer(text, gold), (text, leak_tokens(text))


@given(whole=st.integers(0, 10**6), frac=st.integers(1, 10**4).filter(lambda f: f % 10),
       unit=st.sampled_from([" km", "km", "%", " of them", ".", ""]))
@settings(max_examples=300, deadline=None)
def test_a_decimal_never_leaks_its_digits_or_its_integer_part(whole, frac, unit):
    text = f"about {whole}.{frac}{unit}"
    assert not contains_answer(text, f"{whole}{frac}")  # 3.7 is not 37
    assert not contains_answer(text, str(whole))  # 37.5 is not 37
    assert not contains_answer(text, str(frac))
    assert contains_answer(text, f"{whole}.{frac}")


@given(gold=st.integers(0, 10**6), pre=st.integers(1, 999), post=st.integers(0, 999), glue=st.booleans())
@settings(max_examples=200, deadline=None)
def test_a_number_inside_a_longer_number_is_not_the_gold(gold, pre, post, glue):
    text = f"code {pre}{gold}{post if glue else ''}"
    assert not contains_answer(text, str(gold))


@given(words=st.lists(WORDS.filter(lambda w: w.lower() not in ("a", "an", "the")), min_size=2, max_size=4),
       seps=st.lists(SEPARATORS, min_size=5, max_size=5), upper=st.booleans())
@settings(max_examples=200, deadline=None)
def test_a_multi_word_gold_matches_as_a_token_sequence(words, seps, upper):
    gold = " ".join(words)
    joined = "".join(w + s for w, s in zip(words, seps[1:]))
    text = "Prefix" + seps[0] + (joined.upper() if upper else joined) + "end"
    assert contains_answer(text, gold), (text, gold)
    broken = " ".join(words[:-1]) + " 0 " + words[-1]  # a token between two of its words: not the gold
    assert not contains_answer(broken, gold)
    assert not contains_answer(" ".join(words[:-1]), gold)


@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_a_training_example_reworded_by_case_spacing_or_punctuation_is_not_new(data):
    e = relay_qa("train", 40)[data.draw(st.integers(0, 39))]

    def reword(text):
        out = []
        for ch in text:
            ch = ch.upper() if data.draw(st.booleans()) else ch
            if ch == " ":
                ch = data.draw(st.sampled_from([" ", "  ", "\n", "\t ", " - "]))
            out.append(ch)
        return " " + "".join(out) + data.draw(st.sampled_from(["", " ", "?", "!"]))

    twin = Example(id="eval/0", task=e.task, passage=reword(e.passage), question=reword(e.question),
                   answer=e.answer, split="test")
    with pytest.raises(SplitOverlapError, match="repeats a training passage and question"):
        check_disjoint([e], [twin], compare_answers=False)


def test_examples_differing_in_a_number_or_a_word_stay_disjoint():
    train = [example("37", passage="The trail is 3.7 km long.", question="How long is it?", id="a")]
    check_disjoint(train, [example("37", passage="The trail is 37 km long.", question="How long is it?", id="b")],
                   compare_answers=False)
    check_disjoint(train, [example("37", passage="The trail is 3.7 km wide.", question="How long is it?", id="c")],
                   compare_answers=False)
    with pytest.raises(SplitOverlapError, match="answer"):
        check_disjoint([example("4,821", id="a")], [example("4821", question="Other?", id="b")])
