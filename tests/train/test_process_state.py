"""A training run puts back the process-wide settings it changes (sweeps, tests and serving code
share the process): thread count, CPU flush-to-zero of subnormal floats and fp32 matmul precision."""

import pytest

import torch

from train.config import parse_args
from train.loop import flush_denormal_is_on, matmul_precision, train


def test_flush_denormal_probe_reads_the_setting():
    before = flush_denormal_is_on()
    try:
        torch.set_flush_denormal(True)
        assert flush_denormal_is_on()
        torch.set_flush_denormal(False)
        assert not flush_denormal_is_on()
    finally:
        torch.set_flush_denormal(before)


def test_a_run_restores_flush_denormal_and_threads(tiny_run, tmp_path):
    threads = torch.get_num_threads()
    for state in (False, True):
        torch.set_flush_denormal(state)
        train(parse_args(tiny_run(tmp_path / f"run_{state}", "--steps", "2", "--eval-every", "2", "--task", "relay_code2")))
        assert flush_denormal_is_on() == state  # it was on during the run, and is back as it was
        assert torch.get_num_threads() == threads
    torch.set_flush_denormal(False)


@pytest.mark.parametrize("flag, device, dtype, expected", [
    ("auto", "cuda", torch.bfloat16, "high"),      # bf16 models: the translator's fp32 matmuls as TF32
    ("auto", "cuda", torch.float32, "highest"),    # an fp32 run stays exact
    ("on", "cuda", torch.float32, "high"),
    ("off", "cuda", torch.bfloat16, "highest"),
    ("on", "cpu", torch.bfloat16, "highest"),      # TF32 is a CUDA setting
])
def test_tf32_follows_the_flag_the_device_and_the_dtype(flag, device, dtype, expected):
    before = torch.get_float32_matmul_precision()
    cfg = parse_args(["--tf32", flag])
    with matmul_precision(cfg, torch.device(device), dtype) as precision:
        assert precision == expected and torch.get_float32_matmul_precision() == expected
    assert torch.get_float32_matmul_precision() == before


def test_the_matmul_precision_comes_back_when_the_block_raises():
    before = torch.get_float32_matmul_precision()
    with pytest.raises(RuntimeError, match="boom"):
        with matmul_precision(parse_args(["--tf32", "on"]), torch.device("cuda"), torch.float32):
            assert torch.get_float32_matmul_precision() == "high"
            raise RuntimeError("boom")
    assert torch.get_float32_matmul_precision() == before


def test_a_bad_tf32_value_is_refused_before_any_model_loads():
    from train.config import check_config
    with pytest.raises(ValueError, match="--tf32"):
        check_config(parse_args(["--tf32", "maybe"]))


def test_a_run_restores_the_matmul_precision(tiny_run, tmp_path):
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        summary = train(parse_args(tiny_run(tmp_path / "run", "--steps", "2", "--eval-every", "2", "--task", "relay_code2")))
        assert summary["matmul_precision"] == "highest"  # CPU: no TF32
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
