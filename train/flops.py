"""FLOPs of one training step, counted from the shapes it ran, and the MFU they give on a device.

Decisions:
- Model FLOPs (the PaLM / Megatron convention): matmuls only, 2 FLOPs per multiply-add. Norms,
  rotary, softmax and other elementwise work are left out (well under 1% at these widths).
  Recomputation is not counted: neither activation checkpointing's second forward of the target's
  blocks nor flash attention's recompute of QK^T in backward (that would be HFU, not MFU), so a
  run with checkpointing shows a lower MFU for the same model work.
- Attention counts the whole L x L square of QK^T and AV per query head, with no causal halving:
  the target runs SDPA with a padding mask, whose kernels compute every block, and this is what
  ``torch.utils.flop_counter.FlopCounterMode`` counts too (tests/train/test_flops.py checks it).
- The frozen target: forward, plus a backward that carries the gradient to the activations only
  (the soft tokens need it; no weight trains): every linear once more (dX = dY W^T, no dW GEMM),
  attention twice more (dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q, since Q, K and V all
  depend on the soft tokens). The LM head runs only at the supervised positions
  (``train.losses.answer_logits``), so its rows are the labelled tokens, not B x L. A forward with
  no gradient to carry (the no-grad teacher) is a forward only.
- The translator trains: backward = 2x forward (dX and dW) for every matmul, the source projection
  included: its input is the cached source states times the source norm's trainable weight, so
  autograd needs dX there too (for that weight's gradient).
- Shapes are the padded ones a step ran (B x L of the target's input, B x T of the source states):
  padding is executed work and counts. ``StepFlops`` records them with hooks while a
  ``train.loop.Trainer`` steps, so whatever the step runs (teacher KL, reconstruction, InfoNCE) is
  counted without restating the trainer's logic.
- The source is cached during training and costs nothing per step; an encode is a forward through
  the blocks up to the layer read (``encode_source`` stops there), no LM head.
- Peak: dense (not 2:4 sparse) bf16 tensor-core TFLOP/s from the vendor datasheets, by device
  name. A device not in the table gets no MFU rather than a guess.
Dense Llama-family decoders (q/k/v/o projections, gated MLP); mixtures of experts are not handled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Dense bf16 tensor-core peak, TFLOP/s (NVIDIA datasheets; the 2:4-sparse figures are twice these).
# Matched in order on the upper-cased device name; H100/H200 NVL (lower clocks) are left unknown.
BF16_DENSE_PEAK_TFLOPS: tuple[tuple[tuple[str, ...], tuple[str, ...], float], ...] = (
    # (substrings that must all occur, substrings that must not, peak)
    (("H100", "PCIE"), (), 756.0),
    (("H100",), ("NVL",), 989.4),  # SXM: torch names it "NVIDIA H100 80GB HBM3"
    (("H200",), ("NVL",), 989.4),
    (("A100",), (), 312.0),  # SXM and PCIe alike
)


def peak_bf16_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a device named as ``torch.cuda.get_device_name`` names it; None if unknown."""
    name = device_name.upper()
    for needed, excluded, peak in BF16_DENSE_PEAK_TFLOPS:
        if all(s in name for s in needed) and not any(s in name for s in excluded):
            return peak
    return None


@dataclass(frozen=True)
class DecoderShape:
    """What a Llama-family decoder's FLOPs depend on."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def of(cls, model, layers: int | None = None) -> "DecoderShape":
        """From an HF causal LM; ``layers`` defaults to the blocks it holds now (``truncate_blocks``)."""
        cfg = model.config.get_text_config()
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        head = model.get_output_embeddings()
        return cls(
            hidden=cfg.hidden_size,
            intermediate=cfg.intermediate_size,
            layers=len(model.base_model.layers) if layers is None else layers,
            heads=heads,
            kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab=head.weight.shape[0] if head is not None else cfg.vocab_size,
        )


def decoder_forward_flops(shape: DecoderShape, batch: int, seq: int, head_rows: int = 0) -> dict[str, int]:
    """Forward FLOPs of ``batch`` rows of ``seq`` tokens: the blocks' linears, their attention
    (QK^T and AV, full square) and the LM head over ``head_rows`` positions."""
    s, n = shape, batch * seq
    q_dim, kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
    per_token = s.hidden * (q_dim + 2 * kv_dim) + q_dim * s.hidden + 3 * s.hidden * s.intermediate
    return {
        "linear": 2 * n * per_token * s.layers,
        "attention": 2 * 2 * batch * s.heads * seq * seq * s.head_dim * s.layers,
        "head": 2 * head_rows * s.hidden * s.vocab,
    }


def frozen_decoder_flops(shape: DecoderShape, batch: int, seq: int, head_rows: int, backward: bool = True) -> int:
    """Forward, plus (``backward``) the gradient to the input activations only: linears and the head
    1x their forward again, attention 2x."""
    fwd = decoder_forward_flops(shape, batch, seq, head_rows)
    total = sum(fwd.values())
    if backward:
        total += fwd["linear"] + 2 * fwd["attention"] + fwd["head"]
    return total


def translator_forward_flops(cfg, batch: int, source_tokens: int) -> dict[str, int]:
    """Forward FLOPs of a ``BottleneckedGatedTranslator`` of config ``cfg`` on (batch, source_tokens)
    source states, by part: the source projection (and position conv), the blocks, the output projection."""
    from lw_runtime.translator import CONV_WIDTH

    b, t, k, d = batch, source_tokens, cfg.num_soft_tokens, cfg.bottleneck_dim
    f = int(cfg.ffn_mult * d)
    conv = 2 * b * t * d * CONV_WIDTH if cfg.source_position == "conv" else 0
    block = (
        2 * b * k * d * 4 * d  # self_qkv + self_out
        + 2 * 2 * b * k * k * d  # self-attention QK^T, AV (heads x head_dim = d)
        + 2 * b * k * d * d  # cross_q
        + 2 * b * t * d * 2 * d  # cross_kv over the source memory
        + 2 * 2 * b * k * t * d  # cross-attention QK^T, AV
        + 2 * b * k * d * 3 * f  # ffn_in (2f) + ffn_out (f)
    )
    return {
        "memory": 2 * b * t * cfg.source_dim * d + conv,
        "blocks": cfg.depth * block,
        "out_proj": 2 * b * k * d * cfg.target_dim,
    }


def translator_flops(cfg, batch: int, source_tokens: int, backward: bool = True) -> int:
    """Forward, plus (``backward``) dX and dW of every matmul and convolution: 3x the forward."""
    forward = sum(translator_forward_flops(cfg, batch, source_tokens).values())
    return 3 * forward if backward else forward


def linear_flops(rows: int, d_in: int, d_out: int, input_grad: bool, weight_grad: bool) -> int:
    """A linear layer's forward plus the backward GEMMs it needs (dX if its input needs a gradient,
    dW if its weight does)."""
    fwd = 2 * rows * d_in * d_out
    return fwd * (1 + int(input_grad) + int(weight_grad))


def _needs_grad(x) -> bool:
    return isinstance(x, torch.Tensor) and torch.is_grad_enabled() and x.requires_grad


class StepFlops:
    """Counts the model FLOPs a ``Trainer`` (or anything with ``translator``, ``target`` and an
    optional ``projection``) runs, from the shapes its forwards see: ``reset()`` before a step,
    ``by_part()`` / ``total()`` after it. One process's share; sum over ranks for a global step.
    ``close()`` removes the hooks."""

    def __init__(self, trainer):
        self.target = trainer.target
        self.translator = trainer.translator
        DecoderShape.of(self.target.model)  # a target whose shape cannot be read fails here, not mid-step
        self.counts = {"target": 0, "translator": 0, "other": 0}
        self._pending = []  # target forwards waiting for their LM-head rows: (shape, batch, seq, backward)
        base = self.target.model.base_model
        head = self.target.model.get_output_embeddings()
        self._handles = [
            self.translator.register_forward_pre_hook(self._on_translator),
            base.register_forward_pre_hook(self._on_decoder, with_kwargs=True),
            head.register_forward_hook(self._on_head),
        ]
        projection = getattr(trainer, "projection", None)
        if projection is not None:
            self._handles.append(projection.register_forward_hook(self._on_linear))

    def reset(self) -> None:
        self._settle()
        self.counts = dict.fromkeys(self.counts, 0)

    def by_part(self) -> dict[str, int]:
        self._settle()
        return dict(self.counts)

    def total(self) -> int:
        return sum(self.by_part().values())

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _on_translator(self, module, args):
        hidden = args[0]
        batch, tokens = hidden.shape[:2]
        self.counts["translator"] += translator_flops(module.config, batch, tokens, backward=torch.is_grad_enabled())

    def _on_decoder(self, module, args, kwargs):
        self._settle()
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            batch, seq, backward = ids.shape[0], ids.shape[1], False
        else:
            batch, seq, backward = embeds.shape[0], embeds.shape[1], _needs_grad(embeds)
        self._pending.append([DecoderShape.of(self.target.model), batch, seq, backward])

    def _on_head(self, module, args, output):
        rows = args[0].numel() // args[0].shape[-1]
        if self._pending:
            shape, batch, seq, backward = self._pending.pop()
            self.counts["target"] += frozen_decoder_flops(shape, batch, seq, rows, backward)
        else:  # a head call with no decoder forward seen: count it alone
            self.counts["target"] += linear_flops(rows, module.in_features, module.out_features, _needs_grad(args[0]), False)

    def _on_linear(self, module, args, output):
        x = args[0]
        rows = x.numel() // x.shape[-1]
        self.counts["other"] += linear_flops(rows, module.in_features, module.out_features, _needs_grad(x),
                                             torch.is_grad_enabled() and module.weight.requires_grad)

    def _settle(self) -> None:
        """Decoder forwards never followed by the head (hidden states read directly): no head rows."""
        for shape, batch, seq, backward in self._pending:
            self.counts["target"] += frozen_decoder_flops(shape, batch, seq, 0, backward)
        self._pending = []


def significant(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant figures (TFLOP counts span 1e-6 on a CPU dry run to 1e2)."""
    return float(f"{x:.{digits}g}")


def achieved(flops: float, seconds: float, gpus: int, device_name: str, peak: float | None = None) -> dict:
    """TFLOP/s per GPU and MFU against ``peak`` (default: the table's for ``device_name``); None, with
    a note, on a device without a known peak."""
    per_gpu = flops / seconds / gpus / 1e12
    peak = peak or peak_bf16_tflops(device_name)
    out = {"tflops_per_s_per_gpu": significant(per_gpu), "peak_bf16_tflops": peak,
           "mfu": significant(per_gpu / peak, 3) if peak else None}
    if peak is None:
        out["mfu_note"] = f"no dense bf16 peak known for {device_name!r}; MFU omitted"
    return out
