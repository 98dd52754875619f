"""Training checkpoints with torch Distributed Checkpoint (DCP), written atomically.

Layout (``--out-dir``/checkpoints/)::

    step_00000400/                 one complete checkpoint
        .metadata, __<rank>_0.distcp   DCP: translator + InfoNCE projection + AdamW state, by FQN
        train_state.json           step, data order (remaining indices + RNG state), best-val
                                   record, history, patience count, skipped steps, world size
        rng/rank_<r>.pt            torch / CUDA / python RNG states of rank r
        best_translator.safetensors  the best translator so far (full weights), if any
    step_00000600.tmp/             a checkpoint being written (never read; removed at the next start)

Decisions:
- Model and optimizer states come from ``get_state_dict`` / ``set_state_dict``
  (``torch.distributed.checkpoint.state_dict``), keyed by parameter name, so a checkpoint written
  by N processes loads in M (DCP reshards; N or M may be 1, a plain process without a group).
- Atomic: every rank writes into ``step_N.tmp``; after a barrier rank 0 adds the JSON and the best
  weights, fsyncs, renames the folder to ``step_N`` (atomic on POSIX) and then deletes older
  checkpoints beyond ``keep``. A SIGKILL at any moment leaves the previous complete checkpoint.
  With several nodes, ``--out-dir`` must be on a filesystem all nodes share.
- RNG states are per rank; they are restored when the world size is unchanged. With another
  world size the data order and optimizer still continue exactly, dropout masks are reseeded.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import torch

from .distributed import DistContext

PREFIX = "step_"


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with p.open("rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Checkpointer:
    def __init__(self, root: str | Path, ctx: DistContext, keep: int = 2):
        self.root, self.ctx, self.keep = Path(root), ctx, max(1, keep)

    @contextlib.contextmanager
    def _one_process_quiet(self):
        """DCP warns that it assumes one process when there is no process group: that is intended here."""
        with warnings.catch_warnings():
            if not self.ctx.distributed:
                warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            yield

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.exists():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and not p.name.endswith(".tmp")
                 and (p / "train_state.json").exists() and (p / ".metadata").exists()]
        return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def clear_partial(self) -> None:
        """Remove checkpoints a killed run left half-written (rank 0)."""
        if self.ctx.is_main and self.root.exists():
            for p in self.root.glob(PREFIX + "*.tmp"):
                shutil.rmtree(p, ignore_errors=True)
        self.ctx.barrier()

    def save(self, step: int, model, optimizer, train_state: dict, best_state: dict | None, fault=None) -> Path:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        final = self.root / f"{PREFIX}{step:08d}"
        tmp = final.with_name(final.name + ".tmp")
        if self.ctx.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self.ctx.barrier()
        model_sd, optim_sd = get_state_dict(model, optimizer)
        with self._one_process_quiet():
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
        (tmp / "rng").mkdir(exist_ok=True)
        torch.save(rng_state(), tmp / "rng" / f"rank_{self.ctx.rank}.pt")
        if fault is not None:
            fault("checkpoint", step)  # tests: die with the checkpoint half-written
        self.ctx.barrier()
        if self.ctx.is_main:
            if best_state is not None:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp / "best_translator.safetensors"))
            (tmp / "train_state.json").write_text(json.dumps({**train_state, "world_size": self.ctx.world}))
            _fsync_tree(tmp)
            if final.exists():  # the same step saved again (a resumed run): replace it
                old = final.with_name(final.name + ".old.tmp")
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old)
            else:
                tmp.rename(final)
            _fsync_dir(self.root)
            for stale in self.complete()[: -self.keep]:
                shutil.rmtree(stale, ignore_errors=True)
        self.ctx.barrier()
        return final

    def load(self, path: Path, model, optimizer) -> tuple[dict, dict | None]:
        """Restore model and optimizer in place; returns (train_state, best translator state or None)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        with self._one_process_quiet():
            dcp.load(state, checkpoint_id=str(path))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        train_state = json.loads((path / "train_state.json").read_text())
        rng_file = path / "rng" / f"rank_{self.ctx.rank}.pt"
        if train_state.get("world_size") == self.ctx.world and rng_file.exists():
            set_rng_state(torch.load(rng_file, weights_only=False))
        else:
            torch.manual_seed(int(train_state.get("seed", 0)) * 1000 + self.ctx.rank + int(train_state["step"]))
        best = None
        if (path / "best_translator.safetensors").exists():
            from safetensors.torch import load_file

            best = load_file(str(path / "best_translator.safetensors"))
        return train_state, best
