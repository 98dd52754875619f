"""The frozen models and their cached source states, shared within one process.

Decisions: the source is frozen, so each example's source states are computed once (in batches of
64) and kept by example id; rows come back left-padded like the tokenizer pads. ``shared_models``
keeps one (source, target) pair per process so sweeps and tests do not reload them; loading another
pair drops the old pair and its caches. ``truncate_blocks`` cuts a model to its first N decoder
blocks in place (``--target-layers``) and returns the function that puts them back.
"""

from __future__ import annotations

import torch
from torch import nn

from lw_runtime.models import load_model
from lw_runtime.protocols import source_text
from lw_runtime.source import encode_source

from .config import TrainConfig


def truncate_blocks(loaded, keep: int):
    """Keep the first ``keep`` decoder blocks of a model (same weights, fewer layers); returns a
    function that puts the removed blocks back."""
    if keep <= 0:
        return lambda: None
    decoder = loaded.model.base_model
    if keep > len(decoder.layers):
        raise ValueError(f"--target-layers {keep} exceeds the target's {len(decoder.layers)} blocks")
    text_cfg = loaded.model.config.get_text_config()
    saved = (decoder.layers, text_cfg.num_hidden_layers, getattr(text_cfg, "layer_types", None))
    decoder.layers = nn.ModuleList(list(decoder.layers)[:keep])
    text_cfg.num_hidden_layers = keep
    if saved[2]:
        text_cfg.layer_types = saved[2][:keep]

    def restore():
        decoder.layers, text_cfg.num_hidden_layers = saved[0], saved[1]
        if saved[2]:
            text_cfg.layer_types = saved[2]

    return restore


class SourceCache:
    """Source states per example id, computed once in batches (the source is frozen)."""

    def __init__(self, source, layer: int, max_tokens: int, protocol: str, enabled: bool = True,
                 order: str = "passage_first"):
        self.source, self.layer, self.max_tokens, self.protocol, self.enabled = source, layer, max_tokens, protocol, enabled
        self.order = order
        self.store: dict[str, torch.Tensor] = {}

    def _encode(self, examples):
        states = encode_source(self.source, [source_text(e, self.protocol, self.order) for e in examples], self.layer, self.max_tokens)
        return [states.hidden[i][states.mask[i]] for i in range(len(examples))]

    def fill(self, examples, batch_size: int = 64):
        if not self.enabled:
            return
        todo = [e for e in examples if e.id not in self.store]
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            for e, h in zip(chunk, self._encode(chunk)):
                self.store[e.id] = h

    def batch(self, examples, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.enabled:
            missing = [e for e in examples if e.id not in self.store]
            self.fill(missing)
            rows = [self.store[e.id] for e in examples]
        else:
            rows = self._encode(examples)
        width = max(r.shape[0] for r in rows)
        hidden = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, r in enumerate(rows):  # left padding, like the tokenizer
            hidden[i, width - r.shape[0] :] = r
            mask[i, width - r.shape[0] :] = True
        return hidden.to(device), mask.to(device)


_MODELS: dict = {}


def shared_models(cfg: TrainConfig, device, dtype):
    """Load (or reuse, within one process: sweeps and tests) the frozen source and target."""
    key = (cfg.source, cfg.target, str(device), str(dtype))
    if key not in _MODELS:
        forget_shared_models()  # one pair at a time; the caches hold the old source model
        _MODELS[key] = (load_model(cfg.source, dtype=dtype, device=device), load_model(cfg.target, dtype=dtype, device=device))
    return _MODELS[key]


_CACHES: dict = {}


def shared_cache(cfg: TrainConfig, source) -> "SourceCache":
    key = (id(source), cfg.source_layer, cfg.max_source_tokens, cfg.protocol, cfg.cache_source, cfg.source_order)
    if key not in _CACHES:
        _CACHES[key] = SourceCache(source, cfg.source_layer, cfg.max_source_tokens, cfg.protocol, cfg.cache_source,
                                   cfg.source_order)
    return _CACHES[key]


def forget_shared_models() -> None:
    """Drop the shared pair and its caches (e.g. after sharding changed the target's weights)."""
    _MODELS.clear()
    _CACHES.clear()
