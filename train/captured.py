"""The captured training step (``--compile``): a micro-batch's translator forward, frozen-target
forward and losses as one ``torch.compile`` graph (its backward captured by AOTAutograd) at a few
fixed shapes, so a step is a few graph launches instead of thousands of kernels and host work.

Decisions:
- Fixed shapes with a high-water mark: S (source length), and T (input length) and N (labelled
  tokens) of each target input are rounded up by ``bucket`` (8 sizes per doubling, multiples of 8)
  and never shrink within a run. S starts at the longest source read in the cache (the pool is
  encoded before training); ``presize`` sets the rows, T and N from the training pool before the
  first step (N gives every row the pool's longest continuation; the extra slots cost LM-head work
  only). A run therefore compiles once per loss stage it reaches (reconstruction only, QA, both).
- With ``--infonce`` the graph computes InfoNCE from the first step, weighted 0 until it starts (at
  warmup/2): one compile instead of two (each is about a minute for the embedded target on an H100,
  most of the main job's training time). Its zero gradients are dropped before the optimizer step
  (``Trainer``), so AdamW neither decays nor counts the projection early, as in the eager step.
- Padding is inert, so loss and gradient are the eager step's (tests/train/test_captured.py):
  source states are left padded with zeros and masked, target rows right padded (causal attention),
  padded label slots hold -100. Labels are gathered by a fixed-size index (row * T + position - 1),
  not a boolean mask; positions and the attention mask come from row lengths inside the graph.
- Host work: token ids cached per text (one batched tokenizer call per set of misses; the
  labelled-token counts read it too), source states by one cat + gather from ``SourceCache.store``,
  integer inputs in one host-to-device copy, loss sums read back once per step (``host_floats``).
- The loss comes out weighted with the Trainer's scales, so its gradient is the eager step's.
- CUDA: mode "reduce-overhead" (CUDA graphs) and AdamW ``fused=True``; CPU (``--compile on``):
  inductor. ``--compile auto`` (the default): captured on CUDA, eager on the CPU. Measured on an H100
  (results/train/README.md): 4.35x the eager step's samples/s at batch 128 on the embedded pair (10.4x
  pipelined with TF32, 2026-12-07), and
  the main job (then 1,200 steps, gates at 0) learned to 100% on both seeds run; on the CPU inductor gained 1.35x on the
  tiny pair only, so the CPU stays eager.
- ``--all-questions`` (rows per passage vary): the rows, and in ``soft_only`` the source reads, are
  padded to a bucket with copies of the first one that carry no labels; in ``context`` the soft
  tokens of each passage are gathered to its rows by an owner index inside the graph; InfoNCE reads
  one row per passage (its drawn question), as the eager step does.
- Not captured: --kl-teacher, --spell-weight,
  --shard-target, a process group (FSDP-wrapped modules): a ValueError with ``--compile on``
  (``check_config``; the process layout when the Trainer starts), eager with a printed reason under
  ``auto``.
Left out: compiling the optimizer and clipping (fused AdamW and foreach norms are a few launches),
and evaluation (generation has lw_runtime's graphed decode).
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from lw_runtime.generate import bos_prefix
from lw_runtime.protocols import answer_continuation, target_prompt

from . import losses, questions
from .flops import DecoderShape, frozen_decoder_flops, linear_flops, translator_flops
from .reconstruction import RECON_PROMPT, reconstruction_targets

@contextlib.contextmanager
def block_regions(target):
    """Within the block, ``torch.compile`` traces the target's decoder block once and stamps it out for
    every block (``torch.compiler.nested_compile_region``: hierarchical compilation) instead of
    compiling each of them; eager calls are unchanged. Each block's class is swapped for a subclass
    whose ``forward`` is the one marked region (the HF class keeps its own ``forward``) and put back after.
    Measured on the 2-core CPU (inductor, cold caches, the embedded target's 30 blocks, forward +
    backward, ``benchmarks/compile_time.py``): first call 33.9 s against 64.4 s, later calls and loss the
    same; on CUDA not yet timed, so ``--compile-regions`` is off by default.
    Blocks under activation checkpointing are traced by checkpoint's own operator, which the region
    does not reach (measured: no region formed), and the eager step never compiles: ``check_config``
    refuses ``--compile-regions`` with ``--activation-checkpointing``, ``--shard-target`` or ``--compile off``."""
    blocks = list(target.model.base_model.layers)
    before = [b.__class__ for b in blocks]
    regions: dict[type, type] = {}
    for b, cls in zip(blocks, before):
        if cls not in regions:
            regions[cls] = type(f"{cls.__name__}Region", (cls,),
                                {"forward": torch.compiler.nested_compile_region(cls.forward)})
        b.__class__ = regions[cls]
    try:
        yield
    finally:
        for b, cls in zip(blocks, before):
            if b.__class__ is regions[cls]:  # a class something else swapped in since stays
                b.__class__ = cls


# dynamo's default (8) would silently run the step eagerly after 8 shapes; high-water buckets keep a
# run far below this, so reaching it means shapes churn, which the "new shape" lines then show
RECOMPILE_LIMIT = 64


def unsupported(cfg, process_group: bool = False) -> list[str]:
    """What of ``cfg`` (and of the process layout) the captured step does not run."""
    flags = [("--kl-teacher", cfg.kl_teacher), ("--spell-weight", cfg.spell_weight > 0),
             ("--shard-target", cfg.shard_target),
             ("a process group (FSDP-wrapped translator)", process_group)]
    return [flag for flag, on in flags if on]


def check_capturable(cfg, process_group: bool = False) -> None:
    """The ValueError of ``--compile on`` with something the captured step does not run."""
    reasons = unsupported(cfg, process_group)
    if reasons:
        raise ValueError(f"--compile {cfg.compile}: the captured step does not run {', '.join(reasons)}; "
                         "use --compile auto (eager for these) or off")


def captured_on(cfg, ctx) -> bool:
    """Whether the Trainer runs the captured step: ``--compile on`` (a ValueError where it cannot),
    ``auto`` on CUDA where it can (else eager, saying why), never with ``off``. ``waited`` is ``on``
    without pipelining (the Trainer's ``pipelined``)."""
    if cfg.compile == "off" or (cfg.compile == "auto" and ctx.device.type != "cuda"):
        return False
    if cfg.compile in ("on", "waited"):
        check_capturable(cfg, ctx.distributed)
        return True
    reasons = unsupported(cfg, ctx.distributed)
    if reasons and ctx.is_main:
        print(f"--compile auto: eager training step ({', '.join(reasons)} not captured)", flush=True)
    return not reasons


def bucket(n: int, minimum: int = 8) -> int:
    """``n`` rounded up to a multiple of max(minimum, 2^(bits(n) - 4)): 8 sizes per doubling, so less
    than 1/8 of padding from 64 up."""
    step = max(minimum, 1 << max(0, n.bit_length() - 4))
    return -(-n // step) * step


def _to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without waiting for the GPU: a blocking copy (``torch.tensor(...,
    device=cuda)``, ``.to(cuda)`` from pageable memory) synchronises the stream, which would stall the
    pipelined step (``Trainer.step``) on the step before; a pinned buffer copies asynchronously."""
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def host_floats(values: dict) -> dict:
    """``values`` with every tensor read back as a float, all in one device-to-host copy."""
    keys = [k for k, v in values.items() if torch.is_tensor(v)]
    if not keys:
        return values
    read = torch.stack([values[k].detach().float().reshape(()) for k in keys]).tolist()
    return {**values, **dict(zip(keys, read))}


class StepRows(NamedTuple):
    """A micro-batch as the captured step trains it: QA rows and source reads (padded), how many of
    each are real, the read of each row (``owner``; None: one read per row) and the reads InfoNCE
    sees (``pick``; None: all)."""

    rows: list
    reads: list
    real_rows: int
    real_reads: int
    owner: list[int] | None = None
    pick: list[int] | None = None


class TokenIds:
    """Token ids per text (no special tokens), tokenized once, in one batched call per miss set."""

    def __init__(self, tokenizer):
        self.tokenizer, self.ids = tokenizer, {}

    def __call__(self, texts: list[str]) -> list[list[int]]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.ids]
        if missing:
            for text, ids in zip(missing, self.tokenizer(missing, add_special_tokens=False)["input_ids"]):
                self.ids[text] = ids
        return [self.ids[t] for t in texts]


class CapturedStep:
    """The fixed-shape, compiled loss of one micro-batch for a ``train.loop.Trainer``.

    ``pad``: bucket shapes (False: the batch's own sizes, as the eager step pads; for tests).
    ``compile``: True (this device's defaults), a dict of ``torch.compile`` keywords, or False (the
    fixed-shape function run eagerly). ``calls`` holds the shapes of the last 256 calls (FLOPs)."""

    def __init__(self, trainer, pad: bool = True, compile: bool | dict = True):
        self.trainer, self.cfg, self.target = trainer, trainer.cfg, trainer.target
        self.device = trainer.ctx.device
        self.pad, self.high = pad, {}
        tok = self.target.tokenizer
        self.tokens = TokenIds(tok)
        self.prefix, self.pad_id, self.eos_id = bos_prefix(tok), tok.pad_token_id, tok.eos_token_id
        self.k = trainer.translator.config.num_soft_tokens
        self.calls: deque[dict] = deque(maxlen=256)
        self.shapes_seen: set = set()
        self.compiled = compile is not False
        if not self.compiled:
            self.loss_fn = self._loss
        else:
            options = compile if isinstance(compile, dict) else (
                {"mode": "reduce-overhead"} if self.device.type == "cuda" else {})
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            self.loss_fn = torch.compile(self._loss, dynamic=False, **options)

    def size(self, name: str, n: int) -> int:
        """The padded size of dimension ``name`` for a batch needing ``n``: its bucket, at least the
        largest used so far in this run."""
        if not self.pad:
            return n
        self.high[name] = max(self.high.get(name, 0), bucket(n))
        return self.high[name]

    def presize(self, pool) -> None:
        """Set the high-water marks of the rows and of every target input from the training ``pool``
        before the first step, so a run compiles its shapes once instead of growing them over its first
        steps (each growth is a compile). Padding is inert, so this changes no loss or gradient."""
        if not self.pad or not pool:
            return
        cfg, per = self.cfg, self.trainer.micro
        expanded = [questions.expand([e], cfg.all_questions)[0] for e in pool]
        rows = [r for group in expanded for r in group]
        n_rows = self.size("rows", per * max(map(len, expanded))) if cfg.all_questions else per
        one_read = not cfg.all_questions or self.trainer.one_read_per_passage
        reads, n_reads = (list(pool), per) if one_read else (rows, n_rows)
        groups = {"qa": ([target_prompt(e, cfg.protocol) for e in rows], [answer_continuation(e.answer) for e in rows], n_rows)}
        if cfg.recon_weight > 0 or cfg.recon_steps > 0:
            groups["recon"] = ([RECON_PROMPT] * len(reads), reconstruction_targets(reads, cfg.protocol, cfg.source_order),
                               n_reads)
        head = len(self.prefix) + self.k
        for name, (prompts, continuations, n) in groups.items():
            prompt_ids, answer_ids = self.tokens(prompts), self.tokens(continuations)
            self.size(f"{name}.T", head + max(len(p) + len(a) for p, a in zip(prompt_ids, answer_ids)) + 1)
            self.size(f"{name}.N", n * (max(map(len, answer_ids)) + 1))

    def source_states(self, examples) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden, mask) as ``SourceCache.batch`` gives them, left padded to the bucketed length."""
        cache = self.trainer.cache
        if getattr(cache, "enabled", False) and hasattr(cache, "store"):
            cache.fill(examples)  # encodes only those not stored yet
            if "source" not in self.high and self.pad:
                self.high["source"] = bucket(max(h.shape[0] for h in cache.store.values()))
            rows = [cache.store[e.id] for e in examples]
            lengths = np.array([r.shape[0] for r in rows])
            width = self.size("source", int(lengths.max()))
            total = int(lengths.sum())
            starts = width - lengths
            positions = np.arange(width)[None]
            # token t of row i is flat row offsets[i] + t - starts[i]; padding reads the zero row after the last
            offsets = np.cumsum(lengths) - lengths
            index = np.where(positions >= starts[:, None], offsets[:, None] + positions - starts[:, None], total)
            flat = torch.cat(rows + [rows[0].new_zeros(1, rows[0].shape[-1])]).to(self.device)
            index = _to_device(torch.from_numpy(index), flat.device)
            return flat[index], index != total
        hidden, mask = cache.batch(examples, self.device)
        extra = self.size("source", hidden.shape[1]) - hidden.shape[1]
        if extra:
            hidden = torch.cat([hidden.new_zeros(hidden.shape[0], extra, hidden.shape[2]), hidden], 1)
            mask = torch.cat([mask.new_zeros(mask.shape[0], extra), mask], 1)
        return hidden, mask

    def target_arrays(self, name: str, prompts: list[str], continuations: list[str],
                      real: int | None = None) -> tuple[list[np.ndarray], int]:
        """([ids (B, T), lengths (B,), label index (N,), labels (N,)], real tokens) of rows
        [BOS][K soft slots][prompt][continuation + EOS], right padded: ``build_inputs`` with
        padding_side="right", the soft slots holding the pad id until the soft tokens replace them.
        Rows from ``real`` on are padding rows: no labels, no tokens counted."""
        real = len(prompts) if real is None else real
        prompt_ids, answer_ids = self.tokens(prompts), self.tokens(continuations)
        head = len(self.prefix) + self.k
        rows = [p + a + [self.eos_id] for p, a in zip(prompt_ids, answer_ids)]
        lengths = np.array([head + len(r) for r in rows])
        width = self.size(f"{name}.T", int(lengths.max()))
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        ids[:, : len(self.prefix)] = self.prefix
        for i, r in enumerate(rows):
            ids[i, head : head + len(r)] = r
        # labelled positions: the continuation and EOS of each row; logits at position j - 1 predict j
        counts = np.array([len(a) + 1 if i < real else 0 for i, a in enumerate(answer_ids)])
        firsts = np.arange(len(rows)) * width + lengths - counts - 1
        total = int(counts.sum())
        within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        slots = self.size(f"{name}.N", len(rows) * int(counts.max())) if self.pad else total
        index = np.zeros(slots, dtype=np.int64)
        index[:total] = np.repeat(firsts, counts) + within
        labels = np.full(index.shape, -100, dtype=np.int64)
        labels[:total] = ids.reshape(-1)[index[:total] + 1]
        return [ids, lengths.astype(np.int64), index, labels], int(lengths[:real].sum())

    def _target_sum(self, soft, ids, lengths, index, labels) -> torch.Tensor:
        """Summed cross-entropy of the labelled tokens: ``losses.answer_logits`` at fixed shapes."""
        model = self.target.model
        embeds = model.get_input_embeddings()(ids)
        p = len(self.prefix)
        embeds = torch.cat([embeds[:, :p], soft.to(embeds.dtype), embeds[:, p + self.k :]], 1)
        positions = torch.arange(ids.shape[1], device=ids.device)
        attention_mask = (positions[None] < lengths[:, None]).long()
        position_ids = torch.minimum(positions[None], (lengths - 1)[:, None])
        hidden = model.base_model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=False).last_hidden_state
        logits = model.get_output_embeddings()(hidden.flatten(0, 1).index_select(0, index))
        softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return F.cross_entropy(logits.float(), labels, reduction="sum")

    def _loss(self, hidden, mask, qa, recon, weights, owner=None, pick=None):
        """(weighted loss, [QA CE sum, reconstruction CE sum, InfoNCE] detached, soft tokens detached).
        InfoNCE is in the graph whenever the run has ``--infonce`` (weighted 0 before it starts).
        ``qa``/``recon``: the device tensors of ``target_arrays`` or None; ``weights``: (3,) scales;
        ``owner``: the source read of each QA row (None: one each); ``pick``: the reads InfoNCE sees
        (None: all)."""
        encoded = self.trainer.translator(hidden, mask)
        soft = encoded if owner is None else encoded.index_select(0, owner)
        zero = encoded.new_zeros((), dtype=torch.float32)
        ce = self._target_sum(soft, *qa) if qa is not None else zero
        rec = self._target_sum(encoded, *recon) if recon is not None else zero
        loss = ce * weights[0] + rec * weights[1]
        nce = zero
        if self.cfg.infonce:
            seen, h, m = (encoded, hidden, mask) if pick is None else (encoded[pick], hidden[pick], mask[pick])
            nce = losses.info_nce(seen.float().mean(1).unsqueeze(1), losses.pooled_source(h, m), self.trainer.projection)
            loss = loss + nce * weights[2]
        return loss, torch.stack([ce, rec, nce]).detach(), encoded.detach()

    def rows(self, examples) -> "StepRows":
        """``questions.expand`` of the micro-batch, with --all-questions padded to a bucket (copies of
        the first row / read, no labels; a padding row's owner is read 0), and the indices ``_loss``
        gathers by."""
        rows, owner = questions.expand(examples, self.cfg.all_questions)
        if not self.cfg.all_questions:
            return StepRows(rows, rows, len(rows), len(rows))
        real = len(rows)
        rows = rows + [rows[0]] * (self.size("rows", real) - real)
        if self.trainer.one_read_per_passage:  # context: one read per passage, its soft tokens serve its rows
            return StepRows(rows, list(examples), real, len(examples), owner=owner + [0] * (len(rows) - real))
        first = [j for j, o in enumerate(owner) if j == 0 or owner[j - 1] != o]  # each passage's drawn question
        return StepRows(rows, rows, real, real, pick=first)

    def micro_loss(self, examples, scale: float, infonce_on: bool, qa_on: bool = True, recon_w: float = 0.0,
                   recon_scale: float = 0.0):
        """``Trainer._micro_loss`` of the captured step: (loss, sums) with the loss sums as device tensors."""
        cfg = self.cfg
        rows, encoded, real, real_reads, owner, pick = self.rows(examples)
        hidden, mask = self.source_states(encoded)
        groups, real_tokens = {}, 0
        if qa_on:
            groups["qa"], real_tokens = self.target_arrays(
                "qa", [target_prompt(e, cfg.protocol) for e in rows], [answer_continuation(e.answer) for e in rows], real)
        if recon_w > 0:
            groups["recon"], _ = self.target_arrays(
                "recon", [RECON_PROMPT] * len(encoded), reconstruction_targets(encoded, cfg.protocol, cfg.source_order),
                real_reads)
        indices = [np.asarray(v, dtype=np.int64) for v in (owner, pick) if v is not None]
        arrays = [a for group in groups.values() for a in group] + indices
        packed = torch.from_numpy(np.concatenate([a.reshape(-1) for a in arrays]))
        flat = _to_device(packed, self.device).split([a.size for a in arrays])
        views = iter(t.view(a.shape) for t, a in zip(flat, arrays))
        on_device = {name: tuple(next(views) for _ in group) for name, group in groups.items()}
        owner_t, pick_t = (next(views) if v is not None else None for v in (owner, pick))
        # with --infonce the graph always computes InfoNCE, at weight 0 before it starts (one graph, one
        # compile, for both phases; Trainer drops the projection's zero gradients then)
        infonce_weight = cfg.infonce_weight / cfg.grad_accum if infonce_on else 0.0
        weights = _to_device(torch.tensor([scale, recon_w * recon_scale, infonce_weight], dtype=torch.float32), self.device)
        qa, recon = on_device.get("qa"), on_device.get("recon")
        self._note_shape(hidden, qa, recon, infonce_on)
        loss, sums, soft = self.loss_fn(hidden, mask, qa, recon, weights, owner_t, pick_t)
        self.trainer.last_soft = soft[:real_reads].clone()  # a CUDA graph's output is overwritten by its next replay
        return loss, {"ce": sums[0], "recon": sums[1], "infonce": sums[2] / cfg.grad_accum if infonce_on else 0.0,
                      "kl": 0.0, "spell": 0.0, "spell_pairs": 0.0, "target_tokens": float(real_tokens)}

    def _note_shape(self, hidden, qa, recon, infonce_on: bool) -> None:
        """Record this call's shapes (``calls``, for FLOPs: InfoNCE counts once it is on, as in the eager
        step, though the graph runs it at weight 0 before); say so when a shape is new (a compile)."""
        targets = [(t[0].shape[1], t[2].shape[0]) for t in (qa, recon) if t is not None]
        call = {"batch": hidden.shape[0], "source": hidden.shape[1], "targets": targets, "infonce": infonce_on}
        self.calls.append(call)
        key = (call["batch"], call["source"], qa is None, recon is None, tuple(targets))
        if key not in self.shapes_seen:
            self.shapes_seen.add(key)
            if self.trainer.ctx.is_main and self.compiled:
                print(f"captured step: shape {len(self.shapes_seen)} (batch {call['batch']}, source {call['source']}, "
                      f"target (T, labels) {targets}, InfoNCE {'in the graph' if self.cfg.infonce else 'off'}): compiling", flush=True)

    def flops_by_part(self) -> dict[str, int]:
        """Model FLOPs of the calls in ``calls`` by part, as ``train.flops.StepFlops`` counts them (padded
        shapes are executed work and count)."""
        shape = DecoderShape.of(self.target.model)
        projection = self.trainer.projection
        parts = {"target": 0, "translator": 0, "other": 0}
        for call in self.calls:
            parts["translator"] += translator_flops(self.trainer.translator.config, call["batch"], call["source"])
            for seq, rows in call["targets"]:
                parts["target"] += frozen_decoder_flops(shape, call["batch"], seq, rows)
            if call["infonce"]:
                parts["other"] += linear_flops(call["batch"], projection.in_features, projection.out_features,
                                               input_grad=False, weight_grad=True)
        return parts
