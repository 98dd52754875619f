"""The one place that sets up processes and wraps models for distributed training (FSDP2).

Decisions:
- Launch is torchrun's: ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in the environment start a process
  group (NCCL on CUDA, gloo on CPU) and a 1-D device mesh; without them training runs in one
  process with plain modules and no process group, exactly as before this module existed.
- Order, as in torchtitan: activation checkpointing of the target's blocks, then ``fully_shard``.
  The translator is sharded per block, then at its root, with ``MixedPrecisionPolicy``
  (bf16 parameters on CUDA, fp32 on CPU; fp32 gradient reduction). Its residual gates are 0-dim
  parameters, which ``fully_shard`` refuses; they stay replicated (``ignored_params``) and their
  gradients are averaged here with one all-reduce (``sync_replicated_grads``).
- The frozen target is replicated by default: an 8B target in bf16 is ~16 GB, which fits beside
  everything else on an 80 GB GPU, and a sharded target must all-gather every block's weights on
  every forward, every backward and every generated token at evaluation (~16 GB of traffic per
  token). ``--shard-target`` shards its decoder blocks (the root is the decoder stack with the
  embeddings and final norm ignored, so the embedding lookup that builds soft-token inputs and the
  LM head stay plain tensors) for targets that do not fit replicated.
- The frozen source is never wrapped: it runs under ``torch.inference_mode`` and its states are
  cached per example.
- ``all_gather_with_grad`` lets InfoNCE see the whole global micro-batch (negatives from every
  rank), so the loss equals the single-process loss on the same global batch.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    distributed: bool = False
    mesh: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum a few floats over ranks (one collective); float64 so counts stay exact."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.collective_device)
        dist.all_reduce(t)
        return t.tolist()

    def all_gather_floats(self, values: list[float]) -> list[list[float]]:
        if not self.distributed:
            return [list(values)]
        t = torch.tensor(values, dtype=torch.float64, device=self.collective_device)
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t)
        return [o.tolist() for o in out]

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], device=self.collective_device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def gather_objects(self, obj) -> list:
        if not self.distributed:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    @property
    def collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init(device_flag: str = "auto", force: bool = False, timeout_min: float = 60.0) -> DistContext:
    """A process group from torchrun's environment, or a plain one-process context.

    ``force`` starts a world of one without torchrun (FSDP2 code path on one device: benchmarks,
    ``--shard-target`` in a plain ``python -m train.fsdp``)."""
    if not launched_by_torchrun() and not force:
        if device_flag == "auto":
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            device = torch.device(device_flag)
        return DistContext(device=device)
    if not launched_by_torchrun():
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device_flag == "auto" else device_flag.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=timeout_min),
                                device_id=device if use_cuda else None)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (world,))
    return DistContext(rank=rank, world=world, local_rank=local_rank, device=device, distributed=True, mesh=mesh)


def shutdown(ctx: DistContext, clean: bool = True) -> None:
    """Tear the process group down. After a clean run the ranks first meet at a barrier and drop
    their last references to the group (mesh, FSDP state in garbage cycles), so no rank tears gloo
    down while a peer is still inside it: in one CI run (2026-11-25) rank 1 aborted at exit
    ("terminate called without an active exception") after a complete run; not reproduced locally
    in 44 runs, so this is a precaution. Ranks > 0 therefore wait for rank 0's baselines, within
    the process group's timeout. A failed barrier (a peer died) is reported and teardown goes on:
    the run's files are written by then. After an error there is no barrier: a peer may never come."""
    if ctx.distributed and dist.is_initialized():
        if clean:
            try:
                dist.barrier()
            except Exception as exc:  # noqa: BLE001 - teardown must go on; the cause is printed
                print(f"[rank {ctx.rank}] barrier before teardown failed ({type(exc).__name__}: {exc}); "
                      "tearing down anyway", file=sys.stderr)
        ctx.mesh = None
        gc.collect()
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def param_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def mixed_precision(device: torch.device, **kw):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=param_dtype(device), reduce_dtype=torch.float32, **kw)


def _scalars(module: nn.Module) -> set:
    return {p for p in module.parameters() if p.dim() == 0}


def shard_translator(translator: nn.Module, projection: nn.Module | None, ctx: DistContext) -> None:
    """fully_shard each translator block, then the translator; the InfoNCE projection on its own.

    The translator's root does not cast its inputs: source states stay fp32 through the
    per-channel standardisation and are cast to the parameter dtype only at the projection. The
    InfoNCE projection returns fp32, the dtype the loss computes in."""
    from torch.distributed.fsdp import fully_shard

    for block in translator.blocks:
        fully_shard(block, mesh=ctx.mesh, mp_policy=mixed_precision(ctx.device), ignored_params=_scalars(block))
    fully_shard(translator, mesh=ctx.mesh, mp_policy=mixed_precision(ctx.device, cast_forward_inputs=False),
                ignored_params=_scalars(translator))
    if projection is not None:
        fully_shard(projection, mesh=ctx.mesh, mp_policy=mixed_precision(ctx.device, output_dtype=torch.float32))


def decoder_blocks(loaded) -> nn.ModuleList:
    return loaded.model.base_model.layers


def shard_target(target, ctx: DistContext) -> None:
    """fully_shard the frozen target's decoder blocks (it has no gradients; activations and the
    gradient towards the soft tokens still flow through). Weights keep their dtype (bf16 on CUDA)."""
    from torch.distributed.fsdp import fully_shard

    decoder = target.model.base_model
    for block in decoder.layers:
        fully_shard(block, mesh=ctx.mesh, reshard_after_forward=True)
    in_blocks = {p for block in decoder.layers for p in block.parameters()}
    outside = {p for p in decoder.parameters() if p not in in_blocks}
    fully_shard(decoder, mesh=ctx.mesh, reshard_after_forward=True, ignored_params=outside)


def apply_activation_checkpointing(target) -> callable:
    """Recompute each target block's activations in backward instead of keeping them
    (``torch.utils.checkpoint``, non-reentrant). Only when autograd records: generation and the
    no-grad teacher are untouched. Returns a function that undoes it (models are shared in-process)."""
    from torch.utils.checkpoint import checkpoint

    blocks = list(decoder_blocks(target))
    for block in blocks:
        original = block.forward

        def forward(*args, _original=original, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_original, *args, use_reentrant=False, **kwargs)
            return _original(*args, **kwargs)

        block.forward = forward

    def undo():
        for block in blocks:
            block.__dict__.pop("forward", None)

    return undo


def all_gather_with_grad(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate every rank's rows (rank order); gradients flow back to their owners."""
    if not ctx.distributed or ctx.world == 1:
        return x
    import warnings

    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the functional collective's deprecation notice, once per call
        return torch.cat(all_gather(x.contiguous()), dim=0)


def all_gather_no_grad(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if not ctx.distributed or ctx.world == 1:
        return x
    out = [torch.empty_like(x) for _ in range(ctx.world)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def sync_replicated_grads(params, ctx: DistContext) -> None:
    """Average the gradients of parameters FSDP does not manage (the 0-dim gates), one all-reduce."""
    if not ctx.distributed or ctx.world == 1:
        return
    plain = [p for p in params if p.grad is not None and not _is_dtensor(p)]
    if not plain:
        return
    flat = torch.cat([p.grad.reshape(-1).float() for p in plain])
    dist.all_reduce(flat)
    flat /= ctx.world
    offset = 0
    for p in plain:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def total_grad_norm(params) -> torch.Tensor:
    """L2 norm of all gradients, sharded (DTensor) and plain alike, as a plain scalar on every rank."""
    params = [p for p in params if p.grad is not None]
    sharded = [p.grad for p in params if _is_dtensor(p.grad)]
    plain = [p.grad for p in params if not _is_dtensor(p.grad)]
    squares = []  # summed on the gradients' device: no host round trip (a read would stall the step)
    if sharded:
        squares.append(torch.nn.utils.get_total_norm(sharded, 2.0).full_tensor().float() ** 2)
    if plain:
        squares.append(torch.nn.utils.get_total_norm(plain, 2.0).float() ** 2)
    return sum(squares).sqrt() if squares else torch.zeros((), dtype=torch.float32)


def clip_grads(params, max_norm: float, total_norm: torch.Tensor) -> None:
    """Scale every gradient by min(1, max_norm / total_norm) (torch's rule), sharded and plain groups apart."""
    params = [p for p in params if p.grad is not None]
    for group in ([p for p in params if _is_dtensor(p.grad)], [p for p in params if not _is_dtensor(p.grad)]):
        if group:
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total_norm)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory (CUDA) or the process's peak resident set (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)
