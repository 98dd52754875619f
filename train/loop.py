"""Training a translator between a frozen source and a frozen target LLM, in one process or under torchrun.

Flow per step: source states (cached once per example, the source is frozen) -> translator ->
soft tokens -> target with the protocol's prompt and the teacher-forced answer -> loss
(answer CE [+ teacher KL] [+ InfoNCE]) -> AdamW step (gates: 3x LR, no decay). Every
``eval_every`` steps the validation accuracy is measured by greedy generation and strict answer
extraction; the best translator is kept and restored at the end (early stopping with patience, counted once
validation has reached --patience-floor: a run still at its untrained level trains on).
The held-out test split is read once, at the end, for bridged and target-alone accuracy.

Decisions for several processes (``train.distributed`` wraps the models, ``train.checkpoint``
writes checkpoints): ``--batch-size`` is the global batch and every rank draws the same seeded
global order, then takes its own contiguous share, so losses match a one-process run of the same
batch (dropout masks aside). Validation and test are sharded over ranks; correct counts are summed
and rank 0's early-stopping decision is broadcast. A non-finite loss or gradient skips the step
(no update) and is counted; more than ``--max-nonfinite`` stops the run. Baselines run on rank 0
(whole target needed, so not with ``--shard-target``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lw_runtime.generate import generate
from lw_runtime.protocols import answer_continuation, full_text_prompt, target_alone_prompt, target_prompt
from lw_runtime.translator import BottleneckedGatedTranslator, TranslatorConfig

from . import distributed, losses, questions, reconstruction
from .captured import CapturedStep, block_regions, captured_on, host_floats
from .checkpoint import Checkpointer
from .config import TrainConfig, check_config, relay_augmentations
from .data import data_keywords, load_task
from .leakage import check_disjoint, check_target_inputs
from .metrics import breakdown
from .provenance import lw_environment
from .distributed import DistContext
from .metrics_log import MetricsLog
from .source_cache import SourceCache, forget_shared_models, shared_cache, shared_models, truncate_blocks
from .validation import evaluate_sharded

__all__ = ["SourceCache", "Trainer", "train", "truncate_blocks"]


def resolve_device(cfg: TrainConfig) -> tuple[torch.device, torch.dtype]:
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else ("cpu" if cfg.device == "auto" else cfg.device))
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    return device, dtype


@contextlib.contextmanager
def matmul_precision(cfg: TrainConfig, device: torch.device, dtype: torch.dtype):
    """Within the block, torch's fp32 matmul precision for a run (yielded): "high" (TF32 tensor cores)
    on CUDA when ``--tf32`` is on, or auto with bf16 models; "highest" otherwise. In a bf16 run the fp32
    matmuls are the translator's (its weights stay fp32) and they ran as SIMT sgemm kernels: TF32 took
    the captured step from 19.3 to 16.4 ms on an H200 (results/train/README.md). An fp32 run (--dtype
    float32, the seed sweeps' exact setting) keeps full fp32 unless --tf32 on. The setting is process-wide
    and runs train in-process (sweeps, tests), so the old value comes back on leaving, error or not."""
    on = cfg.tf32 == "on" or (cfg.tf32 == "auto" and dtype == torch.bfloat16)
    precision = "high" if on and device.type == "cuda" else "highest"
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield precision
    finally:
        torch.set_float32_matmul_precision(before)


def build_translator(cfg: TrainConfig, source, target) -> BottleneckedGatedTranslator:
    overrides = {
        k: v
        for k, v in dict(num_soft_tokens=cfg.tokens, depth=cfg.depth, num_heads=cfg.heads, bottleneck_dim=cfg.bottleneck).items()
        if v
    }
    tcfg = TranslatorConfig.preset(
        cfg.preset,
        source_dim=source.hidden_size,
        target_dim=target.hidden_size,
        source_layer=cfg.source_layer,
        dropout=cfg.dropout,
        rms_match=cfg.rms_match,
        query_init_std=cfg.query_init_std,
        gate_init=cfg.gate_init,
        source_position=cfg.source_position,
        source_order=cfg.source_order,
        target_rms=target.embedding_rms(),
        source_model=cfg.source,
        target_model=cfg.target,
        **overrides,
    )
    return BottleneckedGatedTranslator(tcfg)


def init_from_saved(translator: BottleneckedGatedTranslator, directory: str) -> None:
    """Start from a saved translator's weights (``--init-from``: a curriculum stage, or fine-tuning):
    every architecture field must match the one this run builds; calibration buffers come from the
    saved translator. The optimizer starts fresh (``--resume`` is for continuing the same run)."""
    saved = BottleneckedGatedTranslator.from_pretrained(directory)
    translator.check_same_architecture(saved.config, f"the translator in --init-from {directory}")
    translator.load_state_dict(saved.state_dict())


def param_groups(translator, extra: list[nn.Parameter], cfg: TrainConfig):
    gates = set(id(p) for p in translator.gate_parameters()) if cfg.gate_lr_boost else set()
    decay, no_decay, gate = [], [], []
    for name, p in translator.named_parameters():
        if id(p) in gates:
            gate.append(p)
        elif p.dim() < 2 or name == "queries":
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay + extra, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr},
    ]
    if gate:
        groups.append({"params": gate, "weight_decay": 0.0, "lr": cfg.gate_lr_mult * cfg.lr})
    for g in groups:
        g["base_lr"] = g["lr"]
    return groups


def lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def atomic_json(path: Path, obj) -> None:
    """``obj`` as JSON at ``path``, written whole or not at all (a temporary file, then a rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


def full_state(module: nn.Module) -> dict:
    """The full (unsharded) state dict on every rank, on the CPU; a plain state_dict in one process."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _fault(kind: str, step: int) -> None:
    """Test hook: ``LW_FAULT_KILL=step:N`` (after step N is logged and checkpointed) or
    ``checkpoint:N`` (step N's checkpoint half-written) kills this process with SIGKILL."""
    if os.environ.get("LW_FAULT_KILL") == f"{kind}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


class Trainer:
    """The translator, the InfoNCE projection and AdamW, wrapped for the process layout, and one
    optimizer step over a global batch. ``train`` drives it; ``benchmarks/gpu_train.py`` times it.

    Data: the global batch is split into ``grad_accum`` micro-batches, each split into equal
    contiguous shares per rank. Losses are scaled so that the gradient equals the single-process
    gradient on the whole global batch: answer CE (and teacher KL) are sums over this rank's answer
    tokens x world / (answer tokens in the global batch), since FSDP averages gradients over ranks;
    InfoNCE is computed on the micro-batch gathered from every rank (weight / grad_accum).

    With ``--compile`` on (``train.captured``) the micro-batch loss runs as a compiled graph at fixed
    shapes and, on CUDA, AdamW is fused; ``compile_options`` overrides ``CapturedStep``'s
    ``torch.compile`` keywords (benchmarks, tests).
    """

    def __init__(self, cfg: TrainConfig, ctx: DistContext, source, target, cache, calibration,
                 compile_options: dict | None = None, pipelined: bool | None = None):
        self.cfg, self.ctx, self.source, self.target, self.cache = cfg, ctx, source, target, cache
        device = ctx.device
        if cfg.batch_size % (ctx.world * cfg.grad_accum):
            raise ValueError(
                f"--batch-size {cfg.batch_size} (the global batch) must be divisible by processes x --grad-accum "
                f"= {ctx.world} x {cfg.grad_accum}"
            )
        self.micro = cfg.batch_size // (ctx.world * cfg.grad_accum)
        translator = build_translator(cfg, source, target).to(device)
        translator.check_compatible(source.hidden_size, target.hidden_size)
        if calibration is not None:
            translator.calibrate_source(*calibration)
        if cfg.init_from:
            init_from_saved(translator, cfg.init_from)
        projection = nn.Linear(source.hidden_size, target.hidden_size, bias=False).to(device)
        self.model = nn.ModuleDict({"translator": translator, **({"projection": projection} if cfg.infonce else {})})
        if ctx.distributed:
            distributed.shard_translator(translator, projection if cfg.infonce else None, ctx)
            if ctx.rank:  # different dropout masks on each rank; rank 0 keeps the single-process stream
                torch.manual_seed(cfg.seed + 1_000_003 * ctx.rank)
        self.translator, self.projection = translator, projection
        extra = list(projection.parameters()) if cfg.infonce else []
        captured = captured_on(cfg, ctx)
        # fused on CUDA with the captured step (and wherever it is pipelined: its skip is fused AdamW's found_inf);
        # None: torch's default (foreach)
        fused = True if captured and (device.type == "cuda" or pipelined) else None
        self.optimizer = torch.optim.AdamW(param_groups(translator, extra, cfg), betas=(0.9, 0.98), fused=fused)
        self.trainable = list(translator.parameters()) + extra
        self.last_soft = None
        # the pipelined step (see step()): the captured step on CUDA, or where a test asks for it
        self.pipelined = bool(captured) and (device.type == "cuda" if pipelined is None else pipelined)
        self._pending = None
        self._read_buffers = [torch.zeros(16, pin_memory=device.type == "cuda") for _ in range(2)]
        self.captured = CapturedStep(self, compile=compile_options or True) if captured else None

    def _micro_loss(self, examples, scale: float, infonce_on: bool, qa_on: bool = True, recon_w: float = 0.0,
                    recon_scale: float = 0.0):
        """Loss of this rank's share of one micro-batch of passages: the QA cross-entropy over every
        row (one per question with --all-questions), the reconstruction of what each source read,
        and the auxiliary terms. Sums are scaled per labelled token of the global batch."""
        if self.captured is not None:
            return self.captured.micro_loss(examples, scale, infonce_on, qa_on, recon_w, recon_scale)
        cfg, ctx = self.cfg, self.ctx
        rows, owner = questions.expand(examples, cfg.all_questions)
        shared = self.one_read_per_passage
        encoded = examples if shared else rows
        hidden, mask = self.cache.batch(encoded, ctx.device)
        soft_encoded = self.translator(hidden, mask)
        soft = soft_encoded[torch.tensor(owner, device=soft_encoded.device)] if shared else soft_encoded
        sums = {"ce": 0.0, "kl": 0.0, "infonce": 0.0, "spell": 0.0, "spell_pairs": 0.0, "recon": 0.0, "target_tokens": 0.0}
        loss = soft_encoded.sum() * 0.0
        if qa_on:
            answers = [answer_continuation(e.answer) for e in rows]
            inputs = losses.student_inputs(self.target, soft, [target_prompt(e, cfg.protocol) for e in rows], answers)
            logits, labels = losses.answer_logits(self.target, inputs)
            ce_sum = F.cross_entropy(logits, labels, reduction="sum")
            loss = loss + ce_sum * scale
            sums["ce"], sums["target_tokens"] = float(ce_sum.detach()), float(inputs["attention_mask"].sum())
            if cfg.spell_weight > 0:
                spell_sum, pairs = losses.spelling_loss(self.target, soft, answers)
                # summed over pairs and scaled like the cross-entropy (per labelled token of the global batch)
                loss = loss + cfg.spell_weight * spell_sum * scale
                sums["spell"], sums["spell_pairs"] = float(spell_sum.detach()), float(pairs)
            if cfg.kl_teacher:
                kl_sum = losses.teacher_kl(logits, losses.teacher_logits(self.target, [full_text_prompt(e) for e in rows], answers)) * labels.numel()
                loss = loss + cfg.kl_weight * kl_sum * scale
                sums["kl"] = float(kl_sum.detach())
        if recon_w > 0:
            r_logits, r_labels = reconstruction.reconstruction_logits(self.target, soft_encoded, encoded, cfg.protocol, cfg.source_order)
            recon_sum = F.cross_entropy(r_logits, r_labels, reduction="sum")
            loss = loss + recon_w * recon_sum * recon_scale
            sums["recon"] = float(recon_sum.detach())
        if infonce_on:
            # one row per passage (its drawn question, the first of its rows), so every rank gathers the same number
            first = range(len(examples)) if shared else [j for j, o in enumerate(owner) if j == 0 or owner[j - 1] != o]
            pick = torch.tensor(list(first), device=soft_encoded.device)
            pooled = distributed.all_gather_with_grad(soft_encoded[pick].float().mean(1), ctx).unsqueeze(1)
            source_pooled = distributed.all_gather_no_grad(losses.pooled_source(hidden[pick], mask[pick]), ctx)
            nce = losses.info_nce(pooled, source_pooled, self.projection)
            loss = loss + cfg.infonce_weight * nce / cfg.grad_accum
            sums["infonce"] = float(nce.detach()) / cfg.grad_accum
        self.last_soft = soft_encoded.detach()
        return loss, sums

    def labelled_token_count(self, continuations: list[str]) -> int:
        """Labelled tokens of these continuations (the captured step reads its token cache)."""
        return losses.labelled_token_count(self.target.tokenizer, continuations,
                                           self.captured.tokens if self.captured is not None else None)

    @property
    def one_read_per_passage(self) -> bool:
        """--all-questions in context: the source reads only the passage, so its soft tokens serve every question."""
        return self.cfg.all_questions and self.cfg.protocol == "context"

    def stage_weights(self, step: int) -> tuple[bool, float]:
        """(QA loss on, reconstruction weight) at ``step``: reconstruction alone for the first
        --recon-steps steps, then QA with --recon-weight x reconstruction beside it."""
        if step < self.cfg.recon_steps:
            return False, 1.0
        return True, self.cfg.recon_weight

    def step(self, step: int, batch: list) -> dict | None:
        """One optimizer step on the global ``batch`` of passages (the same list on every rank).
        Returns the log record; ``record["skipped"]`` is set when the loss or gradient was not finite.

        Pipelined (``self.pipelined``: the captured step on CUDA) the step is only launched: the
        non-finite skip happens on the device (fused AdamW's ``found_inf``), its loss sums and norms
        go to pinned host memory without a wait, and ``step`` returns the record of the step before
        (None on the first call) once this one is queued, so the host prepares step N + 1 while the
        GPU still runs step N. ``flush()`` returns the last record; callers flush before they read
        the model (validation, checkpoints) or stop."""
        pending = self._launch(step, batch)
        if not self.pipelined:
            return self._finish(pending)
        previous, self._pending = self._pending, pending
        return self._finish(previous, next_started=pending["started"]) if previous is not None else None

    def flush(self) -> dict | None:
        """The record of the last launched step not yet returned (pipelined), else None."""
        previous, self._pending = self._pending, None
        return self._finish(previous) if previous is not None else None

    def _launch(self, step: int, batch: list) -> dict:
        cfg, ctx = self.cfg, self.ctx
        started = time.perf_counter()
        region = torch.profiler.record_function  # named regions for benchmarks/step_profile.py
        with region("lw:prep"):
            qa_on, recon_w = self.stage_weights(step)
            rows, _ = questions.expand(batch, cfg.all_questions)
            n_tokens = self.labelled_token_count([answer_continuation(e.answer) for e in rows]) if qa_on else 0
            scale = ctx.world / n_tokens if qa_on else 0.0
            encoded = batch if self.one_read_per_passage else rows
            n_recon = self.labelled_token_count(
                reconstruction.reconstruction_targets(encoded, cfg.protocol, cfg.source_order)
            ) if recon_w > 0 else 0
            recon_scale = ctx.world / n_recon if recon_w > 0 else 0.0
            infonce_on = cfg.infonce and step >= cfg.warmup // 2
            per_micro = cfg.batch_size // cfg.grad_accum
            self.optimizer.zero_grad(set_to_none=True)
        totals = {"ce": 0.0, "kl": 0.0, "infonce": 0.0, "spell": 0.0, "spell_pairs": 0.0, "recon": 0.0, "target_tokens": 0.0}
        for a in range(cfg.grad_accum):
            chunk = batch[a * per_micro : (a + 1) * per_micro]
            with region("lw:forward"):
                loss, sums = self._micro_loss(chunk[ctx.rank * self.micro : (ctx.rank + 1) * self.micro], scale,
                                              infonce_on, qa_on, recon_w, recon_scale)
            with region("lw:backward"):
                loss.backward()
            for k in totals:
                totals[k] += sums[k]
        if self.captured is not None and cfg.infonce and not infonce_on:
            for p in self.projection.parameters():  # the captured graph's InfoNCE at weight 0: exact zeros
                p.grad = None
        distributed.sync_replicated_grads(self.trainable, ctx)
        norm = distributed.total_grad_norm(self.translator.parameters())
        extra_norm = distributed.total_grad_norm(self.projection.parameters()) if infonce_on else norm.new_zeros(())
        factor = lr_factor(step, cfg)
        pending = {"step": step, "started": started, "qa_on": qa_on, "recon_w": recon_w, "infonce_on": infonce_on,
                   "n_tokens": n_tokens, "n_recon": n_recon, "factor": factor}
        values = {**totals, "norm": norm, "extra_norm": extra_norm}
        if not self.pipelined:
            with region("lw:read_losses"):  # the loss sums and norms are device tensors: one read per step
                pending["read"] = host_floats(values)
            pending["norm"] = norm
            return pending
        # on the device: skip the update when any loss sum or norm is not finite (what _finish decides
        # on the host otherwise); nothing here waits for the GPU
        keys = [k for k, v in values.items() if torch.is_tensor(v)]
        stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
        self._update(norm, factor, found_inf=(~torch.isfinite(stacked).all()).float())
        buffer = self._read_buffers[step % 2]  # two: step N's values are read after step N + 1 is queued
        buffer[: len(keys)].copy_(stacked, non_blocking=True)
        event = torch.cuda.Event() if ctx.device.type == "cuda" else None
        if event is not None:
            event.record()
        pending.update(buffer=buffer, keys=keys, event=event, floats={k: v for k, v in values.items() if k not in keys})
        return pending

    def _update(self, norm: torch.Tensor, factor: float, found_inf: torch.Tensor | None = None) -> None:
        """Clip to ``--grad-clip`` by the step's gradient norm, set the scheduled learning rate and step
        AdamW; with ``found_inf`` (a device flag, pipelined) fused AdamW skips the update where it is 1."""
        with torch.profiler.record_function("lw:optimizer"):
            if self.cfg.grad_clip > 0:
                distributed.clip_grads(self.translator.parameters(), self.cfg.grad_clip, norm)
            for g in self.optimizer.param_groups:
                g["lr"] = g["base_lr"] * factor
            if found_inf is not None:
                self.optimizer.grad_scale, self.optimizer.found_inf = None, found_inf
            self.optimizer.step()

    def _finish(self, pending: dict, next_started: float | None = None) -> dict:
        """The log record of a launched step; for a pipelined one, after its values have reached the host."""
        cfg, ctx = self.cfg, self.ctx
        region = torch.profiler.record_function
        if "read" in pending:
            read = pending["read"]
        else:
            with region("lw:read_losses"):
                if pending["event"] is not None:
                    pending["event"].synchronize()
                read = {**pending["floats"], **dict(zip(pending["keys"], pending["buffer"][: len(pending["keys"])].tolist()))}
        qa_on, recon_w, n_tokens, n_recon = pending["qa_on"], pending["recon_w"], pending["n_tokens"], pending["n_recon"]
        totals = {k: read[k] for k in ("ce", "kl", "infonce", "spell", "spell_pairs", "recon", "target_tokens")}
        peak = distributed.peak_memory_mb(ctx.device)
        rows_ = ctx.all_gather_floats([totals["ce"], totals["kl"], totals["target_tokens"], peak, totals["spell"],
                                       totals["spell_pairs"], totals["recon"]])
        parts, loss_value = {}, 0.0
        if qa_on:
            parts["ce"] = sum(r[0] for r in rows_) / n_tokens
            loss_value += parts["ce"]
            if cfg.kl_teacher:
                parts["kl"] = sum(r[1] for r in rows_) / n_tokens
                loss_value += cfg.kl_weight * parts["kl"]
            if cfg.spell_weight > 0:
                # logged as the mean 1 - cos per pair; the optimised term is weight x sum / n_tokens
                spell_sum = sum(r[4] for r in rows_)
                parts["spell"] = spell_sum / max(1.0, sum(r[5] for r in rows_))
                loss_value += cfg.spell_weight * spell_sum / n_tokens
        if recon_w > 0:
            parts["recon"] = sum(r[6] for r in rows_) / n_recon
            loss_value += recon_w * parts["recon"]
        if pending["infonce_on"]:
            parts["infonce"] = totals["infonce"]  # computed on the gathered batch: the same on every rank
            loss_value += cfg.infonce_weight * parts["infonce"]
        finite = all(math.isfinite(v) for v in (loss_value, read["norm"], read["extra_norm"]))
        if cfg.grad_clip > 0:
            parts["grad_norm"] = read["norm"]
        factor = pending["factor"]
        if "read" in pending:  # not pipelined: the update waits for this decision
            if finite:
                self._update(pending["norm"], factor)
            else:
                self.optimizer.zero_grad(set_to_none=True)
            if ctx.device.type == "cuda":
                with region("lw:sync"):
                    torch.cuda.synchronize(ctx.device)
        # pipelined: the time from this step's start to the next one's (the step period), or to now
        step_s = (next_started if next_started is not None else time.perf_counter()) - pending["started"]
        record = {"step": pending["step"] + 1, "loss": loss_value, **parts, "lr": cfg.lr * factor}
        if not finite:
            record["skipped"] = True
        record.update(
            step_s=round(step_s, 4),
            samples_per_s=round(cfg.batch_size / step_s, 2),
            tokens_per_s=round(sum(r[2] for r in rows_) / step_s, 1),
            peak_mem_mb=[round(r[3], 1) for r in rows_],
        )
        return record

    def evaluate(self, examples, translator=None) -> tuple[float, list[str]]:
        """Bridged accuracy on ``examples`` (greedy generation, strict extraction; with a sharded
        target every rank steps until all are done, HF's ``synced_gpus``)."""
        cfg, ctx = self.cfg, self.ctx
        translator = translator if translator is not None else self.translator
        was_training = translator.training
        translator.eval()

        def run_chunk(chunk):
            hidden, mask = self.cache.batch(chunk, ctx.device)
            soft = translator(hidden, mask)
            return generate(self.target, soft, texts=[target_prompt(e, cfg.protocol) for e in chunk],
                            max_new_tokens=cfg.max_new_tokens, synced_gpus=cfg.shard_target)

        try:
            return evaluate_sharded(ctx, examples, run_chunk)
        finally:
            translator.train(was_training)


def train(cfg: TrainConfig, return_models: bool = False):
    """Train and evaluate; returns the summary dict (also written to ``out_dir/summary.json``).

    With ``return_models`` it returns ``(summary, translator, source, target)`` and the summary
    carries the test examples under ``_test_examples`` (not written to disk). Under torchrun every
    rank returns; only rank 0's summary carries the baselines."""
    check_config(cfg)
    scope = contextlib.ExitStack()  # what is put back when the run ends, error or not
    scope.enter_context(process_settings(cfg))
    ctx = distributed.init(cfg.device, force=cfg.shard_target)
    clean = False
    try:
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        device, dtype = resolve_device(cfg)
        scope.enter_context(matmul_precision(cfg, ctx.device if ctx.distributed else device, dtype))
        if ctx.distributed:
            device = ctx.device
        else:
            ctx.device = device
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        t0 = time.time()

        source, target = shared_models(cfg, device, dtype)
        restore_target = truncate_blocks(target, cfg.target_layers)
        undo_checkpointing = distributed.apply_activation_checkpointing(target) if cfg.activation_checkpointing else (lambda: None)
        try:
            if cfg.shard_target:
                distributed.shard_target(target, ctx)
            with block_regions(target) if cfg.compile_regions else contextlib.nullcontext():
                summary, translator, test_set = _train(cfg, ctx, source, target, t0)
        finally:
            undo_checkpointing()
            restore_target()
            if cfg.shard_target:  # its weights are DTensors of this process group now
                forget_shared_models()
        clean = True
    finally:
        distributed.shutdown(ctx, clean)
        scope.close()
    if return_models:
        return {**summary, "_test_examples": test_set}, translator, source, target
    return summary


@contextlib.contextmanager
def process_settings(cfg: TrainConfig):
    """Within the block, the process-wide CPU settings of a run: ``--threads`` (when set) and flushing
    subnormals to zero (denormals in the frozen target's backward cost 10x per step on a CPU; only
    values below ~1e-38 are flushed). Runs train and evaluate in-process (sweeps, tests), so both come
    back on leaving, error or not (torch has no getter for the flush: the state is probed)."""
    threads_before, flush_before = torch.get_num_threads(), flush_denormal_is_on()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        torch.set_flush_denormal(flush_before)


def flush_denormal_is_on() -> bool:
    """Whether the CPU flushes subnormal floats to zero now (torch.set_flush_denormal has no getter)."""
    return bool((torch.tensor([1e-40], dtype=torch.float32) * 2.0).item() == 0.0)


def dataset_keywords(cfg: TrainConfig, split: str) -> dict:
    """load_task keywords pointing ``split``'s task at --data / --eval-data ({} for a generated task);
    the rule, hold-out included, is train.data.data_keywords."""
    return data_keywords(cfg.task, cfg.eval_task, split, cfg.data, cfg.eval_data)


def next_batch(train_set: list, order: list[int], rng: random.Random, batch_size: int) -> list:
    """The next ``batch_size`` examples of a seeded order that reshuffles the pool whenever it runs low
    (``order`` is consumed in place and saved in checkpoints, so a resumed run draws the same batches)."""
    if len(order) < batch_size:
        fresh = list(range(len(train_set)))
        rng.shuffle(fresh)
        order.extend(fresh)
    return [train_set[order.pop()] for _ in range(batch_size)]


def load_splits(cfg: TrainConfig) -> tuple[list, list, list]:
    """The run's train / validation / test examples, checked disjoint (ids, passages, questions and,
    within relay tasks, answers)."""
    train_set = load_task(cfg.task, "train", cfg.train_examples, seed=cfg.seed, **relay_augmentations(cfg),
                          **dataset_keywords(cfg, "train"))
    eval_task = cfg.eval_task or cfg.task
    # answers are compared only within one task family: an arithmetic result that happens to
    # equal a relay-QA age is no leak
    same_family = eval_task.split(":")[0] == cfg.task.split(":")[0] or (eval_task.startswith("relay") and cfg.task.startswith("relay"))
    compare_answers = same_family and eval_task.startswith("relay")
    val_set = load_task(eval_task, "validation", cfg.val_examples, seed=cfg.seed, **dataset_keywords(cfg, "validation"))
    test_set = load_task(eval_task, "test", cfg.test_examples, seed=cfg.seed, **dataset_keywords(cfg, "test"))
    check_disjoint(train_set, val_set + test_set, compare_answers=compare_answers)
    check_disjoint(val_set, test_set, compare_answers=eval_task.startswith("relay"))
    return train_set, val_set, test_set


def _train(cfg: TrainConfig, ctx: DistContext, source, target, t0) -> tuple:
    out = Path(cfg.out_dir)
    device = ctx.device
    translator_rng = torch.get_rng_state()  # the translator is initialised from here, as in one process
    train_set, val_set, test_set = load_splits(cfg)
    # every rank encodes every example the same way, so source states are bitwise those of one process
    cache = shared_cache(cfg, source)
    cache.fill(train_set + val_set + test_set)
    if cfg.all_questions and cfg.protocol != "context":  # each question is its own source read: encode them up front
        cache.fill([row for e in train_set for row in questions.fact_questions(e)[1:]])
    setup_s = time.time() - t0

    calib = train_set[: min(len(train_set), 512)]
    torch.set_rng_state(translator_rng)
    trainer = Trainer(cfg, ctx, source, target, cache, cache.batch(calib, device),
                      pipelined=False if cfg.compile == "waited" else None)
    translator = trainer.translator
    if trainer.captured is not None:
        trainer.captured.presize(train_set)  # every shape of the run known before its first compile

    ckpt = Checkpointer(out / "checkpoints", ctx, cfg.keep_checkpoints)
    rng = random.Random(cfg.seed)
    order: list = []
    best = {"acc": -1.0, "step": 0, "state": None}
    history, bad_evals, start, nonfinite, finished, resumed_from = [], 0, 0, 0, False, None
    path = ckpt.latest() if cfg.resume else None
    if path is not None:
        state, best_state = ckpt.load(path, trainer.model, trainer.optimizer)
        start, order, bad_evals, nonfinite, finished = state["step"], state["order"], state["bad_evals"], state["nonfinite"], state["finished"]
        version, internal, gauss = state["data_rng"]
        rng.setstate((version, tuple(internal), gauss))
        history = [tuple(h) for h in state["history"]]
        best = {"acc": state["best_acc"], "step": state["best_step"], "state": best_state}
        resumed_from = start
        if ctx.is_main:
            print(f"resumed from {path} (step {start}, {state['world_size']} process(es) wrote it)", flush=True)
    else:
        if cfg.resume and ctx.is_main:
            print(f"--resume: no complete checkpoint in {ckpt.root}; starting fresh", flush=True)
        if ctx.is_main:
            _set_aside_previous_run(out, ckpt)
        ctx.barrier()
    ckpt.clear_partial()
    log = MetricsLog(out, ctx, cfg.tensorboard, truncate_after=resumed_from)

    def train_state(step_done: int, done: bool) -> dict:
        return {
            "step": step_done, "order": order, "data_rng": rng.getstate(), "bad_evals": bad_evals, "nonfinite": nonfinite,
            "finished": done, "history": history, "best_acc": best["acc"], "best_step": best["step"], "seed": cfg.seed,
        }

    recon_on = cfg.recon_steps > 0 or cfg.recon_weight > 0

    def recon_metrics(examples) -> dict:
        return reconstruction.reconstruction_metrics(target, translator, cache, examples[: cfg.recon_eval], cfg.protocol,
                                                     cfg.source_order, device, synced_gpus=cfg.shard_target)

    bar = None
    if ctx.is_main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train", dynamic_ncols=True)
    translator.train()
    step, throughput, stop = start - 1, [], finished
    for step in range(start, cfg.steps):
        if stop:
            step -= 1
            break
        batch = next_batch(train_set, order, rng, cfg.batch_size)
        eval_now = (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps
        records = [trainer.step(step, batch)]  # pipelined: the step before's record (None at first)
        if eval_now or (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0):
            records.append(trainer.flush())  # validation and checkpoints read the model after this step
        for record in (r for r in records if r is not None):
            record["time_s"] = round(time.time() - t0, 2)
            throughput.append(record["samples_per_s"])
            if record.get("skipped"):
                nonfinite += 1
                if nonfinite > cfg.max_nonfinite:
                    log.write(record)
                    raise FloatingPointError(
                        f"non-finite loss or gradient at step {record['step']}: {nonfinite} steps skipped, more than "
                        f"--max-nonfinite {cfg.max_nonfinite}; last record {record}. Lower --lr or check the inputs; "
                        f"--resume continues from the last checkpoint in {ckpt.root}"
                    )
            if eval_now and record["step"] == step + 1:
                acc, _ = trainer.evaluate(val_set)
                record["val_acc"] = acc
                record["soft_cosine"] = losses.mean_pairwise_cosine(trainer.last_soft)
                if recon_on:
                    record.update(recon_metrics(val_set))
                history.append((step + 1, acc))
                qa_trained = step + 1 > cfg.recon_steps  # the reconstruction stage neither sets the best nor stops the run
                if qa_trained and acc > best["acc"]:
                    state = full_state(translator)
                    best = {"acc": acc, "step": step + 1, "state": state}
                    if ctx.is_main:
                        (_plain_translator(translator.config, state) if ctx.distributed else translator).save_pretrained(out / "best")
                    bad_evals = 0
                elif qa_trained and best["acc"] >= cfg.patience_floor:
                    # before the floor a run is still at its untrained level (onsets came at 400-1,000 steps of
                    # the main job, later at 4 facts): stopping it there only cut runs that had not started
                    bad_evals += 1
            log.write(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", val=record.get("val_acc", ""))
        stop = ctx.broadcast_flag(cfg.early_stopping and bad_evals >= cfg.patience)
        last = stop or step + 1 == cfg.steps
        if cfg.checkpoint_every and ((step + 1) % cfg.checkpoint_every == 0 or last):
            ckpt.save(step + 1, trainer.model, trainer.optimizer, train_state(step + 1, last), best["state"], fault=_fault)
        _fault("step", step + 1)
    if bar is not None:
        bar.close()
    log.close()
    train_s = time.time() - t0 - setup_s
    final_val = history[-1][1] if history else float("nan")

    # the translator that is evaluated and saved: a plain module (no collectives) on every rank
    use_best = cfg.early_stopping and best["state"] is not None
    if ctx.distributed:
        final = _plain_translator(translator.config, best["state"] if use_best else full_state(translator)).to(device)
    else:
        final = translator
        if use_best:
            translator.load_state_dict(best["state"])

    for e in test_set:
        check_target_inputs(e, {"prompt": target_prompt(e, cfg.protocol)})
    test_acc, test_out = trainer.evaluate(test_set, translator=final)
    alone_acc, alone_out = evaluate_sharded(
        ctx, test_set,
        lambda chunk: generate(target, texts=[target_alone_prompt(e, cfg.protocol) for e in chunk],
                               max_new_tokens=cfg.max_new_tokens, synced_gpus=cfg.shard_target),
    )
    if ctx.is_main:
        final.save_pretrained(out / "translator")
    test_recon = reconstruction.reconstruction_metrics(target, final, cache, test_set[: cfg.recon_eval], cfg.protocol,
                                                       cfg.source_order, device, synced_gpus=cfg.shard_target) if recon_on else None
    summary = {
        "config": asdict(cfg),
        "environment": lw_environment(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "world_size": ctx.world,
        "steps_run": step + 1,
        "best_val_acc": best["acc"],
        "best_step": best["step"],
        "final_val_acc": final_val,
        "test_bridged_acc": test_acc,
        "test_target_alone_acc": alone_acc,
        "test_examples": len(test_set),
        "num_soft_tokens": translator.config.num_soft_tokens,
        "nonfinite_steps": nonfinite,
        "resumed_from_step": resumed_from,
        "samples_per_s_median": sorted(throughput)[len(throughput) // 2] if throughput else None,
        "peak_mem_mb_per_rank": [round(r[0], 1) for r in ctx.all_gather_floats([distributed.peak_memory_mb(device)])],
        "setup_s": round(setup_s, 1),
        "train_s": round(train_s, 1),
        "samples": {"bridged": test_out[:5], "target_alone": alone_out[:5], "gold": [e.answer for e in test_set[:5]]},
        "test_breakdown": breakdown(test_set, test_out),
    }
    if test_recon is not None:
        summary["test_reconstruction"] = {**test_recon, "examples": min(len(test_set), cfg.recon_eval)}
    if cfg.baselines:
        if ctx.distributed and cfg.shard_target:
            summary["evaluation_skipped"] = (
                "baselines need the whole target in one process; score the saved translator in one process "
                f"with python -m train.evaluate {cfg.out_dir}"
            )
        elif ctx.is_main:
            from .evaluate import evaluate_all

            summary["evaluation"] = evaluate_all(cfg, final, source, target, cache, val_set, test_set, cfg.relay_tokens, device)
    summary["history"] = history
    if ctx.is_main:
        atomic_json(out / "summary.json", summary)
    return summary, final, test_set


def _set_aside_previous_run(out: Path, ckpt: Checkpointer) -> None:
    """A fresh run in a used folder keeps the previous run one generation: its complete checkpoints
    go to ``checkpoints.prev/``, its log, summary and evaluation to ``*.prev.*``."""
    if ckpt.complete():
        previous = ckpt.root.with_name("checkpoints.prev")
        shutil.rmtree(previous, ignore_errors=True)
        ckpt.root.rename(previous)
        print(f"fresh run: the previous checkpoints moved to {previous}", flush=True)
    for name, prev in (("metrics.jsonl", "metrics.prev.jsonl"), ("summary.json", "summary.prev.json"),
                       ("evaluation.json", "evaluation.prev.json")):  # a later train.evaluate of that run
        if (out / name).exists():
            (out / name).replace(out / prev)


def _plain_translator(config: TranslatorConfig, state: dict) -> BottleneckedGatedTranslator:
    """An unsharded translator holding ``state``; built without touching the RNG streams training uses."""
    with torch.random.fork_rng(devices=[]):
        plain = BottleneckedGatedTranslator(config)
    plain.load_state_dict(state)
    return plain
