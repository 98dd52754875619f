"""``lw_runtime.generate`` / ``stream``: HF ``generate`` semantics, with soft tokens in front of the target's text.

Inputs: ``soft_tokens`` (B, K, D), or ``translator`` + ``source`` + ``source_texts``, or ``packets``
(lw_runtime.encode's wire format); and optional ``texts`` (one per row) that the target reads
after the soft tokens, as [BOS if the tokenizer uses one][soft tokens][text], left padded.
Decisions:
- ``runtime="auto"`` runs Llama-family targets on the static runtime (lw_runtime.runtime: own
  forward, static KV cache, CUDA-graphed decode) and everything else on HF ``generate``; greedy output
  is token-identical between the two in fp32 (tests/runtime/test_runtime.py).
- Packets are decoded chunk by chunk and each contiguous run of soft tokens is prefilled as it
  arrives; the text follows once the message is complete.
- One row of soft tokens with several texts is prefilled once and its KV copied into every row.
- ``streamer=`` takes HF streamers (``TextIteratorStreamer``) on both paths; ``stream()`` yields
  text pieces without a thread on the static path.
- Settings come from keywords, then ``generation_config=`` (a ``transformers.GenerationConfig``),
  then generate()'s defaults (greedy, 32 new tokens, the tokenizer's EOS and pad; ``top_k`` from the
  model's generation config, else 50): HF's precedence. A config field this module cannot honour
  on both paths (beams, ``min_new_tokens``, ``max_length`` without ``max_new_tokens``, ...) raises
  a ValueError naming it, unless it holds HF's default; ``bos_token_id`` is accepted and, as in HF
  with ``inputs_embeds``, unused (the BOS is the tokenizer's). Both paths receive the same resolved
  settings, so a config cannot select a path-dependent behaviour.
- A row's output never depends on the batch's padding: repetition penalty and no-repeat n-grams see
  its generated tokens only, on both paths (the HF path gets our penalty processor in place of
  transformers 5.x's, whose ``prompt_ignore_length`` skips a padded row's first generated tokens).
Soft tokens with NaN or Inf, or of the wrong width, raise a ``SoftTokenError`` naming the problem.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator

import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import LogitsProcessorList
from transformers.generation.stopping_criteria import StopStringCriteria

from .decode_loop import DecodeLoop, logits_processors, repetition_penalty_processor
from .models import LoadedModel
from .packets import Decoder, decode, iter_packets
from .runtime import StaticRuntime, UnsupportedModelError, runtime_for
from .source import encode_source
from .wire import ChunkError


class SoftTokenError(ValueError):
    """Soft tokens that cannot be fed to the target (wrong shape, NaN or Inf)."""


def check_soft_tokens(soft_tokens: torch.Tensor, target_dim: int) -> None:
    if not torch.is_tensor(soft_tokens) or soft_tokens.dim() != 3:
        raise SoftTokenError(f"soft tokens must be a (batch, K, dim) tensor, got {getattr(soft_tokens, 'shape', type(soft_tokens))}")
    if soft_tokens.shape[-1] != target_dim:
        raise SoftTokenError(f"soft tokens have width {soft_tokens.shape[-1]}, the target's embeddings {target_dim}")
    if not torch.isfinite(soft_tokens).all():
        bad = (~torch.isfinite(soft_tokens)).sum().item()
        raise SoftTokenError(f"soft tokens contain {bad} NaN/Inf values")


def bos_prefix(tokenizer) -> list[int]:
    """[BOS] when the tokenizer puts one in front of every text (Gemma, Llama), else [] (SmolLM2)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if ids and ids[0] == bos else []


def build_inputs(
    target: LoadedModel,
    soft_tokens: torch.Tensor | None,
    texts: list[str] | None,
    batch_size: int,
    continuations: list[str] | None = None,
    padding_side: str = "left",
) -> dict:
    """inputs_embeds / attention_mask / position_ids / labels for rows of
    [BOS if the tokenizer uses one][soft tokens][text][continuation + EOS], padded on one side.

    ``continuations`` (training only) are the teacher-forced answers; ``labels`` holds their ids
    (and EOS) at their own positions and -100 everywhere else.
    """
    tok = target.tokenizer
    device = target.device
    emb_layer = target.model.get_input_embeddings()
    texts = texts if texts is not None else [""] * batch_size
    if len(texts) != batch_size:
        raise ValueError(f"got {len(texts)} texts for a batch of {batch_size}")
    k = 0 if soft_tokens is None else soft_tokens.shape[1]
    prefix = bos_prefix(tok)
    rows = []  # (ids before the soft tokens, ids after them, labels of the ids after them)
    for i in range(batch_size):
        after = tok(texts[i], add_special_tokens=False)["input_ids"] if texts[i] else []
        labels = [-100] * len(after)
        if continuations is not None:
            answer = tok(continuations[i], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            after, labels = after + answer, labels + answer
        rows.append((prefix, after, labels))
    lengths = [len(p) + k + len(a) for p, a, _ in rows]
    width = max(lengths)
    if width == 0:
        raise ValueError("nothing for the target to read: no soft tokens and empty texts")
    ids = torch.full((batch_size, width), tok.pad_token_id, dtype=torch.long)
    is_soft = torch.zeros(batch_size, width, dtype=torch.bool)
    mask = torch.zeros(batch_size, width, dtype=torch.long)
    lab = torch.full((batch_size, width), -100, dtype=torch.long)
    for i, ((pre, after, labels), n) in enumerate(zip(rows, lengths)):
        start = width - n if padding_side == "left" else 0
        pos = start + len(pre)
        ids[i, start:pos] = torch.tensor(pre, dtype=torch.long)
        is_soft[i, pos : pos + k] = True
        ids[i, pos + k : start + n] = torch.tensor(after, dtype=torch.long)
        lab[i, pos + k : start + n] = torch.tensor(labels, dtype=torch.long)
        mask[i, start : start + n] = 1
    embeds = emb_layer(ids.to(device))
    if soft_tokens is not None:
        soft = soft_tokens.to(device=device, dtype=embeds.dtype)
        embeds = embeds.masked_scatter(is_soft.to(device).unsqueeze(-1), soft)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "inputs_embeds": embeds,
        "attention_mask": mask.to(device),
        "position_ids": position_ids.to(device),
        "labels": lab.to(device),
    }


RUNTIMES = ("auto", "static", "hf")


# StaticRuntime's keyword-only settings, read from its signature so the two cannot drift apart
RUNTIME_OPTIONS = tuple(name for name, p in inspect.signature(StaticRuntime).parameters.items() if p.kind is p.KEYWORD_ONLY)


def select_runtime(target: LoadedModel, runtime: str = "auto", synced_gpus: bool = False,
                   runtime_options: dict | None = None):
    """The StaticRuntime for ``target`` ("static"/"auto" on Llama-family models), or None for HF generate.

    ``synced_gpus`` (a sharded target: every rank steps until all are done) is HF's flag, so it
    means HF generate; it needs a process group and cannot be asked of the static runtime."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    options = dict(runtime_options or {})
    unknown = sorted(set(options) - set(RUNTIME_OPTIONS))
    if unknown:
        raise ValueError(f"unknown runtime_options {unknown}; the static runtime takes {RUNTIME_OPTIONS}")
    if options and runtime == "hf":
        raise ValueError("runtime_options configure the static runtime; runtime='hf' does not use them")
    if synced_gpus:
        if runtime == "static":
            raise ValueError("synced_gpus runs on HF's generate; the static runtime needs the whole target in this process")
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise ValueError("synced_gpus needs an initialised torch.distributed process group (e.g. under torchrun)")
        return None
    if runtime == "hf":
        return None
    try:
        return runtime_for(target.model, **options)
    except UnsupportedModelError:
        if runtime == "static":
            raise
        return None


def _resolve_soft_tokens(target, soft_tokens, translator, source, source_texts, texts, packets, source_max_tokens):
    """Soft tokens from the arguments (None when packets carry them) and the number of output rows."""
    if packets is not None:
        if soft_tokens is not None or source_texts is not None:
            raise ValueError("pass packets, or soft tokens / source texts, not both")
        return None, None
    if soft_tokens is None and translator is not None:
        if source is None or source_texts is None:
            raise ValueError("generate with a translator needs `source` and `source_texts`")
        translator.check_compatible(source.hidden_size, target.hidden_size)
        states = encode_source(source, source_texts, translator.config.source_layer, source_max_tokens)
        device = next(translator.parameters()).device
        with torch.no_grad():
            soft_tokens = translator(states.hidden.to(device), states.mask.to(device))
    if soft_tokens is not None:
        check_soft_tokens(soft_tokens, target.hidden_size)
        rows = soft_tokens.shape[0]
        if rows == 1 and texts is not None and len(texts) > 1:
            rows = len(texts)  # one message's soft tokens serve every text (a prefix)
        return soft_tokens, rows
    if texts is not None:
        return None, len(texts)
    raise ValueError("generate needs soft tokens, packets, a translator with source texts, or texts")


def _ready_tokens(decoder: Decoder) -> int:
    """How many leading soft tokens of the message have arrived (chunks may come in any order):
    only a contiguous head can be prefilled, because every token's keys depend on the tokens before it."""
    return decoder.ready_tokens


def _packet_chunks(target, packets, translator, dtype):
    """(batch, num_soft, iterator of soft-token chunks in token order) from packets as they arrive."""
    packets = iter_packets(packets)
    decoder = Decoder(translator=translator, dtype=dtype, device=target.device, _single_message=True)
    first = next(packets, None)
    if first is None:
        raise ChunkError("no packets to decode")
    check_soft_tokens(decoder.feed(first), target.hidden_size)  # before a KV cache is sized for the message
    batch, num_soft, _ = decoder._buffer.shape

    def chunks():
        done = 0
        for packet in _chain_first(packets):
            if packet is not None:
                decoder.feed(packet)
            ready = _ready_tokens(decoder)
            if ready > done:
                yield decoder._buffer[:, done:ready]
                done = ready
        decoder.result()  # ChunkError when tokens are missing

    return batch, num_soft, chunks()


def _chain_first(packets):
    yield None  # the first packet was fed already
    yield from packets


def _prefill(target, rt, batch: int, num_soft: int, chunks, texts, max_new_tokens: int) -> None:
    """[BOS][soft chunks...] for ``batch`` rows, then each text (left padded); one soft row with
    several texts is prefilled once and copied into every row (prefix cache)."""
    tok, device = target.tokenizer, target.device
    rows = batch if texts is None else len(texts)
    shared = batch == 1 and rows > 1
    if not shared and rows != batch:
        raise ValueError(f"got {rows} texts for a batch of {batch}")
    text_ids = [tok(t, add_special_tokens=False)["input_ids"] if t else [] for t in (texts or [""] * rows)]
    width = max(len(ids) for ids in text_ids)
    bos = bos_prefix(tok)
    head = len(bos) + num_soft
    if head + width == 0:
        raise ValueError("nothing for the target to read: no soft tokens and empty texts")
    needed = head + width + max_new_tokens  # checked first: a message declares its length before its data arrives
    slots = rt.slots_for(needed)
    rt.start(batch, rt.slots_for(head) if shared else slots)
    if bos:
        rt.prefill_chunk(target.embed(torch.tensor([bos] * batch, device=device)))
    for chunk in chunks:
        check_soft_tokens(chunk, target.hidden_size)
        rt.prefill_chunk(chunk.to(device=device, dtype=rt.dtype))
    if shared:
        rt.start(rows, slots, prefix=rt.snapshot())
    if width:
        ids = torch.full((rows, width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros(rows, width, dtype=torch.bool)
        for i, row in enumerate(text_ids):
            if row:
                ids[i, width - len(row):] = torch.tensor(row)
                mask[i, width - len(row):] = True
        rt.prefill_chunk(target.embed(ids.to(device)), mask.to(device))


# generate()'s settings and their defaults; None here means "from the model / tokenizer" (see resolve_generation)
GENERATION_DEFAULTS = {
    "max_new_tokens": 32, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": None,
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "stop_strings": None, "eos_token_id": None,
    "pad_token_id": None,
}
# GenerationConfig entries that carry no setting here: bookkeeping, and the BOS id, which HF too
# leaves unused when generating from inputs_embeds (our rows get the tokenizer's BOS, bos_prefix).
_CONFIG_IGNORED = frozenset({"transformers_version", "_from_model_config", "_commit_hash", "bos_token_id"})


def _config_settings(config: GenerationConfig, max_new_tokens_given: bool) -> dict:
    """The settings a GenerationConfig sets (fields left unset or at HF's default are skipped);
    a ValueError names every set field generate() does not support."""
    if not isinstance(config, GenerationConfig):
        raise TypeError(f"generation_config must be a transformers.GenerationConfig, got {type(config).__name__}")
    hf_defaults = getattr(GenerationConfig, "_get_default_generation_params", dict)()
    settings, unsupported = {}, []
    for key, value in config.to_diff_dict().items():
        if key in _CONFIG_IGNORED or value is None:
            continue
        if key in GENERATION_DEFAULTS:
            settings[key] = value
        elif key == "max_length" and (max_new_tokens_given or config.max_new_tokens is not None):
            continue  # HF: max_new_tokens takes precedence over max_length
        elif value != hf_defaults.get(key, False):  # flags HF leaves out of its defaults (output_*) are off when unset
            unsupported.append(f"{key}={value!r}")
    if unsupported:
        raise ValueError(
            f"generation_config sets {', '.join(unsupported)}, which lw_runtime.generate does not support "
            f"(it takes {', '.join(GENERATION_DEFAULTS)}; leave other fields unset or at their defaults)"
            + ("; use max_new_tokens instead of max_length" if any(u.startswith("max_length=") for u in unsupported) else "")
        )
    return settings


def resolve_generation(target: LoadedModel, generation_config: GenerationConfig | None = None, **kwargs) -> dict:
    """Every generation setting, by HF's precedence: keywords that are not None, then the fields
    ``generation_config`` sets, then GENERATION_DEFAULTS, whose None entries come from the model
    (``top_k``: its generation config, else HF's 50) and the tokenizer (EOS, pad)."""
    unknown = sorted(set(kwargs) - set(GENERATION_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown generation arguments {unknown}; known: {list(GENERATION_DEFAULTS)}")
    settings = dict(GENERATION_DEFAULTS)
    if generation_config is not None:
        settings.update(_config_settings(generation_config, kwargs.get("max_new_tokens") is not None))
    settings.update({k: v for k, v in kwargs.items() if v is not None})
    if settings["top_k"] is None:
        top_k = getattr(getattr(target.model, "generation_config", None), "top_k", None)
        settings["top_k"] = 50 if top_k is None else top_k
    tok = target.tokenizer
    if settings["eos_token_id"] is None:
        settings["eos_token_id"] = tok.eos_token_id
    if settings["pad_token_id"] is None:
        settings["pad_token_id"] = tok.pad_token_id
    if isinstance(settings["stop_strings"], str):
        settings["stop_strings"] = [settings["stop_strings"]]
    for key in ("temperature", "top_p", "repetition_penalty"):  # HF's processors reject ints (temperature=2)
        if isinstance(settings[key], int) and not isinstance(settings[key], bool):
            settings[key] = float(settings[key])
    return settings


def _static_loop(target, rt, soft_tokens, packets, translator, texts, rows, *, max_new_tokens, do_sample, temperature,
                 top_p, top_k, repetition_penalty, no_repeat_ngram_size, stop_strings, eos_token_id, pad_token_id,
                 generator, sync_every):
    """Prefill on the static runtime and return the DecodeLoop that generates from there."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if packets is not None:
        batch, num_soft, chunks = _packet_chunks(target, packets, translator, rt.dtype)
        _prefill(target, rt, batch, num_soft, chunks, texts, max_new_tokens)
    elif soft_tokens is not None and soft_tokens.shape[0] == 1 and rows > 1:
        _prefill(target, rt, 1, soft_tokens.shape[1], [soft_tokens], texts, max_new_tokens)
    else:  # one shot, the same left-padded layout HF generate reads
        inputs = build_inputs(target, soft_tokens, texts, rows)
        rt.start(rows, rt.slots_for(inputs["inputs_embeds"].shape[1] + max_new_tokens))
        rt.prefill_chunk(inputs["inputs_embeds"], inputs["attention_mask"])
    processors = logits_processors(do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k,
                                   repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    stop = StopStringCriteria(tokenizer=target.tokenizer, stop_strings=stop_strings) if stop_strings else None
    return DecodeLoop(rt, rt.prefill_logits(), max_new_tokens=max_new_tokens, pad_token_id=pad_token_id,
                      eos_token_id=eos_token_id, processors=processors, do_sample=do_sample, stop_criteria=stop,
                      generator=generator, sync_every=sync_every)


class _OwnPenaltyNotice(logging.Filter):
    """Drops transformers' notice that a custom RepetitionPenaltyLogitsProcessor "takes precedence"
    over its own: generate() passes that processor on purpose (see _hf_generate), the user did not."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("RepetitionPenaltyLogitsProcessor" in message and "take precedence" in message)


@contextlib.contextmanager
def _quiet_own_penalty():
    hf_logger, notice = logging.getLogger("transformers.generation.utils"), _OwnPenaltyNotice()
    hf_logger.addFilter(notice)
    try:
        yield
    finally:
        hf_logger.removeFilter(notice)


def _hf_generate(target, soft_tokens, packets, translator, texts, rows, *, max_new_tokens, do_sample, temperature,
                 top_p, top_k, repetition_penalty, no_repeat_ngram_size, stop_strings, eos_token_id, pad_token_id,
                 streamer, synced_gpus=False):
    if packets is not None:
        soft_tokens = decode(packets, translator=translator, dtype=target.model.dtype, device=target.device)
        check_soft_tokens(soft_tokens, target.hidden_size)
        rows = len(texts) if texts is not None and soft_tokens.shape[0] == 1 else soft_tokens.shape[0]
    if soft_tokens is not None and soft_tokens.shape[0] == 1 and rows > 1:
        soft_tokens = soft_tokens.expand(rows, -1, -1)
    inputs = build_inputs(target, soft_tokens, texts, rows)
    kwargs = dict(
        inputs_embeds=inputs["inputs_embeds"],
        attention_mask=inputs["attention_mask"],
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        synced_gpus=synced_gpus,
    )
    penalty = repetition_penalty is not None and repetition_penalty != 1.0
    if penalty:
        # transformers 5.x builds this processor with prompt_ignore_length = each row's left padding,
        # which with inputs_embeds skips a padded row's first generated tokens. A processor of the
        # same class replaces HF's at HF's position in the list (its merge rule), so the order of
        # processors is unchanged and the penalty sees every generated token, as the static path.
        kwargs.update(logits_processor=LogitsProcessorList([repetition_penalty_processor(repetition_penalty)]))
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if stop_strings:
        kwargs.update(stop_strings=stop_strings, tokenizer=target.tokenizer)
    if streamer is not None:  # e.g. transformers.TextIteratorStreamer(target.tokenizer, skip_prompt=True)
        kwargs.update(streamer=streamer)
    with _quiet_own_penalty() if penalty else contextlib.nullcontext():
        return target.model.generate(**kwargs)


def generate(
    target: LoadedModel,
    soft_tokens: torch.Tensor | None = None,
    *,
    translator=None,
    source: LoadedModel | None = None,
    source_texts: list[str] | None = None,
    texts: list[str] | None = None,
    packets=None,
    max_new_tokens: int | None = None,
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    stop_strings: list[str] | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    generation_config: GenerationConfig | None = None,
    source_max_tokens: int = 512,
    return_ids: bool = False,
    streamer=None,
    runtime: str = "auto",
    generator: torch.Generator | None = None,
    synced_gpus: bool = False,
    runtime_options: dict | None = None,
):
    """Generate from soft tokens or packets (and optional target text); returns the decoded new text per row.

    ``packets``: bytes or an iterable of packets of one message (chunks in any order; with an
    iterator the soft tokens are prefilled as their chunks arrive); ``translator`` then only decodes
    them (fingerprint check, bottleneck projection). One row of soft tokens with several ``texts``
    serves every text. ``runtime``: "auto" (static runtime for Llama-family targets, else HF),
    "static" (UnsupportedModelError for other targets) or "hf". ``generator`` seeds sampling on the
    static runtime (HF's path uses the global RNG). ``synced_gpus``: every rank keeps stepping until
    all are done (HF's flag; needed when the target is sharded with FSDP, whose every forward is a
    collective); it takes HF's path, the static runtime holding whole weights. ``runtime_options``
    configure the static runtime (``StaticRuntime``'s keywords, e.g. ``{"graph_prefill": True}`` to
    replay each prefill shape as a CUDA graph, ``{"compile": True}``); the runtime is rebuilt when they change.

    Generation settings (HF's meaning; a keyword left None is not given): ``max_new_tokens`` (32),
    ``do_sample`` (False), ``temperature`` (1.0), ``top_p`` (1.0), ``top_k`` (the model's generation
    config, else 50), ``repetition_penalty`` (1.0; over the generated tokens only), ``no_repeat_ngram_size``
    (0), ``stop_strings``, ``eos_token_id`` / ``pad_token_id`` (the tokenizer's). ``generation_config``:
    a ``transformers.GenerationConfig`` whose set fields replace these defaults and are replaced by
    keywords; setting a field outside this list raises a ValueError naming it.
    """
    args = resolve_generation(target, generation_config, max_new_tokens=max_new_tokens, do_sample=do_sample,
                              temperature=temperature, top_p=top_p, top_k=top_k,
                              repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                              stop_strings=stop_strings, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    soft_tokens, rows = _resolve_soft_tokens(target, soft_tokens, translator, source, source_texts, texts, packets, source_max_tokens)
    rt = select_runtime(target, runtime, synced_gpus, runtime_options)
    with torch.no_grad():
        if rt is None:
            out = _hf_generate(target, soft_tokens, packets, translator, texts, rows, streamer=streamer,
                               synced_gpus=synced_gpus, **args)
        else:
            loop = _static_loop(target, rt, soft_tokens, packets, translator, texts, rows, generator=generator,
                                sync_every=1 if streamer is not None else 16, **args)
            if streamer is None:
                out = loop.run()
            else:
                try:
                    streamer.put(torch.zeros(loop.generated.shape[0], 0, dtype=torch.long))  # HF's empty prompt
                    for nxt in loop:
                        streamer.put(nxt.cpu())
                finally:
                    streamer.end()
                out = loop.ids()
    if return_ids:
        return out
    return target.tokenizer.batch_decode(out, skip_special_tokens=True)


class _TextPieces:
    """Incremental detokenisation: each new token's text, holding back an incomplete UTF-8 character."""

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.sent = tokenizer, [], 0

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        piece, self.sent = text[self.sent :], len(text)
        return piece

    def finish(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        return text[self.sent :]


def stream(target: LoadedModel, soft_tokens: torch.Tensor | None = None, **kwargs) -> Iterator[str]:
    """Like ``generate`` for one row, but yields the generated text piece by piece as it is decoded.

    Takes ``generate``'s keyword arguments except ``streamer`` and ``return_ids``; the pieces join
    to ``generate``'s text. On the HF path it runs HF generate in a thread with a TextIteratorStreamer.
    """
    for bad in ("streamer", "return_ids"):
        if bad in kwargs:
            raise TypeError(f"stream() does not take {bad!r}")
    runtime = kwargs.pop("runtime", "auto")
    synced_gpus = kwargs.pop("synced_gpus", False)
    rt = select_runtime(target, runtime, synced_gpus, kwargs.pop("runtime_options", None))
    if rt is None:
        yield from _stream_hf(target, soft_tokens, {**kwargs, "synced_gpus": synced_gpus})
        return
    source_args = {k: kwargs.pop(k, None) for k in ("translator", "source", "source_texts", "texts", "packets")}
    source_max_tokens = kwargs.pop("source_max_tokens", 512)
    generator = kwargs.pop("generator", None)
    generation_config = kwargs.pop("generation_config", None)
    unknown = set(kwargs) - set(GENERATION_DEFAULTS)
    if unknown:
        raise TypeError(f"stream() got unexpected arguments {sorted(unknown)}")
    args = resolve_generation(target, generation_config, **kwargs)
    soft_tokens, rows = _resolve_soft_tokens(target, soft_tokens, source_args["translator"], source_args["source"],
                                             source_args["source_texts"], source_args["texts"], source_args["packets"],
                                             source_max_tokens)
    with torch.no_grad():
        loop = _static_loop(target, rt, soft_tokens, source_args["packets"], source_args["translator"],
                            source_args["texts"], rows, generator=generator, sync_every=1, **args)
        if loop.generated.shape[0] != 1:
            raise ValueError(f"stream() generates one row, got a batch of {loop.generated.shape[0]}")
        pieces = _TextPieces(target.tokenizer)
        for nxt in loop:
            piece = pieces.add(int(nxt[0]))
            if piece:
                yield piece
    tail = pieces.finish()
    if tail:
        yield tail


def _stream_hf(target, soft_tokens, kwargs):
    import threading

    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(target.tokenizer, skip_prompt=True, skip_special_tokens=True)
    errors = []

    def work():
        try:
            generate(target, soft_tokens, runtime="hf", streamer=streamer, **kwargs)
        except Exception as exc:  # re-raised in the consumer's thread below
            errors.append(exc)
            streamer.end()

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
    if errors:
        raise errors[0]
