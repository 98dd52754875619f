"""End to end, per request: latent path (source -> translator -> packets -> target) against text relay.

Used by benchmarks/gpu_runtime.py (``--e2e-only`` runs just this; by default it runs after the other
sections). Weights are random (train/random_models.py): the figures are about speed and bytes only.

``graphs`` (build_pair; on by default on CUDA, ``--no-e2e-graphs`` for the eager figures): every
prefill of both paths runs as a CUDA graph (StaticRuntime(graph_prefill=True), captured on the first
call of each shape, which ``first_call`` pays) and the translator forward as one (lw_runtime.graphs);
the source read of the latent path runs on the source's static runtime (``hidden_states``, stops
after the translator's layer) instead of the HF forward. Decoding is graphed in both modes.

Latent path, stage by stage (each timed alone: torch.cuda.synchronize, median of repeats after a warm-up):
  source_prefill    the source's states at the translator's layer: StaticRuntime.hidden_states with
                    graphs, else lw_runtime.encode_source (HF forward, stops after that block)
  translator        BottleneckedGatedTranslator forward (soft tokens + bottleneck latents, as lw_runtime.encode)
  encode_packets    lw_runtime.encode_soft_tokens: the real codec (INT8 or INT4, group 32) + header + CRC32C
  decode_packets    lw_runtime.decode: parse, check CRC and fingerprint, dequantize into the target's dtype
  receiver_prefill  [soft tokens][prompt] prefilled on the static runtime (lw_runtime.runtime), first logits
  answer            N greedy tokens, no EOS (eos_token_id=None): exactly N on both paths
Text relay, stage by stage:
  source_prefill    the source reads the same text on the static runtime (it is Llama-family)
  message           the source generates M tokens greedily, no EOS; ids go to the host and become text
  target_read       the target tokenizes [message][prompt] and prefills it on the static runtime
  answer            the same N greedy tokens
``answer`` = t(prefill + N tokens) - t(prefill). Totals are timed separately as one call of the whole
path (one sync at the end), so host/device overlap between stages counts as it would in serving.
``first_call`` runs each path once on fresh runtime caches (CUDA-graph capture, and for the first
path also Triton JIT and cuBLAS start-up), reported apart from the medians.

Random weights emit ids outside the byte tokenizer's 259 tokens, so the relay message is rendered as
one printable ASCII character per generated token (chr(32 + id % 95)): the target then reads exactly
M tokens and the message is M UTF-8 bytes. A real tokenizer averages about 4 bytes per token; both
figures are reported.
"""
from __future__ import annotations

import gc
import time

import torch

from lw_runtime.decode_loop import DecodeLoop
from lw_runtime.generate import build_inputs
from lw_runtime.graphs import CudaGraphed
from lw_runtime.kv_cache import kv_bytes_per_token
from lw_runtime.packets import decode, encode_soft_tokens
from lw_runtime.runtime import StaticRuntime, cache_length
from lw_runtime.source import encode_source
from lw_runtime.translator import BottleneckedGatedTranslator, TranslatorConfig
from lw_runtime.wire import message_bytes, translator_fingerprint
from train.random_models import build_random

NOTE = ("RANDOM WEIGHTS (train/random_models.py): speed, bytes and memory only; the generated text means nothing. "
        "Byte-level tokenizer: 1 token = 1 byte of ASCII text.")
PROMPT = "\nQuestion: what is the code?\nAnswer:"
BYTES_PER_TOKEN_REAL = 4  # typical of BPE tokenizers on English text
SMOL_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                  num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                  max_position_embeddings=8192, rms_norm_eps=1e-5)


def source_texts(batch: int, length: int) -> list[str]:
    """``batch`` different ASCII texts of exactly ``length`` characters (= tokens for the byte tokenizer)."""
    base = ("Fact sheet. The vault code of {name} is {code}. It was set on a Tuesday by the night guard, who wrote it "
            "down twice, once on the ledger and once on the back of a receipt from the station cafe. ")
    names = ["Alice", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana"]
    out = []
    for i in range(batch):
        text = base.format(name=names[i % len(names)], code=4000 + 37 * i)
        while len(text) < length:
            text += text
        out.append(text[:length])
    return out


class Pair:
    """Source + target (random weights) + translator + one static runtime per model."""

    def __init__(self, label, source, target, translator, notes: dict, graphs: bool = False):
        self.label, self.source, self.target, self.translator, self.notes = label, source, target, translator, notes
        self.graphs = graphs
        # fuses weights on CUDA (views: HF forward still works)
        self.rt_source = StaticRuntime(source.model, graph_prefill=graphs)
        self.rt_target = StaticRuntime(target.model, graph_prefill=graphs)
        self.translate = CudaGraphed(lambda h, m: translator(h, m, return_bottleneck=True), enabled=graphs)
        notes["graphs"] = ("prefills, translator and decode as CUDA graphs; source read on the static runtime"
                           if graphs else "decode graphed; prefills and translator eager; source read by the HF forward")


def build_pair(kind: str, dev, dtype, graphs: bool = False) -> Pair:
    """kind: "8b" (Mistral-7B-shaped source -> Llama-3.1-8B-shaped target, high_capacity, K=64),
    "smol" (SmolLM2-135M-shaped Llama as source and as target, the embedded preset, K=16);
    on CPU both shrink to tiny shapes."""
    t = time.time()
    if not dev.cuda:
        src_shape, src_kw, tgt_shape, tgt_kw, preset, k = "tiny", {}, "tiny-wide", {}, "tiny", 8
        label = "tiny -> tiny-wide (CPU dry run)"
    elif kind == "8b":
        src_shape, src_kw, tgt_shape, tgt_kw, preset, k = "mistral-7b", {}, "llama-3.1-8b", {}, "high_capacity", 64
        label = "Mistral-7B shape -> Llama-3.1-8B shape"
    else:
        src_shape, src_kw, tgt_shape, tgt_kw, preset, k = "tiny", SMOL_SHAPE, "tiny", SMOL_SHAPE, "embedded", 16
        label = "SmolLM2-135M shape -> SmolLM2-135M shape (no Gemma shape: random_models builds Llama-family only)"
    source = build_random(src_shape, device=dev.torch, dtype=dtype, seed=0, **src_kw)
    target = build_random(tgt_shape, device=dev.torch, dtype=dtype, seed=1, **tgt_kw)
    layer = source.num_layers // 2  # a middle layer, as trained translators read (train default 9 of Gemma's 18)
    cfg = TranslatorConfig.preset(preset, source_dim=source.hidden_size, target_dim=target.hidden_size,
                                  num_soft_tokens=k, source_layer=layer, source_position="conv", dropout=0.0,
                                  source_model=source.name, target_model=target.name)
    with torch.device(dev.torch):
        translator = BottleneckedGatedTranslator(cfg)
    with torch.no_grad():
        for name, p in translator.named_parameters():
            if name.split(".")[-1].startswith("gate_"):
                p.fill_(0.5)  # open branches, so every block's output matters (speed is the same either way)
    translator.set_target_rms(target.embedding_rms())
    translator = translator.to(dtype).eval().requires_grad_(False)
    n_tr = sum(p.numel() for p in translator.parameters())
    notes = {"pair": label, "source": source.name, "target": target.name, "translator_preset": preset,
             "soft_tokens": k, "source_layer": f"{layer} of {source.num_layers}", "translator_params": n_tr,
             "source_weight_GB": round(sum(p.numel() * p.element_size() for p in source.model.parameters()) / 1e9, 3),
             "target_weight_GB": round(sum(p.numel() * p.element_size() for p in target.model.parameters()) / 1e9, 3),
             "build_seconds": round(time.time() - t, 1)}
    return Pair(label, source, target, translator, notes, graphs=graphs and dev.cuda)


# ----------------------------------------------------------------------------- the two paths
def _answer(rt: StaticRuntime, logits, n: int, pad: int) -> torch.Tensor:
    ids = DecodeLoop(rt, logits, max_new_tokens=n, pad_token_id=pad, eos_token_id=None).run()
    if ids.shape[1] != n:
        raise RuntimeError(f"generated {ids.shape[1]} tokens, not {n}: the timing would be wrong")
    return ids


def _prefill_target(pair: Pair, soft, texts: list[str], n: int):
    """[soft tokens][text] (or text alone) on the target's static runtime; returns the first logits."""
    rt = pair.rt_target
    inputs = build_inputs(pair.target, soft, texts, len(texts))
    embeds = inputs["inputs_embeds"]
    rt.start(len(texts), cache_length(embeds.shape[1] + n))
    rt.prefill_chunk(embeds, inputs["attention_mask"])
    return rt.prefill_logits()


class Latent:
    """Stage functions of the latent path; each keeps its output for the next stage."""

    def __init__(self, pair: Pair, texts: list[str], bits: int, n: int):
        self.p, self.texts, self.bits, self.n = pair, texts, bits, n
        self.prompts = [PROMPT] * len(texts)

    def source_prefill(self):
        states = encode_source(self.p.source, self.texts, layer=self.p.translator.config.source_layer,
                               runtime=self.p.rt_source if self.p.graphs else None)
        self.hidden, self.mask = states.hidden, states.mask

    def translate(self):
        device = next(self.p.translator.parameters()).device
        self.soft, _ = self.p.translate(self.hidden.to(device), self.mask.to(device))

    def encode(self):
        self.packets = encode_soft_tokens(self.soft, translator_fingerprint(self.p.translator), self.bits, 32)

    def decode(self):
        self.received = decode(self.packets, translator=self.p.translator, dtype=self.p.rt_target.dtype,
                               device=self.p.target.device)

    def receiver_prefill(self):
        self.logits = _prefill_target(self.p, self.received, self.prompts, self.n)

    def prefill_and_answer(self):
        self.receiver_prefill()
        self.ids = _answer(self.p.rt_target, self.logits, self.n, self.p.target.tokenizer.pad_token_id)

    def whole(self):
        self.source_prefill()
        self.translate()
        self.encode()
        self.decode()
        self.prefill_and_answer()
        return self.ids


class Relay:
    """Stage functions of the text-relay path."""

    def __init__(self, pair: Pair, texts: list[str], message_tokens: int, n: int):
        self.p, self.texts, self.m, self.n = pair, texts, message_tokens, n

    def source_prefill(self):
        src, rt = self.p.source, self.p.rt_source
        batch = src.tokenizer(self.texts, return_tensors="pt", padding=True)
        ids, mask = batch["input_ids"].to(src.device), batch["attention_mask"].to(src.device)
        rt.start(ids.shape[0], cache_length(ids.shape[1] + self.m))
        rt.prefill_chunk(src.embed(ids), mask)
        self.logits = rt.prefill_logits()

    def prefill_and_message(self):
        self.source_prefill()
        ids = _answer(self.p.rt_source, self.logits, self.m, self.p.source.tokenizer.pad_token_id).tolist()
        # stand-in detokenizer for random weights (see the module docstring): one ASCII char per token
        self.messages = ["".join(chr(32 + t % 95) for t in row) for row in ids]

    def target_read(self):
        self.logits_t = _prefill_target(self.p, None, [m + PROMPT for m in self.messages], self.n)

    def read_and_answer(self):
        self.target_read()
        self.ids = _answer(self.p.rt_target, self.logits_t, self.n, self.p.target.tokenizer.pad_token_id)

    def whole(self):
        self.prefill_and_message()
        self.read_and_answer()
        return self.ids


# ----------------------------------------------------------------------------- measurement
def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def _fresh(pair: Pair) -> None:
    """Drop the runtimes' cached shapes, so the next call allocates caches and captures graphs again."""
    for rt in (pair.rt_source, pair.rt_target):
        rt.clear()
    pair.translate.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def first_calls(dev, pair: Pair, batch: int, src_len: int, msg: int, n: int, bits: int = 8) -> dict:
    """Seconds of one call of each path on fresh runtime caches (graph capture etc. included)."""
    texts = source_texts(batch, src_len)
    out = {}
    for name, path in (("latent", Latent(pair, texts, bits, n)), ("relay", Relay(pair, texts, msg, n))):
        _fresh(pair)
        dev.sync()
        t = time.perf_counter()
        path.whole()
        dev.sync()
        out[f"{name}_s"] = round(time.perf_counter() - t, 3)
    out["note"] = "fresh runtime caches: cache allocation + CUDA-graph capture included; the first path also pays Triton JIT / cuBLAS start-up"
    return out


def end_to_end(dev, pair: Pair, batch: int, src_len: int, msg: int, n: int, reps: int, bits_list=(8, 4)) -> dict:
    """Stages and totals of both paths at one batch size; speedup, bytes on the wire, peak memory."""
    texts = source_texts(batch, src_len)
    tok_src = len(pair.source.tokenizer(texts[0])["input_ids"])
    tok_prompt = len(pair.target.tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    k, d = pair.translator.config.num_soft_tokens, pair.translator.config.target_dim
    out = {"weights": "RANDOM (speed only)", "pair": pair.label, "batch": batch, "source_text_tokens": tok_src,
           "soft_tokens": k, "message_tokens": msg, "prompt_tokens": tok_prompt, "answer_tokens": n,
           "repeats": reps, "timing": "median after 1 warm-up, torch.cuda.synchronize around each"}

    # latent path, per stage and whole, for each wire width
    latent_by_bits = {}
    for bits in bits_list:
        lat = Latent(pair, texts, bits, n)
        lat.whole()  # warm-up; fills every stage's inputs
        st = {}
        if bits == bits_list[0]:
            st["source_prefill"] = dev.timed(lat.source_prefill, reps)
            st["translator"] = dev.timed(lat.translate, reps)
        st["encode_packets"] = dev.timed(lat.encode, reps)
        st["decode_packets"] = dev.timed(lat.decode, reps)
        st["receiver_prefill"] = dev.timed(lat.receiver_prefill, reps)
        st["answer"] = max(dev.timed(lat.prefill_and_answer, reps) - st["receiver_prefill"], 0.0)
        dev.reset_peak()
        total = dev.timed(lat.whole, reps)
        latent_by_bits[bits] = {"stages": st, "total": total, "memory": dev.memory(),
                                "wire_bytes": sum(len(p) for p in lat.packets)}
    main_bits = bits_list[0]
    lat_st = dict(latent_by_bits[main_bits]["stages"])
    out[f"latent_int{main_bits}_stages_ms"] = {k_: _ms(v) for k_, v in lat_st.items()}
    out[f"latent_int{main_bits}_stages_sum_ms"] = _ms(sum(lat_st.values()))
    out[f"latent_int{main_bits}_total_ms"] = _ms(latent_by_bits[main_bits]["total"])
    for bits in bits_list[1:]:
        st = latent_by_bits[bits]["stages"]
        full = {**lat_st, **st}
        out[f"latent_int{bits}_stages_ms"] = {k_: _ms(v) for k_, v in st.items()}
        out[f"latent_int{bits}_stages_sum_ms"] = _ms(sum(full.values()))
        out[f"latent_int{bits}_total_ms"] = _ms(latent_by_bits[bits]["total"])

    # text relay
    rel = Relay(pair, texts, msg, n)
    rel.whole()
    rs = {}
    rs["source_prefill"] = dev.timed(rel.source_prefill, reps)
    rs[f"message_{msg}_tokens"] = max(dev.timed(rel.prefill_and_message, reps) - rs["source_prefill"], 0.0)
    rs["target_read_prefill"] = dev.timed(rel.target_read, reps)
    rs["answer"] = max(dev.timed(rel.read_and_answer, reps) - rs["target_read_prefill"], 0.0)
    dev.reset_peak()
    relay_total = dev.timed(rel.whole, reps)
    relay_mem = dev.memory()
    out["relay_stages_ms"] = {k_: _ms(v) for k_, v in rs.items()}
    out["relay_stages_sum_ms"] = _ms(sum(rs.values()))
    out["relay_total_ms"] = _ms(relay_total)

    # speedups: whole path, and up to the first answer token (everything but the N-token answer)
    lat_total = latent_by_bits[main_bits]["total"]
    lat_ready = sum(v for k_, v in lat_st.items() if k_ != "answer")
    rel_ready = sum(v for k_, v in rs.items() if k_ != "answer")
    out["speedup"] = {"total_x": round(relay_total / lat_total, 2),
                      "stage_sums_x": round(sum(rs.values()) / sum(lat_st.values()), 2),
                      "before_answer_x": round(rel_ready / lat_ready, 2),
                      "latent_before_answer_ms": _ms(lat_ready), "relay_before_answer_ms": _ms(rel_ready),
                      "goal_x": 10.0, "met": relay_total / lat_total >= 10.0}
    for bits in bits_list[1:]:
        out["speedup"][f"total_x_int{bits}"] = round(relay_total / latent_by_bits[bits]["total"], 2)

    # bytes on the wire
    msg_utf8 = sum(len(m.encode("utf-8")) for m in rel.messages)
    tr_cfg = pair.translator.config
    wire = {f"latent_int{b}": latent_by_bits[b]["wire_bytes"] for b in bits_list}
    wire["latent_bf16_raw"] = message_bytes(batch, k, d, 16)
    for b in bits_list:
        wire[f"latent_bottleneck_int{b}"] = message_bytes(batch, k, tr_cfg.bottleneck_dim, b)
    wire["relay_message_utf8"] = msg_utf8
    wire["relay_message_est_real_tokenizer"] = batch * msg * BYTES_PER_TOKEN_REAL
    wire["note"] = ("latent_*: measured packets (headers + CRC); bottleneck_*: message_bytes for bottleneck-latent "
                    "packets (receiver runs the output projection); relay: byte tokenizer = 1 B/token, real ~4 B/token")
    out["wire_bytes"] = wire

    # memory and KV cache
    src_cfg, tgt_cfg = pair.source.model.config, pair.target.model.config

    kv_s = kv_bytes_per_token(src_cfg, pair.source.model.dtype.itemsize)
    kv_t = kv_bytes_per_token(tgt_cfg, pair.target.model.dtype.itemsize)
    out["kv_bytes_per_request"] = {"latent_target": (k + tok_prompt + n) * kv_t,
                                   "relay_source": (tok_src + msg) * kv_s, "relay_target": (msg + tok_prompt + n) * kv_t,
                                   "note": "tokens held x KV bytes/token (the static runtime allocates the next power of two)"}
    if dev.cuda:  # both models resident; torch max_memory_allocated reset before each path's totals
        for b in bits_list:
            out[f"peak_memory_latent_int{b}"] = latent_by_bits[b]["memory"]
        out["peak_memory_relay"] = relay_mem
    return out
