"""BottleneckedGatedTranslator: source hidden states -> K soft tokens in the target's embedding space.

Design (see docs/ARCHITECTURE.md):
- Source states are standardised per channel, then normalised per token (RMSNorm, fp32), before
  anything attends to them. LLM hidden states carry massive activations (SmolLM2-135M layer 15:
  first-token norm ~22,800 vs ~150) and without per-token normalisation attention collapses onto
  that token. Per-token normalisation alone is not enough: a few channels are large in *every*
  token (Gemma-3-270M layer 9: after per-token RMSNorm each token still has cosine 0.98 with the
  mean token, so every input looks alike and a translator learned nothing in 100 steps). The
  per-channel mean/std come from the training data (``calibrate_source``), are saved with the
  weights, and bring that cosine down to ~0.17. Then one projection into the bottleneck.
- K learned queries in the bottleneck dim go through ``depth`` blocks of
  RMSNorm -> self-attention -> RMSNorm -> cross-attention (key padding mask) -> RMSNorm -> SwiGLU,
  each residual branch scaled by tanh(gate), gates initialised at 0 (the translator starts as the
  identity on its queries and opens each branch as it learns).
- Cross-attention has no output projection: values are projected straight to the bottleneck
  (heads x head_dim = bottleneck), so attention, gate and residual add are one fused op
  (``lw_kernels.gated_cross_attention``: Triton on CUDA, torch reference on CPU). The SwiGLU that
  follows mixes the heads.
- ``source_position`` gives the memory a sense of order, which RoPE models do not write into their
  hidden states: "none"; "learned" (an absolute position table indexed by each token's position
  among the real tokens, so left padding does not shift it; positions past the table reuse its
  last row); "conv" (a depthwise causal convolution over the last 4 source tokens, added as a
  residual, so each token's memory also says what came just before it). Without it a translator
  carried the first digits of a 4-digit code and confused the later ones (" 4335" for 4333).
- Output projection to the target embedding dim, then RMS-matched LayerNorm: each soft token is
  scaled to the RMS of the target's embedding table (``target_rms``, stored in the config).
- ``save_pretrained`` / ``from_pretrained``: config JSON + safetensors.
- ``source_order`` changes nothing in the module: it records how the training run built the source
  text (``lw_runtime.protocols.source_text(example, protocol, order)``), so a server can build it
  the same way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import lw_kernels

from .protocols import check_source_order

CONFIG_NAME = "translator_config.json"
WEIGHTS_NAME = "translator.safetensors"


# Fields that decide the module's parameters or its forward function (not names, init or dropout).
ARCHITECTURE_FIELDS = ("source_dim", "target_dim", "num_soft_tokens", "depth", "num_heads", "bottleneck_dim",
                       "ffn_mult", "source_layer", "source_position", "max_source_positions", "rms_match",
                       "source_norm")
SOURCE_POSITIONS = ("none", "learned", "conv")
CONV_WIDTH = 4


class TranslatorMismatchError(ValueError):
    """A translator whose dimensions do not match the models it is used with."""


@dataclass
class TranslatorConfig:
    source_dim: int = 640
    target_dim: int = 576
    num_soft_tokens: int = 16
    depth: int = 2
    num_heads: int = 8
    bottleneck_dim: int = 512
    ffn_mult: float = 2.0
    dropout: float = 0.1
    source_layer: int = -1
    source_norm: str = "rms"  # "rms" | "layer"
    query_init_std: float = 1e-3
    gate_init: float = 0.0
    rms_match: bool = True
    target_rms: float = 1.0
    source_position: str = "none"  # "none" | "learned" | "conv"
    max_source_positions: int = 1024
    source_model: str = ""
    target_model: str = ""
    source_order: str = "passage_first"  # how training built the source text (protocols.source_text)

    def __post_init__(self):
        if self.bottleneck_dim % self.num_heads:
            raise ValueError(f"bottleneck_dim {self.bottleneck_dim} is not divisible by num_heads {self.num_heads}")
        if self.num_soft_tokens < 1 or self.depth < 0:
            raise ValueError("num_soft_tokens must be >= 1 and depth >= 0")
        if self.source_position not in SOURCE_POSITIONS:
            raise ValueError(f"source_position must be one of {SOURCE_POSITIONS}, got {self.source_position!r}")
        check_source_order(self.source_order, "source_order")
        if self.source_norm not in ("rms", "layer"):
            raise ValueError(f"source_norm must be 'rms' or 'layer', got {self.source_norm!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "TranslatorConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown translator preset {name!r}; known: {', '.join(PRESETS)}")
        return replace(cls(), **{**PRESETS[name], **overrides})


# The original sweep, plus one sized for the embedded default (Gemma-3-270M -> SmolLM2-135M).
PRESETS: dict[str, dict] = {
    "efficient": dict(num_soft_tokens=32, depth=4, num_heads=12, bottleneck_dim=768),
    "conservative": dict(num_soft_tokens=48, depth=6, num_heads=16, bottleneck_dim=1024),
    # same shape as conservative in the original sweep (they differed in training settings)
    "aggressive": dict(num_soft_tokens=48, depth=6, num_heads=16, bottleneck_dim=1024),
    "high_capacity": dict(num_soft_tokens=64, depth=8, num_heads=16, bottleneck_dim=1024),
    "embedded": dict(num_soft_tokens=16, depth=2, num_heads=8, bottleneck_dim=512),
    "tiny": dict(num_soft_tokens=8, depth=2, num_heads=4, bottleneck_dim=256),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class TranslatorBlock(nn.Module):
    def __init__(self, cfg: TranslatorConfig):
        super().__init__()
        d, h = cfg.bottleneck_dim, cfg.num_heads
        self.num_heads, self.head_dim = h, d // h
        self.norm_self, self.norm_cross, self.norm_ffn = RMSNorm(d), RMSNorm(d), RMSNorm(d)
        self.self_qkv = nn.Linear(d, 3 * d, bias=False)
        self.self_out = nn.Linear(d, d, bias=False)
        self.cross_q = nn.Linear(d, d, bias=False)
        self.cross_kv = nn.Linear(d, 2 * d, bias=False)
        hidden = int(cfg.ffn_mult * d)
        self.ffn_in = nn.Linear(d, 2 * hidden, bias=False)
        self.ffn_out = nn.Linear(hidden, d, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.gate_self = nn.Parameter(torch.full((), cfg.gate_init))
        self.gate_cross = nn.Parameter(torch.full((), cfg.gate_init))
        self.gate_ffn = nn.Parameter(torch.full((), cfg.gate_init))

    def _heads(self, x):  # (B, L, D) -> (B, H, L, Dh)
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x, memory, memory_mask):
        b, n, d = x.shape
        q, k, v = self.self_qkv(self.norm_self(x)).chunk(3, dim=-1)
        attn = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        attn = attn.transpose(1, 2).reshape(b, n, d)
        x = x + torch.tanh(self.gate_self) * self.dropout(self.self_out(attn))

        q = self._heads(self.cross_q(self.norm_cross(x)))
        k, v = self.cross_kv(memory).chunk(2, dim=-1)
        x = lw_kernels.gated_cross_attention(q, self._heads(k), self._heads(v), memory_mask, self.gate_cross, x)

        a, g = self.ffn_in(self.norm_ffn(x)).chunk(2, dim=-1)
        return x + torch.tanh(self.gate_ffn) * self.dropout(self.ffn_out(F.silu(a) * g))


class BottleneckedGatedTranslator(nn.Module):
    def __init__(self, config: TranslatorConfig):
        super().__init__()
        self.config = config
        d = config.bottleneck_dim
        self.source_norm = RMSNorm(config.source_dim) if config.source_norm == "rms" else nn.LayerNorm(config.source_dim)
        self.source_proj = nn.Linear(config.source_dim, d, bias=False)
        if config.source_position == "learned":
            self.source_pos = nn.Parameter(torch.randn(config.max_source_positions, d) * 0.02)
        elif config.source_position == "conv":
            self.source_conv = nn.Conv1d(d, d, CONV_WIDTH, groups=d, bias=False)
        self.queries = nn.Parameter(torch.randn(config.num_soft_tokens, d) * config.query_init_std)
        self.blocks = nn.ModuleList(TranslatorBlock(config) for _ in range(config.depth))
        self.out_norm = RMSNorm(d)
        self.out_proj = nn.Linear(d, config.target_dim, bias=False)
        self.out_ln_weight = nn.Parameter(torch.ones(config.target_dim))
        self.out_ln_bias = nn.Parameter(torch.zeros(config.target_dim))
        self.register_buffer("target_rms", torch.tensor(float(config.target_rms)), persistent=False)
        self.register_buffer("source_mean", torch.zeros(config.source_dim))
        self.register_buffer("source_std", torch.ones(config.source_dim))

    @torch.no_grad()
    def calibrate_source(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Set the per-channel standardisation from source states (B, T, D) of the training data."""
        tokens = hidden[mask.bool()] if mask is not None else hidden.reshape(-1, hidden.shape[-1])
        tokens = tokens.float()
        if tokens.shape[0] < 2:
            raise ValueError("calibrate_source needs at least two source tokens")
        std = tokens.std(0)
        self.source_mean.copy_(tokens.mean(0))
        self.source_std.copy_(std.clamp(min=1e-3 * float(std.median()) + 1e-6))

    def set_target_rms(self, rms: float) -> None:
        self.config.target_rms = float(rms)
        self.target_rms.fill_(float(rms))

    def encode_memory(self, source_hidden: torch.Tensor, source_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = (source_hidden.float() - self.source_mean) / self.source_std
        memory = self.source_proj(self.source_norm(h.to(self.source_proj.weight.dtype)))
        kind = self.config.source_position
        if kind == "none":
            return memory
        if source_mask is None:
            source_mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        real = source_mask.bool()
        if kind == "learned":
            positions = (real.long().cumsum(1) - 1).clamp(0, self.config.max_source_positions - 1)
            return memory + self.source_pos[positions].to(memory.dtype)
        # conv: causal over real tokens only (padding is zeroed first, so it adds nothing)
        x = (memory * real.unsqueeze(-1).to(memory.dtype)).transpose(1, 2)
        mixed = self.source_conv(F.pad(x, (CONV_WIDTH - 1, 0))).transpose(1, 2)
        return memory + mixed

    def forward(self, source_hidden: torch.Tensor, source_mask: torch.Tensor | None = None, return_bottleneck: bool = False):
        """(B, T, source_dim) source states + (B, T) bool mask -> (B, K, target_dim) soft tokens."""
        if source_hidden.dim() != 3 or source_hidden.shape[-1] != self.config.source_dim:
            raise TranslatorMismatchError(
                f"source hidden states have shape {tuple(source_hidden.shape)}; this translator expects "
                f"(batch, tokens, {self.config.source_dim})"
            )
        b = source_hidden.shape[0]
        if source_mask is None:
            source_mask = torch.ones(source_hidden.shape[:2], dtype=torch.bool, device=source_hidden.device)
        memory = self.encode_memory(source_hidden, source_mask)
        x = self.queries.unsqueeze(0).expand(b, -1, -1)
        for block in self.blocks:
            x = block(x, memory, source_mask.bool())
        bottleneck = self.out_norm(x)
        soft = self.project(bottleneck)
        return (soft, bottleneck) if return_bottleneck else soft

    def project(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """Bottleneck latents -> soft tokens (also run at a receiver that gets bottleneck latents)."""
        y = self.out_proj(bottleneck)
        if self.config.rms_match:
            return lw_kernels.rms_matched_layer_norm(y, self.out_ln_weight, self.out_ln_bias, float(self.config.target_rms))
        return y

    def gate_parameters(self):
        return [p for n, p in self.named_parameters() if n.split(".")[-1].startswith("gate_")]

    def check_compatible(self, source_dim: int, target_dim: int) -> None:
        if source_dim != self.config.source_dim or target_dim != self.config.target_dim:
            raise TranslatorMismatchError(
                f"translator maps {self.config.source_dim} -> {self.config.target_dim} dims, but the source "
                f"model has hidden size {source_dim} and the target {target_dim}"
            )

    def check_same_architecture(self, other: TranslatorConfig, what: str) -> None:
        """``other``'s weights fit this module and compute the same function (``--init-from``)."""
        differ = [f"{name}: {what} {getattr(other, name)!r}, this {getattr(self.config, name)!r}"
                  for name in ARCHITECTURE_FIELDS if getattr(other, name) != getattr(self.config, name)]
        if differ:
            raise TranslatorMismatchError(f"{what} has another architecture ({'; '.join(differ)})")

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> None:
        """Config JSON + safetensors in ``directory``; ``dtype`` (e.g. torch.bfloat16) stores the
        floating tensors in that type — half the bytes, for carrying a translator off a machine whose
        calls return small files. ``from_pretrained`` loads it back into the module's own dtype."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        tmp_w, tmp_c = directory / (WEIGHTS_NAME + ".tmp"), directory / (CONFIG_NAME + ".tmp")
        save_file(state, str(tmp_w))
        tmp_c.write_text(json.dumps(asdict(self.config), indent=2))
        tmp_w.replace(directory / WEIGHTS_NAME)
        tmp_c.replace(directory / CONFIG_NAME)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> "BottleneckedGatedTranslator":
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg_path = directory / CONFIG_NAME
        if not cfg_path.exists():
            raise FileNotFoundError(f"{directory} holds no {CONFIG_NAME}; not a saved translator")
        raw = json.loads(cfg_path.read_text())
        known = {f.name for f in fields(TranslatorConfig)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{cfg_path}: unknown config fields {sorted(unknown)}")
        model = cls(TranslatorConfig(**raw))
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME), device=map_location))
        model.set_target_rms(raw.get("target_rms", 1.0))
        return model.to(map_location).eval()  # inference by default: dropout off
