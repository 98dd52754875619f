"""A training run puts back the process-wide settings it changes (sweeps, tests and serving code
share the process): thread count and CPU flush-to-zero of subnormal floats."""

import torch

from train.config import parse_args
from train.loop import flush_denormal_is_on, train


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
