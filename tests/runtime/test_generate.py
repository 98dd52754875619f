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


# ----------------------------------------------------------------------------- repetition penalty and padding (issue 20, defect 5)
LONG_PROMPT = ("Passage: Ava Lindqvist's code is 4821. Ben Okafor's code is 3307. Carla Ruiz's code is 9154. "
               "Dev Patel's code is 6620. Emma Stone's code is 1178.\nQuestion: What is Carla Ruiz's code?\nAnswer:")
# the short rows sit behind 71-78 pad tokens in a batch with the long one
PADDED_TEXTS = [LONG_PROMPT, "\nAnswer:", "Once upon a time", "List: a, b, a, b,"]


@pytest.fixture(scope="module")
def tiny_target(target):
    """A 2-layer random Llama (hidden 64) behind the embedded target's tokenizer: generate() end to
    end on both runtimes in milliseconds per token, where SmolLM2 takes seconds on 2 CPU cores."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lw_runtime.models import LoadedModel

    torch.manual_seed(2)
    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(target.tokenizer), max_position_embeddings=256,
                         tie_word_embeddings=False, initializer_range=0.3)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    # Only 40 ids (plain word pieces) get large logits, so greedy text revisits tokens within a few
    # steps and the repetition penalty has something to act on in every row.
    head = model.lm_head.weight
    damp = torch.ones(head.shape[0], dtype=torch.bool)
    damp[1000:1040] = False
    head[damp] *= 0.01
    return LoadedModel(model=model, tokenizer=target.tokenizer, name="tiny")


@pytest.mark.filterwarnings("ignore:Passing `repetition_penalty` with `inputs_embeds`")
@pytest.mark.parametrize("runtime", ["static", "hf"])
@pytest.mark.parametrize("penalty", [1.6, 0.6])
def test_repetition_penalty_gives_each_row_its_single_row_output_however_padded(tiny_target, runtime, penalty):
    widths = [len(tiny_target.tokenizer(t).input_ids) for t in PADDED_TEXTS]
    assert max(widths) - min(widths) >= 30
    torch.manual_seed(3)
    soft = torch.randn(len(PADDED_TEXTS), 3, 64)
    kw = dict(max_new_tokens=16, repetition_penalty=penalty, return_ids=True, runtime=runtime)
    for rows in (dict(texts=PADDED_TEXTS), dict(soft_tokens=soft, texts=PADDED_TEXTS)):
        batched = generate(tiny_target, **rows, **kw)
        for i in range(len(PADDED_TEXTS)):
            one = {k: v[i : i + 1] for k, v in rows.items()}
            alone = generate(tiny_target, **one, **kw)[0]
            assert not torch.equal(alone, generate(tiny_target, **one, **{**kw, "repetition_penalty": 1.0})[0])  # it acts
            assert batched[i, : len(alone)].tolist() == alone.tolist(), (runtime, i)
            assert (batched[i, len(alone) :] == tiny_target.tokenizer.pad_token_id).all()


@pytest.mark.filterwarnings("ignore:Passing `(repetition_penalty|no_repeat_ngram_size)` with `inputs_embeds`")
def test_repetition_penalty_is_the_same_on_both_runtimes(target):
    kw = dict(texts=PADDED_TEXTS, max_new_tokens=8, repetition_penalty=1.6, no_repeat_ngram_size=3, return_ids=True)
    assert torch.equal(generate(target, runtime="static", **kw), generate(target, runtime="hf", **kw))


# ----------------------------------------------------------------------------- generation_config (issue 19, item 6)
@pytest.mark.filterwarnings("ignore:Passing `(repetition_penalty|no_repeat_ngram_size)` with `inputs_embeds`")
@pytest.mark.parametrize("runtime", ["static", "hf"])
def test_generation_config_fields_apply_and_keywords_override_them(tiny_target, runtime):
    from transformers import GenerationConfig

    kw = dict(texts=PADDED_TEXTS, return_ids=True, runtime=runtime)
    cfg = GenerationConfig(max_new_tokens=12, repetition_penalty=0.5, no_repeat_ngram_size=2, stop_strings=["zzz"])
    explicit = generate(tiny_target, max_new_tokens=12, repetition_penalty=0.5, no_repeat_ngram_size=2, **kw)
    assert torch.equal(generate(tiny_target, generation_config=cfg, **kw), explicit)
    plain = generate(tiny_target, max_new_tokens=12, **kw)
    assert not torch.equal(explicit, plain)
    # keywords win over the config's fields, each one separately
    assert torch.equal(generate(tiny_target, generation_config=cfg, repetition_penalty=1.0, no_repeat_ngram_size=0, **kw), plain)
    assert torch.equal(generate(tiny_target, generation_config=cfg, max_new_tokens=4, **kw),
                       generate(tiny_target, max_new_tokens=4, repetition_penalty=0.5, no_repeat_ngram_size=2, **kw))
    assert cfg.max_new_tokens == 12 and cfg.repetition_penalty == 0.5  # the caller's config is left as it was
    pieces = "".join(lw_stream(tiny_target, texts=PADDED_TEXTS[:1], generation_config=cfg, runtime=runtime))
    assert pieces == tiny_target.tokenizer.decode(explicit[0], skip_special_tokens=True)


@pytest.mark.parametrize("runtime", ["static", "hf"])
def test_generation_config_top_k_overrides_the_models_default_and_keywords_override_it(tiny_target, runtime, monkeypatch):
    """top_k=1 makes sampling greedy whatever the RNG, so each level of the precedence is visible."""
    from transformers import GenerationConfig

    kw = dict(texts=PADDED_TEXTS, max_new_tokens=8, return_ids=True, runtime=runtime)
    greedy = generate(tiny_target, **kw)

    def sampled(**extra):
        torch.manual_seed(0)  # HF's path samples from the global RNG, the static one from `generator`
        return generate(tiny_target, do_sample=True, generator=torch.Generator().manual_seed(0), **kw, **extra)

    hot = GenerationConfig(do_sample=True, temperature=50.0, top_k=0)
    assert not torch.equal(sampled(generation_config=hot), greedy)
    assert torch.equal(sampled(generation_config=GenerationConfig(top_k=1), temperature=50.0), greedy)  # config > model
    assert torch.equal(sampled(generation_config=hot, top_k=1), greedy)  # keyword > config
    assert torch.equal(generate(tiny_target, generation_config=hot, do_sample=False, **kw), greedy)
    monkeypatch.setattr(tiny_target.model.generation_config, "top_k", 1)
    assert torch.equal(sampled(temperature=50.0), greedy)  # the model's default applies when nothing else is set
    assert not torch.equal(sampled(generation_config=hot), greedy)  # ... and the config overrides it


def test_resolve_generation_takes_keywords_then_config_then_defaults_for_every_field():
    """The precedence on its own (no model runs): each supported field at each of the three levels."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    from lw_runtime.generate import GENERATION_DEFAULTS, resolve_generation

    fake = SimpleNamespace(model=SimpleNamespace(generation_config=GenerationConfig(top_k=7)),
                           tokenizer=SimpleNamespace(eos_token_id=2, pad_token_id=0))
    base = resolve_generation(fake)
    assert base == {**GENERATION_DEFAULTS, "top_k": 7, "eos_token_id": 2, "pad_token_id": 0}
    by_config = dict(max_new_tokens=5, do_sample=True, temperature=0.7, top_p=0.8, top_k=3, repetition_penalty=1.3,
                     no_repeat_ngram_size=2, stop_strings=["\n"], eos_token_id=[2, 9], pad_token_id=4)
    by_keyword = dict(max_new_tokens=6, do_sample=False, temperature=0.9, top_p=0.5, top_k=0, repetition_penalty=0.8,
                      no_repeat_ngram_size=3, stop_strings=["."], eos_token_id=11, pad_token_id=12)
    assert set(by_config) == set(GENERATION_DEFAULTS) == set(by_keyword)
    cfg = GenerationConfig(**by_config)
    assert resolve_generation(fake, cfg) == by_config
    assert resolve_generation(fake, cfg, **by_keyword) == by_keyword
    for field in GENERATION_DEFAULTS:  # one keyword overrides its field only
        assert resolve_generation(fake, cfg, **{field: by_keyword[field]}) == {**by_config, field: by_keyword[field]}
        assert resolve_generation(fake, cfg, **{field: None}) == by_config  # None means "not given"
    assert resolve_generation(fake, GenerationConfig(temperature=2, stop_strings="##"))["temperature"] == 2.0
    assert resolve_generation(fake, GenerationConfig(stop_strings="##"))["stop_strings"] == ["##"]
    with pytest.raises(ValueError, match="generation_config sets num_beams=3, min_p=0.2"):
        resolve_generation(fake, GenerationConfig(num_beams=3, min_p=0.2, top_k=4))
    with pytest.raises(ValueError, match="max_length=64.*use max_new_tokens"):
        resolve_generation(fake, GenerationConfig(max_length=64))
    assert resolve_generation(fake, GenerationConfig(max_length=64), max_new_tokens=3)["max_new_tokens"] == 3
    with pytest.raises(TypeError, match="unknown generation arguments"):
        resolve_generation(fake, num_beams=2)


UNSUPPORTED = [("num_beams", 4), ("min_new_tokens", 3), ("max_length", 50), ("typical_p", 0.5), ("min_p", 0.1),
               ("return_dict_in_generate", True), ("suppress_tokens", [5]), ("output_attentions", True)]


@pytest.mark.parametrize("field,value", UNSUPPORTED, ids=[f for f, _ in UNSUPPORTED])
def test_generation_config_fields_it_does_not_support_raise_naming_them(tiny_target, field, value):
    from transformers import GenerationConfig

    cfg = GenerationConfig(**{field: value})
    for runtime in ("static", "hf"):
        with pytest.raises(ValueError, match=f"generation_config sets {field}="):
            generate(tiny_target, texts=["Hello"], generation_config=cfg, runtime=runtime)
        with pytest.raises(ValueError, match=f"generation_config sets {field}="):
            "".join(lw_stream(tiny_target, texts=["Hello"], generation_config=cfg, runtime=runtime))


def test_generation_config_fields_at_their_defaults_are_accepted(tiny_target, target):
    from transformers import GenerationConfig

    for runtime in ("static", "hf"):
        kw = dict(texts=PADDED_TEXTS[1:], runtime=runtime)
        want = generate(tiny_target, max_new_tokens=4, **kw)
        defaults = GenerationConfig(num_beams=1, use_cache=True, num_return_sequences=1, typical_p=1.0, min_length=0,
                                    output_attentions=False, max_new_tokens=4, bos_token_id=12345)
        assert generate(tiny_target, generation_config=defaults, **kw) == want
        # max_length yields to max_new_tokens, as in HF
        assert generate(tiny_target, generation_config=GenerationConfig(max_length=50), max_new_tokens=4, **kw) == want
        # the embedded model's own generation config (use_cache, output_* off, bos/eos/pad ids) is a valid argument
        assert generate(tiny_target, generation_config=target.model.generation_config, max_new_tokens=4, **kw) == want
    with pytest.raises(TypeError, match="GenerationConfig"):
        generate(tiny_target, texts=["Hello"], generation_config={"max_new_tokens": 4})


def lw_stream(*args, **kwargs):
    from lw_runtime.generate import stream

    return stream(*args, **kwargs)
