"""The leak guard stops the original study's leak and respects each method's allow-list."""

import pytest

from lw_runtime.data import arithmetic, relay_qa
from lw_runtime.leakage import AnswerLeakError, SplitOverlapError, check_disjoint, check_target_inputs
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
