"""Validation and test scoring by greedy generation and strict answer extraction.

Decisions: accuracy is exact match of the first answer line (``lw_runtime.protocols.exact_match``);
under torchrun each rank scores an equal contiguous share and the counts are summed, so every rank
gets the same figure; with a sharded target every rank keeps stepping until all are done. One
process is the world-of-one case of the same function (``DistContext()``), so there is one path.
"""

from __future__ import annotations

import math

import torch

from lw_runtime.protocols import exact_match

from .distributed import DistContext


@torch.no_grad()
def evaluate_sharded(ctx: DistContext, examples, run_chunk, batch_size: int = 32) -> tuple[float, list[str]]:
    """Each rank scores an equal contiguous share (the last one padded by repeating the final
    example, not scored, so every rank runs the same number of batches); correct counts are summed
    over ranks and the outputs gathered in order on every rank."""
    n = len(examples)
    per = math.ceil(n / ctx.world)
    start = ctx.rank * per
    mine = examples[start : start + per]
    real = len(mine)
    padded = mine + [examples[-1]] * (per - real) if n else []
    outputs = []
    for i in range(0, per, batch_size):
        outputs += run_chunk(padded[i : i + batch_size])
    outputs = outputs[:real]
    correct = sum(exact_match(t, e.answer) for t, e in zip(outputs, mine))
    total = ctx.all_reduce_sum([float(correct)])[0]
    gathered = ctx.gather_objects(outputs)
    return total / max(1, n), [t for part in gathered for t in part]
