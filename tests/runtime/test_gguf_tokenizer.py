"""Gemma-3's tokenizer rebuilt from the GGUF vocabulary matches SentencePiece's ids."""

import pytest

from lw_runtime.gguf_tokenizer import _merges_from_scores

PARIS = "Paris is the capital of France and Berlin is the capital of"
PARIS_IDS = [2, 50429, 563, 506, 5279, 529, 7001, 532, 15687, 563, 506, 5279, 529]


def test_gemma_tokenizer_matches_reference_ids(source):
    assert source.tokenizer(PARIS).input_ids == PARIS_IDS


def test_gemma_tokenizer_starts_with_bos_and_adds_no_dummy_prefix(source):
    tok = source.tokenizer
    ids = tok("Paris").input_ids
    assert ids[0] == 2 and tok.convert_ids_to_tokens(ids[1:]) == ["Paris"]
    assert tok.convert_ids_to_tokens(tok(" Paris").input_ids[1:]) == ["▁Paris"]


@pytest.mark.parametrize(
    "text",
    ["naïve café 日本語 🙂", "  two  spaces\n\nand newlines\n", "x=3*(4+5)-12/7", "Ava Lindqvist's code is 4821."],
)
def test_gemma_tokenizer_round_trips(source, text):
    tok = source.tokenizer
    ids = tok(text).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.unk_token_id not in ids  # byte fallback covers everything


def test_both_tokenizers_pad_left_with_a_pad_token(source, target):
    for loaded in (source, target):
        tok = loaded.tokenizer
        assert tok.padding_side == "left"
        assert tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id or loaded is source
        batch = tok(["a", "a much longer text here"], padding=True)
        assert batch["attention_mask"][0][0] == 0 and batch["attention_mask"][0][-1] == 1


def test_merges_follow_piece_scores():
    pieces = ["a", "b", "c", "ab", "bc", "abc"]
    scores = [0, 0, 0, -5.0, -1.0, -2.0]
    types = [1] * 6
    merges = _merges_from_scores(pieces, scores, types)
    # "bc" (score -1) merges before "abc" (-2), which merges before "ab" (-5)
    assert merges.index(("b", "c")) < merges.index(("a", "bc")) < merges.index(("a", "b"))
