"""Receiver fast runtime: our own Llama-family forward over a static KV cache, prefill chunk by chunk, graphed decode.

Decisions (gpt-fast style; docs/runtime.md has the long form):
- The runtime reads the weights of the loaded HF model (``LlamaForCausalLM`` / ``MistralForCausalLM``
  without a sliding window: SmolLM2, Llama-3.x, Mistral) and runs its own pure-torch forward: RMSNorm
  as HF computes it, RoPE tables taken from the model's own rotary module (so llama3/linear/yarn
  scaling come for free), SwiGLU, GQA by folding each KV head's query heads into the query-length
  axis (no repeated keys). Any other model raises ``UnsupportedModelError``; ``generate`` then uses HF.
- It owns its decode loop and KV cache (lw_runtime.kv_cache) instead of HF's StaticCache +
  torch.compile, which fails on transformers 5.17 ("accessing tensor output of CUDAGraphs that has
  been overwritten"). On CUDA one decode step (embed -> layers -> logits) is captured in a CUDA graph
  per (batch, cache length) with static input/output buffers; on CPU it runs eagerly. Optional
  ``compile=True`` runs the step through torch.compile before capture (fewer, fused kernels).
- ``fuse_weights`` (default on CUDA) concatenates q/k/v and gate/up into one matrix each and points
  the HF parameters at views of it: one matmul instead of three/two, no extra memory, same values.
- Prefill is chunked: ``prefill_chunk`` appends any (batch, T) block with a validity mask, so soft
  tokens can be prefilled as packet chunks arrive, then the text, then decoding starts. It runs
  eagerly unless ``graph_prefill=True``: then each (start slot, T) chunk shape of a cache is captured
  once in a CUDA graph (LRU of ``max_prefill_graphs`` per cache, each with its own memory pool) and
  replayed, which removes the per-kernel launch cost that dominates short prefills on a large
  model. Opt-in, because every new prompt length costs a capture: it suits fixed shapes (a soft-token
  prefix, benchmarks, bucketed serving). ``hidden_states(embeds, mask, layer)`` runs the same
  prefill up to one block and returns its output: the source read of a Llama-family sender.
- Sampling, repetition penalty, no-repeat n-grams and stop strings reuse HF's own logits processors
  and ``StopStringCriteria`` on our logits, so the semantics are HF's; EOS rows then emit pad like HF.
  The host checks for "all rows finished" every ``sync_every`` steps (every step when streaming).
Left out: speculative decoding, paged/continuous batching, tensor parallelism.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import torch
import torch.nn.functional as F

from .graphs import capture, lru_entry
from .kv_cache import CacheFullError, KVCache, PrefixCache
from .source import resolve_layer

SUPPORTED_MODEL_TYPES = ("llama", "mistral")
_SEQUENCE_DEPENDENT_ROPE = ("dynamic", "longrope")


class UnsupportedModelError(TypeError):
    """A model the static runtime cannot run (not a Llama-family causal LM); use runtime='hf'."""


def check_supported(model) -> None:
    """Raise UnsupportedModelError unless ``model`` is a Llama-family causal LM this runtime can run."""
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", None)
    name = type(model).__name__
    if kind not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(f"{name} (model_type {kind!r}) is not Llama-family; the static runtime runs {SUPPORTED_MODEL_TYPES}")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"{name}: hidden_act {cfg.hidden_act!r}, the runtime implements SwiGLU (silu)")
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type in _SEQUENCE_DEPENDENT_ROPE:
        raise UnsupportedModelError(f"{name}: rope_type {rope_type!r} depends on the sequence length; not supported")
    inner = getattr(model, "model", None)
    if not all(hasattr(inner, a) for a in ("layers", "norm", "rotary_emb")) or not hasattr(model, "lm_head"):
        raise UnsupportedModelError(f"{name}: expected .model.layers/.model.norm/.model.rotary_emb and .lm_head")
    for layer in inner.layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if not (all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj"))
                and all(hasattr(mlp, a) for a in ("gate_proj", "up_proj", "down_proj"))
                and hasattr(layer, "input_layernorm") and hasattr(layer, "post_attention_layernorm")):
            raise UnsupportedModelError(f"{name}: decoder layers are not plain Llama layers (wrapped or modified)")
    if any(hasattr(p, "_local_tensor") or hasattr(p, "device_mesh") for p in model.parameters()):
        raise UnsupportedModelError(f"{name}: parameters are sharded (DTensor, e.g. FSDP2); the runtime needs whole weights")


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF LlamaRMSNorm exactly: normalise in fp32, cast back, then scale."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _fuse(linears) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the weights (and biases) of nn.Linear layers along outputs; re-point each layer's
    parameters at its slice so the HF model keeps working and no memory is duplicated."""
    weight = torch.cat([m.weight.data for m in linears])
    has_bias = linears[0].bias is not None
    bias = torch.cat([m.bias.data for m in linears]) if has_bias else None
    start = 0
    for m in linears:
        n = m.weight.shape[0]
        m.weight.data = weight[start : start + n]
        if has_bias:
            m.bias.data = bias[start : start + n]
        start += n
    return weight, bias


class _Layer:
    def __init__(self, layer, fuse: bool):
        attn, mlp = layer.self_attn, layer.mlp
        self.attn_norm, self.mlp_norm = layer.input_layernorm.weight, layer.post_attention_layernorm.weight
        qkv, gate_up = (attn.q_proj, attn.k_proj, attn.v_proj), (mlp.gate_proj, mlp.up_proj)
        self.splits = [m.weight.shape[0] for m in qkv], [m.weight.shape[0] for m in gate_up]
        if fuse:
            self.qkv, self.gate_up = [_fuse(qkv)], [_fuse(gate_up)]
        else:
            self.qkv = [(m.weight, m.bias) for m in qkv]
            self.gate_up = [(m.weight, m.bias) for m in gate_up]
        self.o = (attn.o_proj.weight, attn.o_proj.bias)
        self.down = (mlp.down_proj.weight, mlp.down_proj.bias)

    @staticmethod
    def project(x, parts, splits):
        if len(parts) == 1:
            return F.linear(x, *parts[0]).split(splits, dim=-1)
        return [F.linear(x, w, b) for w, b in parts]


class LlamaForward:
    """The forward pass of a Llama-family HF model over a ``KVCache``, reading the model's own weights."""

    def __init__(self, model, fuse_weights: bool = False):
        check_supported(model)
        cfg = model.config
        self.model = model
        self.eps = cfg.rms_norm_eps
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.sliding_window = getattr(cfg, "sliding_window", None) if cfg.model_type == "mistral" else None
        self.context = getattr(cfg, "max_position_embeddings", None)  # positions the model was built for
        self.embed = model.get_input_embeddings().weight
        self.norm = model.model.norm.weight
        self.lm_head = model.lm_head.weight
        self.lm_head_bias = getattr(model.lm_head, "bias", None)
        self.layers = [_Layer(layer, fuse_weights) for layer in model.model.layers]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def rope_tables(self, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin (max_len, head_dim) for positions 0..max_len-1, from the model's rotary module."""
        positions = torch.arange(max_len, device=self.embed.device)[None]
        probe = torch.zeros(1, dtype=self.embed.dtype, device=self.embed.device)
        cos, sin = self.model.model.rotary_emb(probe, positions)
        return cos[0].to(self.embed.dtype), sin[0].to(self.embed.dtype)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            return F.linear(hidden, self.lm_head, self.lm_head_bias).float()

    def __call__(self, x, cache: KVCache, slots, positions, mask, cos_table, sin_table, kv_len: int,
                 stop_layer: int | None = None):
        """x (B, T, D) embeddings written at cache ``slots`` (T,) with RoPE ``positions`` (B, T);
        ``mask`` (B, 1, T, kv_len) bool says which cached slots each query reads. Returns the final-norm
        hidden states, or with ``stop_layer`` = i the output of block i (no final norm; 0 = the input),
        computing nothing above it."""
        with torch.autocast(x.device.type, enabled=False):  # the cache has the weights' dtype; no autocast casts
            return self._forward(x, cache, slots, positions, mask, cos_table, sin_table, kv_len, stop_layer)

    def _forward(self, x, cache, slots, positions, mask, cos_table, sin_table, kv_len, stop_layer=None):
        b, t, _ = x.shape
        hd, rep = self.head_dim, self.heads // self.kv_heads
        cos, sin = cos_table[positions].unsqueeze(1), sin_table[positions].unsqueeze(1)  # (B, 1, T, hd)
        if rep > 1 and t > 1:
            mask = mask.repeat(1, 1, rep, 1)  # query row r*T + t of a KV group reads like token t
        layers = self.layers if stop_layer is None else self.layers[:stop_layer]
        for i, layer in enumerate(layers):
            h = _rms_norm(x, layer.attn_norm, self.eps)
            q, k, v = _Layer.project(h, layer.qkv, layer.splits[0])
            q = q.view(b, t, self.heads, hd).transpose(1, 2)
            k = k.view(b, t, self.kv_heads, hd).transpose(1, 2)
            v = v.view(b, t, self.kv_heads, hd).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            cache.k[i].index_copy_(2, slots, k)
            cache.v[i].index_copy_(2, slots, v)
            q = q.reshape(b, self.kv_heads, rep * t, hd)  # heads g*rep..g*rep+rep-1 share KV head g
            o = F.scaled_dot_product_attention(q, cache.k[i][:, :, :kv_len], cache.v[i][:, :, :kv_len],
                                               attn_mask=mask, scale=hd**-0.5)
            o = o.reshape(b, self.heads, t, hd).transpose(1, 2).reshape(b, t, self.heads * hd)
            x = x + F.linear(o, *layer.o)
            h = _rms_norm(x, layer.mlp_norm, self.eps)
            gate, up = _Layer.project(h, layer.gate_up, layer.splits[1])
            x = x + F.linear(F.silu(gate) * up, *layer.down)
        return x if stop_layer is not None else _rms_norm(x, self.norm, self.eps)


class _Slot:
    """A cache of one (batch, max_len) with its RoPE tables and, on CUDA, its captured decode graph."""

    def __init__(self, fwd: LlamaForward, batch: int, max_len: int):
        e = fwd.embed
        self.cache = KVCache(fwd.num_layers, batch, fwd.kv_heads, max_len, fwd.head_dim, e.dtype, e.device)
        self.cos, self.sin = fwd.rope_tables(max_len)
        self.last_hidden = torch.zeros(batch, e.shape[1], dtype=e.dtype, device=e.device)
        self.tokens = torch.zeros(batch, dtype=torch.long, device=e.device)  # static decode inputs
        self.slot = torch.zeros(1, dtype=torch.long, device=e.device)
        self.graph = None
        self.logits = None
        self.prefill_graphs: OrderedDict = OrderedDict()  # (start, T, stop layer) -> graph + static buffers


class StaticRuntime:
    """Static-cache generation for one Llama-family model: ``start`` -> ``prefill_chunk``... -> ``decode_step``...

    Caches (and graphs) are kept for the ``max_slots`` most recent (batch, max_len) shapes.
    """

    def __init__(self, model, *, cuda_graphs: bool | None = None, compile: bool = False,
                 fuse_weights: bool | None = None, max_slots: int = 2, graph_prefill: bool = False,
                 max_prefill_graphs: int = 8):
        device = model.get_input_embeddings().weight.device
        fuse = device.type == "cuda" if fuse_weights is None else fuse_weights
        self.forward = LlamaForward(model, fuse_weights=fuse)
        self.fuse_weights = fuse
        self.weights_key = _weights_key(self.forward.embed, model)  # where the weights were when read
        self.device, self.dtype = device, self.forward.embed.dtype
        self.cuda_graphs = (device.type == "cuda") if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and device.type != "cuda":
            raise ValueError("cuda_graphs=True needs the model on a CUDA device")
        self.compile = compile
        if graph_prefill and not self.cuda_graphs:
            raise ValueError("graph_prefill=True needs CUDA graphs (a model on a CUDA device)")
        self.graph_prefill, self.max_prefill_graphs = graph_prefill, max_prefill_graphs
        self._step_fn = torch.compile(self._step, fullgraph=True, dynamic=False) if compile else self._step
        self.max_slots = max_slots
        self._slots: OrderedDict[tuple[int, int], _Slot] = OrderedDict()
        self.active: _Slot | None = None

    @property
    def cache(self) -> KVCache:
        if self.active is None:
            raise RuntimeError("no request started: call start() first")
        return self.active.cache

    # ------------------------------------------------------------------ request setup
    def clear(self) -> None:
        """Drop every cached (batch, max_len) slot and its graphs; the next ``start`` allocates again."""
        self._slots.clear()
        self.active = None

    def slots_for(self, needed: int) -> int:
        """Cache slots to allocate for a request of ``needed`` positions (``cache_length``); a request
        beyond the model's context is refused before any cache is sized for it (a message's declared
        length arrives before its data)."""
        context = self.forward.context
        if context and needed > context:
            raise CacheFullError(f"{needed} positions are beyond the target's context of {context}")
        return cache_length(needed)

    def start(self, batch: int, max_len: int, prefix: PrefixCache | None = None, prefix_rows: list[int] | None = None) -> KVCache:
        """Begin a request of ``batch`` rows needing at most ``max_len`` cache slots (prefix + prompt + new tokens)."""
        if batch < 1 or max_len < 1:
            raise ValueError(f"batch and max_len must be >= 1, got {batch}, {max_len}")
        window = self.forward.sliding_window
        if window is not None and max_len > window:
            raise CacheFullError(f"{max_len} slots exceed the model's sliding window of {window}; the runtime does not slide")
        slot = lru_entry(self._slots, (batch, max_len), self.max_slots, lambda: _Slot(self.forward, batch, max_len))
        self.active = slot
        slot.cache.reset()
        slot.last_hidden.zero_()
        if prefix is not None:
            slot.cache.load_prefix(prefix, prefix_rows)
            rows = prefix_rows if prefix_rows is not None else ([0] * batch if prefix.rows == 1 else list(range(batch)))
            slot.last_hidden.copy_(prefix.last_hidden[torch.tensor(rows, device=self.device)])
        return slot.cache

    def snapshot(self) -> PrefixCache:
        """Copy the active request's cached tokens into a ``PrefixCache`` sized to them."""
        src = self.cache
        n = max(src.length, 1)
        copy = KVCache(self.forward.num_layers, src.batch, self.forward.kv_heads, n, self.forward.head_dim, self.dtype, self.device)
        for dst, part in zip(copy.k + copy.v, src.k + src.v):
            dst.copy_(part[:, :, :n])
        copy.valid.copy_(src.valid[:, :n])
        copy.next_pos.copy_(src.next_pos)
        copy.length = src.length
        return PrefixCache(copy, self.active.last_hidden.clone())

    def prefill_prefix(self, embeds: torch.Tensor, mask: torch.Tensor | None = None) -> PrefixCache:
        """Prefill rows once (e.g. the soft tokens of one message) and return them as a reusable prefix."""
        self.start(embeds.shape[0], embeds.shape[1])
        self.prefill_chunk(embeds, mask)
        return self.snapshot()

    # ------------------------------------------------------------------ prefill
    def prefill_chunk(self, embeds: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Append ``embeds`` (B, T, D) to every row; ``mask`` (B, T) marks real tokens (0 = padding)."""
        self._prefill(embeds, mask, None)

    def hidden_states(self, embeds: torch.Tensor, mask: torch.Tensor | None, layer: int) -> torch.Tensor:
        """The output of block ``layer`` for ``embeds`` (B, T, D), counted like ``lw_runtime.encode_source``
        (0 = the embeddings, -1 = the last block before the final norm; transformers' ``hidden_states[layer]``
        for 0 <= layer < L): a source read for the translator, nothing computed above that block.
        Positions count real tokens (left padding gets none), as in generation. It uses (and resets) the
        cache slot of shape (B, cache_length(T)) and leaves no request active. Returns a new (B, T, D)
        tensor in the weights' dtype."""
        layer = resolve_layer(self.forward.num_layers, layer)
        if layer == 0:
            return embeds.to(self.dtype).clone()
        self.start(embeds.shape[0], cache_length(embeds.shape[1]))
        try:
            return self._prefill(embeds, mask, layer).clone()
        finally:
            self.active = None  # the cache holds only the blocks below ``layer``: nothing to continue

    def _prefill(self, embeds, mask, stop_layer):
        cache, slot = self.cache, self.active
        if not torch.is_tensor(embeds) or embeds.dim() != 3 or embeds.shape[0] != cache.batch or embeds.shape[2] != self.forward.embed.shape[1]:
            raise ValueError(f"prefill_chunk expects ({cache.batch}, T, {self.forward.embed.shape[1]}) embeddings, got {getattr(embeds, 'shape', type(embeds))}")
        b, t, _ = embeds.shape
        if t == 0:
            return None
        mask = torch.ones(b, t, dtype=torch.bool, device=self.device) if mask is None else mask.to(self.device).bool()
        if mask.shape != (b, t):
            raise ValueError(f"mask of shape {tuple(mask.shape)} for embeddings of {(b, t)}")
        cache.reserve(t)  # raises CacheFullError
        start = cache.length
        embeds = embeds.to(device=self.device, dtype=self.dtype)
        if self.graph_prefill:
            hidden = self._replay_prefill(slot, embeds, mask, start, stop_layer)
        else:
            with torch.inference_mode():
                hidden = self._prefill_math(slot, embeds, mask, start, stop_layer)
        cache.length = start + t
        return hidden

    def _prefill_math(self, slot: _Slot, embeds, mask, start: int, stop_layer):
        """Device work of one prefill chunk at cache slots [start, start + T): no host reads, so it can be
        captured in a CUDA graph (the slots are fixed by ``start``)."""
        cache = slot.cache
        b, t, _ = embeds.shape
        slots = torch.arange(start, start + t, device=self.device)
        kv_len = start + t
        positions = (cache.next_pos[:, None] + mask.long().cumsum(1) - 1).clamp(min=0)
        cache.valid[:, start:kv_len] = mask
        keys = torch.arange(kv_len, device=self.device)
        causal = keys[None, :] <= slots[:, None]  # (T, kv_len)
        attend = (cache.valid[:, None, :kv_len] & causal) | (keys[None, :] == slots[:, None])  # pads read themselves: no NaN
        hidden = self.forward(embeds, cache, slots, positions, attend[:, None], slot.cos, slot.sin, kv_len, stop_layer)
        if stop_layer is None:
            has = mask.any(1)
            last = t - 1 - mask.flip(1).long().argmax(1)
            picked = hidden[torch.arange(b, device=self.device), last]
            slot.last_hidden.copy_(torch.where(has[:, None], picked, slot.last_hidden))
        cache.next_pos += mask.long().sum(1)
        return hidden

    def _replay_prefill(self, slot: _Slot, embeds, mask, start: int, stop_layer):
        """The prefill chunk as a CUDA graph per (start slot, T, stop layer) of this cache: captured on
        first use (one eager warm-up whose cache writes are undone, then capture), replayed after.
        Returns the graph's output buffer (valid until the next replay of that graph)."""
        graph, static_embeds, static_mask, out = lru_entry(
            slot.prefill_graphs, (start, embeds.shape[1], stop_layer), self.max_prefill_graphs,
            lambda: self._capture_prefill(slot, embeds, mask, start, stop_layer))
        with torch.inference_mode():  # the static buffers are inference tensors, whatever mode the caller is in
            static_embeds.copy_(embeds)
            static_mask.copy_(mask)
            graph.replay()
        return out

    def _capture_prefill(self, slot: _Slot, embeds, mask, start: int, stop_layer):
        with torch.inference_mode():
            static_embeds, static_mask = embeds.clone(), mask.clone()
        # the warm-up's validity, positions and last hidden state are put back; the keys/values it
        # wrote are rewritten by the replay
        graph, out = capture(lambda: self._prefill_math(slot, static_embeds, static_mask, start, stop_layer),
                             restore=(slot.cache.next_pos, slot.cache.valid, slot.last_hidden))
        return graph, static_embeds, static_mask, out

    def prefill_logits(self) -> torch.Tensor:
        """(B, vocab) fp32 logits for each row's next token after the prefill."""
        if self.cache.length == 0:
            raise ValueError("nothing prefilled: every row needs at least one token")
        return self.forward.logits(self.active.last_hidden)

    # ------------------------------------------------------------------ decode
    def _step(self, slot: _Slot, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        cache = slot.cache
        x = F.embedding(tokens, self.forward.embed)[:, None]
        cache.valid.index_fill_(1, index, True)
        mask = cache.valid[:, None, None, :]
        hidden = self.forward(x, cache, index, cache.next_pos[:, None], mask, slot.cos, slot.sin, cache.max_len)
        cache.next_pos.add_(1)
        return self.forward.logits(hidden[:, -1])

    def _capture(self, slot: _Slot) -> None:
        """Warm up on a side stream (compiles, allocates), then record one step into a CUDA graph.

        Runs at the first decode step of a cache, with that step's token and slot: the warm-up
        writes only what the real step writes next (its slot's keys/values and validity); the RoPE
        positions it advances are restored."""
        slot.graph, slot.logits = capture(lambda: self._step_fn(slot, slot.tokens, slot.slot), warmups=3,
                                          restore=(slot.cache.next_pos,))

    def decode_step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,), return (B, vocab) fp32 logits for the next one.

        With CUDA graphs the returned tensor is the graph's output buffer: read it before the next step."""
        cache, slot = self.cache, self.active
        if cache.length >= cache.max_len:
            cache.reserve(1)  # raises CacheFullError
        slot.slot.fill_(cache.length)
        if self.cuda_graphs:
            slot.tokens.copy_(tokens)
            if slot.graph is None:
                self._capture(slot)
            slot.graph.replay()
            logits = slot.logits
        else:
            with torch.inference_mode():
                logits = self._step_fn(slot, tokens.to(self.device), slot.slot)
        cache.length += 1
        return logits


def _weights_key(embed: torch.Tensor, model) -> tuple:
    """Where the weights are, and which decoder blocks the model has now (a caller may cut or swap
    them, as ``--target-layers`` does during training): a change in either makes the runtime stale."""
    inner = getattr(model, "model", None)
    blocks = tuple(id(block) for block in getattr(inner, "layers", ()))
    return embed.data_ptr(), embed.dtype, embed.device, blocks


_RUNTIMES: "weakref.WeakKeyDictionary[torch.nn.Module, StaticRuntime]" = weakref.WeakKeyDictionary()


def runtime_for(model, **kwargs) -> StaticRuntime:
    """The StaticRuntime kept for ``model`` (built on first use; UnsupportedModelError for other models).

    Rebuilt when asked for other settings than it was built with (no keywords = the defaults) or when the model's weights moved (``.to(...)``), since
    the runtime holds references to the tensors it read."""
    rt = _RUNTIMES.get(model)
    embed = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    stale = rt is not None and (embed is None or rt.weights_key != _weights_key(embed, model))
    if rt is None or stale or rt.options != kwargs:  # no options = the defaults
        rt = StaticRuntime(model, **kwargs)
        rt.options = dict(kwargs)
        _RUNTIMES[model] = rt
    return rt


def cache_length(needed: int) -> int:
    """Slots to allocate for ``needed`` tokens: the next power of two, at least 64, so few shapes (and graphs) exist."""
    return max(64, 1 << (max(needed, 1) - 1).bit_length())
