"""Where a training step's time goes (``benchmarks/gpu_train.py --profile N``).

Decisions:
- ``torch.profiler`` over N optimizer steps of an already warm ``Trainer`` (compiles and CUDA-graph
  captures done), CPU and CUDA activities, no shapes or stacks (they slow the host side).
- Per step: wall time (the Trainer's own ``step_s``), GPU busy time (the union of kernel and copy
  intervals on the device, so overlapping streams are not counted twice) and therefore GPU idle
  time, which is what host work and synchronisation cost; the host time of the Trainer's named
  regions (``lw:prep``, ``lw:forward``, ``lw:backward``, ``lw:read_losses``, ``lw:optimizer``,
  ``lw:sync``: ``train.loop.Trainer.step``); the device kernels with the most time.
- A graph replay shows its kernels individually on recent CUDA/CUPTI; where it does not, busy time
  still counts the replay's span.
"""

from __future__ import annotations

import statistics

import torch

REGIONS = ("lw:prep", "lw:forward", "lw:backward", "lw:read_losses", "lw:optimizer", "lw:sync")


def _union_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def profile_steps(trainer, examples: list, batch_size: int, steps: int, start: int = 0, top: int = 15) -> dict:
    """Profile ``steps`` optimizer steps of ``trainer`` on consecutive batches of ``examples``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if trainer.ctx.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    records, pos = [], start
    with profile(activities=activities) as prof:
        for step in range(steps):
            batch = [examples[(pos + i) % len(examples)] for i in range(batch_size)]
            pos += batch_size
            records.append(trainer.step(1000 + step, batch))
        records.append(trainer.flush())  # pipelined: the last step's record (None otherwise)
    records = [r for r in records if r is not None]
    wall_ms = statistics.median(r["step_s"] for r in records) * 1000
    return summarize(prof.events(), steps, wall_ms, top)


def summarize(events, steps: int, wall_ms: float, top: int = 15) -> dict:
    """The profile's figures from its events. A name that also appears on the host is a user annotation
    (``record_function``: the lw:* regions, ``Optimizer.step#…``) that the profiler mirrors onto the GPU
    timeline as one span from its first to its last kernel; such spans are not device work and count
    neither as busy time nor as a device op (session 15's first H200 profile counted them: busy time
    and the top ops' shares were overstated there)."""
    host_names = {e.name for e in events if getattr(e, "device_type", None) in (None, torch.autograd.DeviceType.CPU)}
    device_intervals, kernels, regions = [], {}, {r: 0.0 for r in REGIONS}
    for e in events:
        kind = getattr(e, "device_type", None)
        if kind is not None and kind != torch.autograd.DeviceType.CPU:
            if e.name in host_names:
                continue
            start_us, dur = e.time_range.start, e.time_range.elapsed_us()
            device_intervals.append((start_us, start_us + dur))
            kernels[e.name] = kernels.get(e.name, 0.0) + dur
        elif e.name in regions:
            regions[e.name] += e.time_range.elapsed_us()
    busy_ms = _union_us(device_intervals) / 1000 / steps
    total_kernel = sum(kernels.values()) or 1.0
    return {
        "profiled_steps": steps,
        "wall_ms_median": round(wall_ms, 2),
        "device_busy_ms_per_step": round(busy_ms, 2),
        "device_idle_share": round(max(0.0, 1 - busy_ms / wall_ms), 3) if device_intervals else None,
        "host_region_ms_per_step": {k: round(v / 1000 / steps, 2) for k, v in regions.items()},
        "top_device_ops": [
            {"name": name[:120], "ms_per_step": round(us / 1000 / steps, 3), "share": round(us / total_kernel, 3)}
            for name, us in sorted(kernels.items(), key=lambda kv: -kv[1])[:top]
        ],
    }
