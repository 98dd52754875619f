"""Reading the source: the chosen layer equals transformers' hidden_states, early stop, bad input."""

import pytest
import torch

from lw_runtime.source import EmptyTextError, encode_source, resolve_layer, tokenize_texts

TEXTS = ["Ava's code is 4821.", "Bob Stone has the access code 1234. What is Bob Stone's code?"]


@pytest.mark.parametrize("layer", [0, 5, 17, -2])
def test_layer_matches_hidden_states(source, layer):
    states = encode_source(source, TEXTS, layer=layer)
    batch = source.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = source.model(**batch, output_hidden_states=True).hidden_states
    idx = resolve_layer(source.num_layers, layer)  # the last entry of hidden_states is post-norm: not compared
    m = batch["attention_mask"].bool()
    torch.testing.assert_close(states.hidden[m], ref[idx].float()[m], rtol=1e-4, atol=1e-3)
    assert torch.equal(states.mask, m)


def test_last_layer_is_the_last_block_before_the_final_norm(source):
    states = encode_source(source, TEXTS[:1], layer=-1)
    ids = source.tokenizer(TEXTS[:1], return_tensors="pt")
    with torch.no_grad():
        final = source.model(**ids, output_hidden_states=True).hidden_states[-1]
    norm = source.model.base_model.norm
    assert states.hidden.shape == final.shape
    torch.testing.assert_close(norm(states.hidden), final.float(), rtol=1e-4, atol=1e-3)


def test_states_can_feed_autograd(source):
    states = encode_source(source, TEXTS, layer=3)
    w = torch.ones(640, requires_grad=True)
    (states.hidden * w).sum().backward()
    assert w.grad is not None


def test_empty_text_and_bad_layer_are_rejected(source):
    with pytest.raises(EmptyTextError, match="text 1"):
        encode_source(source, ["fine", "   "])
    with pytest.raises(ValueError, match="out of range"):
        encode_source(source, ["fine"], layer=40)


def test_over_long_text_is_truncated_from_the_left_and_counted(source):
    long = "word " * 100 + "What is the code?"
    states = encode_source(source, [long, "short"], max_tokens=16)
    assert states.hidden.shape[1] == 16 and states.num_truncated == 1
    batch, _ = tokenize_texts(source.tokenizer, [long], 16, "cpu")
    assert batch["input_ids"][0, -15:].tolist() == source.tokenizer(long).input_ids[-15:]  # the end is kept
