"""Protocols build the target's text from an allow-list; extraction is strict."""

import pytest

from train.data import relay_qa
from lw_runtime.protocols import (
    exact_match,
    extract_answer,
    full_text_prompt,
    source_text,
    target_alone_prompt,
    target_prompt,
)


@pytest.mark.parametrize("protocol", ["soft_only", "context"])
def test_target_text_never_holds_the_answer_or_passage(protocol):
    for e in relay_qa("test", 200, n_facts=2):
        for text in (target_prompt(e, protocol), target_alone_prompt(e, protocol)):
            assert e.answer not in text
            assert e.passage not in text
        assert e.passage in source_text(e, protocol)


def test_protocol_fields():
    e = relay_qa("validation", 1)[0]
    assert e.question in source_text(e, "soft_only") and e.question not in source_text(e, "context")
    assert target_prompt(e, "soft_only") == "\nAnswer:"
    assert e.question in target_prompt(e, "context")
    assert e.passage in full_text_prompt(e) and full_text_prompt(e).endswith("Answer:")
    with pytest.raises(ValueError, match="unknown protocol"):
        target_prompt(e, "telepathy")


def test_source_order_moves_the_question_and_nothing_else():
    e = relay_qa("validation", 1, n_facts=4)[0]
    first = source_text(e, "soft_only", "question_first")
    assert first == f"Question: {e.question}\nPassage: {e.passage}"
    assert source_text(e, "soft_only") == source_text(e, "soft_only", "passage_first") == f"Passage: {e.passage}\nQuestion: {e.question}"
    with pytest.raises(ValueError, match="unknown source order"):
        source_text(e, "soft_only", "sideways")


def test_strict_extraction_takes_the_first_line_only():
    assert extract_answer(" 4821\nQuestion: 1234") == "4821"
    assert exact_match(" 4821.", "4821")
    assert not exact_match(" 3=3=3 4821", "4821")  # no scanning for the number anywhere
    assert not exact_match("\n4821", "1234")
    assert exact_match(" The Paris", "paris")
