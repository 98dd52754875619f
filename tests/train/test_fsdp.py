"""train.fsdp under torchrun (2 CPU processes, gloo, FSDP2) against one process, on tiny random Llamas.

Properties: the loss trajectory of 2 processes equals one process's on the same global batch (also with
the target sharded, `--shard-target`);
a run SIGKILLed while writing a checkpoint resumes from the last complete one with the same
subsequent losses as an uninterrupted run (dropout on: RNG states are restored); a checkpoint
written by 2 processes continues in 1 and one written by 1 continues in 2; gradient accumulation
equals the full batch; non-finite steps are skipped, counted, and bounded by --max-nonfinite.
Models: random Llamas (hidden 64 -> 96, 2 layers, byte tokenizer) saved to disk and loaded
through ``lw_runtime.models.load_model``; task: the synthetic 1-fact code relay.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from train.config import parse_args
from train.loop import train
from train.random_models import save_random

STEPS = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return save_random(root / "source", "tiny", seed=1), save_random(root / "target", "tiny-wide", seed=2)


def flags(models, out, *extra) -> list[str]:
    return [
        "--source", models[0], "--target", models[1], "--preset", "tiny", "--source-layer", "-1",
        "--steps", str(STEPS), "--batch-size", "8", "--warmup", "2", "--eval-every", "4", "--checkpoint-every", "2",
        "--train-examples", "64", "--val-examples", "6", "--test-examples", "6", "--max-new-tokens", "3",
        "--no-baselines", "--no-progress", "--no-tensorboard", "--threads", "1", "--out-dir", str(out), *extra,
    ]


def torchrun(args, env_extra=None, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train.fsdp", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if check and done.returncode != 0:
        raise AssertionError(f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return done


def one_process(args):
    return train(parse_args(args))


def losses(out) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), f"metrics.jsonl steps repeat or go backwards: {steps}"
    return {r["step"]: r["loss"] for r in rows}


def assert_same(a: dict, b: dict, steps, rel=1e-4):
    for s in steps:
        assert a[s] == pytest.approx(b[s], rel=rel), (s, a, b)


def keep_only(out, step: int):
    """A copy of a run as it stood at ``step``: later checkpoints gone."""
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert f"step_{step:08d}" in names, names
    for p in (out / "checkpoints").iterdir():
        if int(p.name.split("_")[1]) != step:
            shutil.rmtree(p)


@pytest.fixture(scope="module")
def runs(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    one_process(flags(models, root / "one", "--dropout", "0"))
    torchrun(flags(models, root / "two", "--dropout", "0"))
    return root


def test_two_processes_match_one_process_on_the_same_global_batch(runs):
    one, two = losses(runs / "one"), losses(runs / "two")
    assert len(one) == len(two) == STEPS
    assert_same(one, two, range(1, STEPS + 1))
    summary = json.loads((runs / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and len(summary["peak_mem_mb_per_rank"]) == 2
    record = json.loads((runs / "two" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["samples_per_s"] > 0 and record["tokens_per_s"] > 0 and len(record["peak_mem_mb"]) == 2
    assert "infonce" in record  # InfoNCE active, computed over the batch gathered from both ranks


def test_sharded_target_gives_the_same_losses_and_evaluates_in_step(models, runs, tmp_path):
    """--shard-target: the frozen target's blocks are FSDP2-sharded too (each forward all-gathers
    them); losses equal the one-process run's, and the greedy evaluation (HF ``synced_gpus``, every
    rank stepping until all are done) finishes on both ranks with the same accuracy."""
    out = tmp_path / "sharded"
    torchrun(flags(models, out, "--dropout", "0", "--shard-target"))
    assert_same(losses(runs / "one"), losses(out), range(1, STEPS + 1))
    sharded, one = (json.loads((p / "summary.json").read_text()) for p in (out, runs / "one"))
    assert sharded["world_size"] == 2 and sharded["config"]["shard_target"]
    assert sharded["test_bridged_acc"] == one["test_bridged_acc"]
    assert sharded["samples"]["bridged"] == one["samples"]["bridged"]


def test_sigkill_while_checkpointing_then_resume_gives_the_same_losses(models, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    torchrun(flags(models, straight))  # dropout 0.1: resuming must restore every rank's RNG
    died = torchrun(flags(models, killed), env_extra={"LW_FAULT_KILL": "checkpoint:6"}, check=False)
    assert died.returncode != 0
    names = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert names == ["step_00000002", "step_00000004", "step_00000006.tmp"], names  # last complete one kept
    torchrun(flags(models, killed, "--resume"))
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step_00000006", "step_00000008"]
    a, b = losses(straight), losses(killed)
    assert len(b) == STEPS
    assert all(a[s] == b[s] for s in range(1, STEPS + 1)), (a, b)  # exact, not approximate
    assert json.loads((killed / "summary.json").read_text())["resumed_from_step"] == 4


def test_checkpoint_from_two_processes_continues_in_one(models, runs, tmp_path):
    out = tmp_path / "two_to_one"
    shutil.copytree(runs / "two", out)
    keep_only(out, 6)
    summary = one_process(flags(models, out, "--dropout", "0", "--resume"))
    assert summary["resumed_from_step"] == 6 and summary["world_size"] == 1
    assert_same(losses(runs / "two"), losses(out), range(1, STEPS + 1))


def test_checkpoint_from_one_process_continues_in_two(models, runs, tmp_path):
    out = tmp_path / "one_to_two"
    shutil.copytree(runs / "one", out)
    keep_only(out, 6)
    torchrun(flags(models, out, "--dropout", "0", "--resume"))
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 6
    assert_same(losses(runs / "one"), losses(out), range(1, STEPS + 1))


def test_gradient_accumulation_equals_the_full_batch(models, tmp_path):
    common = ["--dropout", "0", "--no-infonce", "--steps", "3", "--checkpoint-every", "0", "--spell-weight", "0.5"]
    one_process(flags(models, tmp_path / "full", *common))
    one_process(flags(models, tmp_path / "accum", *common, "--grad-accum", "2"))
    assert_same(losses(tmp_path / "full"), losses(tmp_path / "accum"), range(1, 4))


def test_spelling_loss_two_processes_match_one(models, tmp_path):
    """--spell-weight is scaled like the cross-entropy (per answer token of the global batch), so two
    processes on the same global batch give one process's losses with it on too."""
    common = ["--dropout", "0", "--steps", "3", "--checkpoint-every", "0", "--spell-weight", "0.5"]
    one_process(flags(models, tmp_path / "one", *common))
    torchrun(flags(models, tmp_path / "two", *common))
    assert_same(losses(tmp_path / "one"), losses(tmp_path / "two"), range(1, 4))
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert all("spell" in r for r in rows)


def test_nonfinite_steps_are_skipped_counted_and_bounded(models, tmp_path, monkeypatch):
    import train.losses as L

    real, calls = L.answer_logits, {"n": 0}

    def poisoned(target, inputs):
        logits, labels = real(target, inputs)
        calls["n"] += 1
        return (logits * float("nan"), labels) if calls["n"] == 2 else (logits, labels)

    monkeypatch.setattr(L, "answer_logits", poisoned)
    common = ["--dropout", "0", "--steps", "3", "--checkpoint-every", "0", "--max-nonfinite", "1"]
    summary = one_process(flags(models, tmp_path / "skip", *common))
    rows = [json.loads(line) for line in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert summary["nonfinite_steps"] == 1 and rows[1].get("skipped") and not rows[2].get("skipped")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in (rows[0], rows[2]))
    calls["n"] = 0
    with pytest.raises(FloatingPointError, match="max-nonfinite 0"):
        one_process(flags(models, tmp_path / "stop", *common[:-1], "0"))


def test_a_fresh_run_in_a_used_folder_starts_a_new_metrics_log(tmp_path):
    """What train() does before a fresh run's log opens: the previous log and summary set aside."""
    from train.checkpoint import Checkpointer
    from train.distributed import DistContext
    from train.loop import _set_aside_previous_run
    from train.metrics_log import MetricsLog

    ctx = DistContext()  # one process, rank 0
    first = MetricsLog(tmp_path, ctx, tensorboard=False)
    first.write({"step": 1, "loss": 1.0})
    first.close()
    (tmp_path / "summary.json").write_text('{"run": 1}')
    _set_aside_previous_run(tmp_path, Checkpointer(tmp_path / "checkpoints", ctx, 2))
    second = MetricsLog(tmp_path, ctx, tensorboard=False)
    second.write({"step": 1, "loss": 2.0})
    second.close()
    assert [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2.0]
    assert [json.loads(line)["loss"] for line in (tmp_path / "metrics.prev.jsonl").read_text().splitlines()] == [1.0]
    assert json.loads((tmp_path / "summary.prev.json").read_text()) == {"run": 1}
    assert not (tmp_path / "summary.json").exists()
