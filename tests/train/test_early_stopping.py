"""Early stopping keeps the best validation translator and stops a run whose validation stalls, but only
once validation has reached --patience-floor: a run still at its untrained level (0% here: tiny random
models cannot answer) trains on to --steps, where before it was stopped --patience evaluations after its
first one (runs that had not reached their onset were cut)."""

import pytest

from train.config import parse_args
from train.loop import train

FLAGS = ("--steps", "8", "--eval-every", "2", "--patience", "1", "--task", "relay_code2")


@pytest.mark.parametrize("floor, steps_run", [("0", 4), ("0.1", 8)])
def test_patience_counts_only_from_the_floor(tiny_run, tmp_path, floor, steps_run):
    summary = train(parse_args(tiny_run(tmp_path / f"f{floor}", *FLAGS, "--patience-floor", floor)))
    assert summary["best_val_acc"] == 0.0  # never learned: below any floor above 0
    assert summary["steps_run"] == steps_run


def test_the_floor_is_a_probability():
    from train.config import check_config
    with pytest.raises(ValueError, match="--patience-floor"):
        check_config(parse_args(["--patience-floor", "20"]))
