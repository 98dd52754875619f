"""Static KV cache for the receiver runtime: preallocated buffers, one shared write slot, per-row validity.

Decisions (gpt-fast style, see docs/runtime.md):
- Keys and values live in preallocated buffers of shape (batch, kv_heads, max_len, head_dim), one
  pair per layer (separate tensors, not views of one, so torch.compile sees whole-buffer in-place
  writes as gpt-fast's do); a forward writes its tokens at slots ``[length, length + T)`` with
  ``index_copy_``, so shapes never change and a decode step can be captured in a CUDA graph.
- Every row writes at the same slot; rows of different lengths differ only in which slots are
  ``valid`` (a (batch, max_len) bool mask that attention reads) and in ``next_pos``, the RoPE position
  of each row's next token. Padding can therefore sit anywhere (``[pad][soft][text]`` or
  ``[soft][pad][text]``): the keys a row attends to and their positions are what HF's left padding
  gives, because RoPE is applied before the keys are cached.
- A ``PrefixCache`` is a batch of already prefilled rows (e.g. the soft tokens of one message)
  that ``KVCache.load_prefix`` copies into the first slots of any rows, so one latent prefill
  serves several text prompts.
Left out: paged blocks, eviction, sliding windows, quantized KV.
"""

from __future__ import annotations

import torch


class CacheFullError(ValueError):
    """A request needs more cache slots than the static cache holds."""


class KVCache:
    """Preallocated keys/values, slot validity and per-row positions for one batch."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device):
        shape = (batch, kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.valid = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        self.next_pos = torch.zeros(batch, dtype=torch.long, device=device)
        self.length = 0  # slots written so far (host-side; the same for every row)

    @property
    def batch(self) -> int:
        return self.k[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    @property
    def layout(self) -> tuple:
        """(layers, kv_heads, head_dim, dtype, device): what a prefix must share to be copied in."""
        _, kv_heads, _, head_dim = self.k[0].shape
        return len(self.k), kv_heads, head_dim, self.k[0].dtype, self.k[0].device

    @property
    def bytes_per_token(self) -> int:
        """Bytes of keys + values one token takes across all layers."""
        _, kv_heads, _, head_dim = self.k[0].shape
        return 2 * len(self.k) * kv_heads * head_dim * self.k[0].element_size()

    @property
    def nbytes(self) -> int:
        """Bytes the whole preallocated cache holds."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def request_bytes(self) -> list[int]:
        """KV bytes each row's valid tokens take (what a request costs, without padding)."""
        return [int(n) * self.bytes_per_token for n in self.valid.sum(1).tolist()]

    def reset(self) -> None:
        """Forget every token (buffers keep their memory; stale keys are masked by ``valid``)."""
        self.valid.zero_()
        self.next_pos.zero_()
        self.length = 0

    def reserve(self, num_slots: int) -> torch.Tensor:
        """The slot indices of the next ``num_slots`` tokens; CacheFullError when they do not fit."""
        if self.length + num_slots > self.max_len:
            raise CacheFullError(
                f"{self.length} cached + {num_slots} new tokens exceed the static cache of {self.max_len} slots"
            )
        return torch.arange(self.length, self.length + num_slots, device=self.valid.device)

    def load_prefix(self, prefix: "PrefixCache", rows: list[int] | None = None) -> None:
        """Copy prefix rows into slots [0, prefix.length) of this (empty) cache.

        ``rows[i]`` is the prefix row that batch row ``i`` starts from (default: row 0 for every
        row when the prefix has one row, else row i).
        """
        if self.length:
            raise ValueError("load_prefix needs an empty cache (call reset first)")
        src = prefix.cache
        if rows is None:
            rows = [0] * self.batch if src.batch == 1 else list(range(src.batch))
        if len(rows) != self.batch:
            raise ValueError(f"prefix rows map {len(rows)} rows onto a batch of {self.batch}")
        if any(not 0 <= r < src.batch for r in rows):
            raise ValueError(f"prefix rows {rows} out of range for a prefix of {src.batch} rows")
        if src.layout != self.layout:
            raise ValueError(f"prefix was made for another model, dtype or device: {src.layout} vs {self.layout}")
        n = prefix.length
        if n > self.max_len:
            raise CacheFullError(f"prefix of {n} tokens does not fit a cache of {self.max_len} slots")
        index = torch.tensor(rows, device=self.valid.device)
        for dst, part in zip(self.k + self.v, src.k + src.v):
            dst[:, :, :n] = part[:, :, :n].index_select(0, index)
        self.valid[:, :n] = src.valid[:, :n].index_select(0, index)
        self.next_pos.copy_(src.next_pos.index_select(0, index))
        self.length = n


class PrefixCache:
    """Rows prefilled once (a latent prefix) plus each row's final hidden state, ready to be copied."""

    def __init__(self, cache: KVCache, last_hidden: torch.Tensor):
        self.cache = cache
        self.last_hidden = last_hidden  # (rows, hidden): the state that predicts the token after the prefix

    @property
    def length(self) -> int:
        return self.cache.length

    @property
    def rows(self) -> int:
        return self.cache.batch

    def nbytes(self) -> int:
        return sum(self.cache.request_bytes())


def kv_bytes_per_token(config, itemsize: int) -> int:
    """Bytes of keys + values one token takes across all layers of a model with this HF config."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * itemsize
