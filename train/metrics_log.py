"""metrics.jsonl (and TensorBoard when the package is installed) for a training run.

Decisions: only rank 0 writes; a resumed run first drops the records after its checkpoint's step, so
the log reads as one uninterrupted run; a fresh run starts a new file (train.loop first moves a
previous run's log to ``metrics.prev.jsonl``, beside ``checkpoints.prev/``); TensorBoard is optional (``pip install -e ".[tensorboard]"``)
and skipped silently without it: metrics.jsonl always has every figure.
"""

from __future__ import annotations

import json
from pathlib import Path

from .distributed import DistContext


class MetricsLog:
    """metrics.jsonl (and TensorBoard when installed) on rank 0; nothing on the other ranks."""

    def __init__(self, out: Path, ctx: DistContext, tensorboard: bool, truncate_after: int | None = None):
        self.file, self.writer = None, None
        if not ctx.is_main:
            return
        path = out / "metrics.jsonl"
        if truncate_after is not None and path.exists():  # a resumed run rewrites what follows its checkpoint
            kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= truncate_after]
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(path)
        self.file = path.open("a" if truncate_after is not None else "w")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=truncate_after + 1 if truncate_after else None)
            except ImportError:  # optional extra; metrics.jsonl has everything
                self.writer = None

    def write(self, record: dict) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"train/{key}", value, record["step"])
            for rank, mb in enumerate(record.get("peak_mem_mb", [])):
                self.writer.add_scalar(f"memory/peak_mb_rank{rank}", mb, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()
