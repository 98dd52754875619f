"""generate(): soft tokens in front of text, parity with HF generate on the same embeddings, bad input."""

import pytest
import torch

from lw_runtime.generate import SoftTokenError, build_inputs, generate

PROMPTS = ["Passage: Ava's code is 4821.\nQuestion: What is Ava's code?\nAnswer:", "The capital of France is"]


def hf_greedy(target, prompt, n):
    ids = target.tokenizer(prompt, return_tensors="pt").input_ids
    out = target.model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=target.tokenizer.pad_token_id)
    return target.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_text_only_matches_hf_generate_per_row(target):
    got = generate(target, texts=PROMPTS, max_new_tokens=6)
    assert got == [hf_greedy(target, p, 6) for p in PROMPTS]


def test_soft_tokens_equal_to_prompt_embeddings_give_the_same_text(target):
    """Soft tokens that are exactly the embeddings of a prompt's first tokens act as that prompt."""
    ids = target.tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    k = 6
    soft = target.embed(ids[:, :k])
    rest = target.tokenizer.decode(ids[0, k:])
    got = generate(target, soft, texts=[rest], max_new_tokens=6)
    assert got == [hf_greedy(target, PROMPTS[0], 6)]


def test_batched_rows_with_left_padding_equal_single_rows(target):
    torch.manual_seed(1)
    soft = torch.randn(2, 4, 576) * target.embedding_rms()
    texts = ["\nAnswer:", "\nQuestion: What is the capital of France?\nAnswer:"]
    together = generate(target, soft, texts=texts, max_new_tokens=5)
    alone = [generate(target, soft[i : i + 1], texts=[texts[i]], max_new_tokens=5)[0] for i in range(2)]
    assert together == alone


def test_training_inputs_label_only_the_answer(target):
    soft = torch.zeros(2, 3, 576)
    batch = build_inputs(target, soft, ["\nAnswer:", "\nAnswer:"], 2, continuations=[" 4821", " 17"], padding_side="right")
    labels = batch["labels"]
    eos = target.tokenizer.eos_token_id
    for row, answer in zip(labels, [" 4821", " 17"]):
        kept = row[row != -100].tolist()
        assert kept == target.tokenizer(answer, add_special_tokens=False).input_ids + [eos]


def test_stop_strings_and_sampling_arguments_are_accepted(target):
    out = generate(target, texts=["Count: 1, 2, 3,"], max_new_tokens=12, stop_strings=[","])
    assert out[0].count(",") <= 1
    torch.manual_seed(0)
    sampled = generate(target, texts=["Once upon a time"], max_new_tokens=4, do_sample=True, temperature=0.8, top_p=0.9)
    assert isinstance(sampled[0], str)


def test_bad_soft_tokens_raise(target):
    with pytest.raises(SoftTokenError, match="NaN/Inf"):
        generate(target, torch.full((1, 4, 576), float("nan")))
    with pytest.raises(SoftTokenError, match="width 100"):
        generate(target, torch.zeros(1, 4, 100))
    with pytest.raises(SoftTokenError, match="batch, K, dim"):
        generate(target, torch.zeros(4, 576))
    with pytest.raises(ValueError, match="needs soft tokens"):
        generate(target)


def test_labels_sit_on_the_positions_of_their_tokens(target):
    torch.manual_seed(0)
    soft = torch.randn(2, 3, 576)
    batch = build_inputs(target, soft, ["\nAnswer:", "\nQuestion: Who?\nAnswer:"], 2, continuations=[" 4821", " Ava"], padding_side="right")
    emb = target.model.get_input_embeddings()
    where = batch["labels"] != -100
    torch.testing.assert_close(batch["inputs_embeds"][where], emb(batch["labels"][where]))
    # the soft tokens come first (SmolLM2 adds no BOS), in order
    torch.testing.assert_close(batch["inputs_embeds"][:, :3], soft)


def test_source_gets_its_bos_like_hf(source):
    """Gemma needs <bos>: generate() must tokenize like the model's own tokenizer call."""
    prompts = ["Passage: Ava Stone's code is 4821.\nQuestion: What is Ava Stone's code?\nAnswer:"]
    assert generate(source, texts=prompts, max_new_tokens=5) == [hf_greedy(source, prompts[0], 5)]


def test_streaming_yields_the_same_text(target):
    import threading

    from transformers import TextIteratorStreamer

    torch.manual_seed(2)
    soft = torch.randn(1, 4, 576) * target.embedding_rms()
    streamer = TextIteratorStreamer(target.tokenizer, skip_prompt=True, skip_special_tokens=True)
    worker = threading.Thread(target=generate, args=(target, soft), kwargs=dict(texts=["\nAnswer:"], max_new_tokens=6, streamer=streamer))
    worker.start()
    streamed = "".join(streamer)
    worker.join()
    assert streamed == generate(target, soft, texts=["\nAnswer:"], max_new_tokens=6)[0]


class _Called(Exception):
    """Raised by the spy in place of HF generate, so the test sees the call without running it."""


def test_synced_gpus_takes_hf_generate_with_the_flag(target, monkeypatch):
    """With a sharded target every rank must keep stepping (HF ``synced_gpus``): generate() and
    stream() then take HF's path even for a Llama target (whose default is the static runtime) and
    hand the flag on; without it nothing reaches HF generate."""
    import lw_runtime

    seen = []

    def spy(**kwargs):
        seen.append(kwargs)
        raise _Called

    monkeypatch.setattr(target.model, "generate", spy)
    soft = torch.zeros(1, 4, 576)
    with pytest.raises(ValueError, match="process group"):
        generate(target, soft, max_new_tokens=2, synced_gpus=True)  # not under torchrun
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    with pytest.raises(_Called):
        generate(target, soft, max_new_tokens=2, synced_gpus=True)
    with pytest.raises(_Called):
        "".join(lw_runtime.stream(target, soft, max_new_tokens=2, synced_gpus=True))
    assert [k.get("synced_gpus") for k in seen] == [True, True]
    with pytest.raises(ValueError, match="static runtime"):
        generate(target, soft, max_new_tokens=2, synced_gpus=True, runtime="static")
    with pytest.raises(ValueError, match="static runtime"):
        "".join(lw_runtime.stream(target, soft, max_new_tokens=2, synced_gpus=True, runtime="static"))
    assert isinstance(generate(target, soft, max_new_tokens=2, synced_gpus=False)[0], str)
    assert isinstance("".join(lw_runtime.stream(target, soft, max_new_tokens=2, synced_gpus=False)), str)
    assert len(seen) == 2  # the static runtime served the last two
