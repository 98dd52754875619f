"""benchmarks/step_profile.summarize on hand-made profiler events: device busy time is the union of
kernel intervals; a user annotation mirrored onto the GPU timeline (same name as a host event) is
neither busy time nor a device op; host regions are summed per step."""

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from step_profile import summarize  # noqa: E402

CPU, CUDA = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA


def _event(name, device, start_us, dur_us):
    return SimpleNamespace(name=name, device_type=device,
                           time_range=SimpleNamespace(start=start_us, elapsed_us=lambda d=dur_us: d))


def test_annotation_spans_on_the_gpu_are_not_device_work():
    events = [
        _event("lw:forward", CPU, 0, 9_000),           # host region
        _event("lw:forward", CUDA, 1_000, 8_000),      # its mirror on the GPU: a span, not a kernel
        _event("gemm_a", CUDA, 1_000, 2_000),
        _event("gemm_a", CUDA, 2_500, 1_000),          # overlaps the first: counted once in busy time
        _event("softmax", CUDA, 7_000, 2_000),
        _event("lw:read_losses", CPU, 9_000, 500),
    ]
    out = summarize(events, steps=1, wall_ms=10.0)
    assert out["device_busy_ms_per_step"] == 4.5       # [1.0, 3.5] and [7.0, 9.0] ms, not the 8 ms span
    assert out["device_idle_share"] == 0.55
    assert [op["name"] for op in out["top_device_ops"]] == ["gemm_a", "softmax"]
    assert out["top_device_ops"][0]["share"] == 0.6    # 3 of 5 ms of kernel time
    assert out["host_region_ms_per_step"]["lw:forward"] == 9.0
    assert out["host_region_ms_per_step"]["lw:read_losses"] == 0.5


def test_per_step_figures_divide_by_the_steps():
    events = [_event("k", CUDA, 0, 4_000), _event("k", CUDA, 10_000, 4_000)]
    out = summarize(events, steps=2, wall_ms=10.0)
    assert out["device_busy_ms_per_step"] == 4.0
    assert out["top_device_ops"][0]["ms_per_step"] == 4.0


def test_no_device_events_gives_no_idle_share():
    out = summarize([_event("lw:prep", CPU, 0, 100)], steps=1, wall_ms=1.0)
    assert out["device_idle_share"] is None and out["top_device_ops"] == []
