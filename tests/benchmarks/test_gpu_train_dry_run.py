"""benchmarks/gpu_train.py's CPU dry run (--quick) reports FLOPs and MFU beside throughput.

Run as a subprocess: the script starts a process group of one (torchrun's environment variables
set in this process would make later tests think they run under torchrun)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEAK = 0.01  # TFLOP/s: a CPU-sized peak, so the MFU path runs on a CPU


def test_dry_run_reports_the_same_step_flops_for_every_layout_and_mfu_against_the_peak(tmp_path):
    out = tmp_path / "gpu_train"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    run = subprocess.run([sys.executable, "benchmarks/gpu_train.py", "--quick", "--device", "cpu", "--out", str(out),
                          "--peak-tflops", str(PEAK)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "gpu_train.json").read_text())
    assert report["peak_bf16_tflops"] == PEAK and report["peak_from"] == "--peak-tflops"
    assert "partial" not in report  # the finished run's last write
    rows = report["results"]
    assert all("error" not in r for r in rows), [r.get("error") for r in rows]
    encode = [r for r in rows if r["name"].startswith("source_encode")]
    steps = [r for r in rows if "global_batch" in r and not r["name"].startswith("source_encode")]
    assert len(encode) == 1 and encode[0]["tflop_per_encode_per_rank"] > 0 and len(steps) == 4
    # replicated / sharded target, with or without checkpointing: the same batches, the same model work
    assert len({r["tflop_per_step"] for r in steps}) == 1 and steps[0]["tflop_per_step"] > 0
    for r in steps + encode:
        assert abs(r["mfu"] - r["tflops_per_s_per_gpu"] / PEAK) <= 0.01 * r["mfu"], r
    for r in steps:
        parts = r["tflop_per_step_by_part"]
        assert parts["target"] > 0 and parts["translator"] > 0
        assert abs(sum(parts.values()) - r["tflop_per_step"]) <= 1e-3 * r["tflop_per_step"]
    table = (out / "gpu_train.md").read_text()
    assert "| TFLOP/step | TFLOP/s/GPU | MFU |" in table and "%" in table


def test_compile_entries_name_the_step_variants():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gpu_train import compile_entries
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert compile_entries("off, on,waited,regions,mode:max-autotune,backend:eager") == [
        ("off", "off", None), ("on", "on", None), ("waited", "on", {"pipelined": False}), ("regions", "on", {"regions": True}),
        ("mode:max-autotune", "on", {"mode": "max-autotune"}), ("backend:eager", "on", {"backend": "eager"})]
    import pytest
    with pytest.raises(ValueError, match="waited"):
        compile_entries("fast")


def test_a_run_cut_short_keeps_the_measurements_it_finished(tmp_path):
    """The report is written after every measurement: a run stopped during its second one (here an
    interrupt, on the GPU machine a time limit) leaves gpu_train.json with the first, marked partial."""
    out = tmp_path / "cut"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    script = (
        "import sys; sys.path.insert(0, 'benchmarks'); import gpu_train\n"
        "real, calls = gpu_train.measure, []\n"
        "def cut(*args, **kw):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2: raise KeyboardInterrupt\n"
        "    return real(*args, **kw)\n"
        "gpu_train.measure = cut\n"
        f"gpu_train.main(['--quick', '--device', 'cpu', '--out', {str(out)!r}])\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "KeyboardInterrupt" in run.stderr
    report = json.loads((out / "gpu_train.json").read_text())
    assert "partial" in report and [r["name"].split()[0] for r in report["results"]] == ["source_encode"]
    assert "error" not in report["results"][0] and report["results"][0]["tflop_per_encode_per_rank"] > 0


def test_compile_rows_cover_the_8b_shapes_too(tmp_path):
    """--compile with the shapes on: the 8B-shaped pair (tiny in --quick) gets eager and captured rows in one
    process at --batch-size, beside the embedded (here tiny) pair's; the captured FLOPs count its padding."""
    out = tmp_path / "compile"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    run = subprocess.run([sys.executable, "benchmarks/gpu_train.py", "--quick", "--device", "cpu", "--out", str(out),
                          "--compile", "off,on", "--peak-tflops", str(PEAK)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads((out / "gpu_train.json").read_text())["results"]}
    assert all("error" not in r for r in rows.values()), {n: r.get("error") for n, r in rows.items()}
    eager, captured = rows["tiny-wide tiny compile=off"], rows["tiny-wide tiny compile=on"]
    assert eager["global_batch"] == captured["global_batch"] == 4  # --quick's --batch-size
    assert captured["speedup_vs_off"] > 0 and captured["tflop_per_step"] >= eager["tflop_per_step"] > 0
    assert eager["tflop_per_step"] == rows["tiny-wide tiny target=replicated ac=off"]["tflop_per_step"]
    table = (out / "gpu_train.md").read_text()  # each pair's captured rows under its own eager row
    for pair in ("tiny tiny", "tiny-wide tiny"):
        base, row = rows[f"{pair} compile=off"], rows[f"{pair} compile=on"]
        assert (f"- {pair}, eager: {base['samples_per_s']} samples/s, first-step loss {base['loss_first_last'][0]}\n"
                f"  - {pair} compile=on: {row['samples_per_s']} samples/s") in table
