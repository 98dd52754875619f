"""train.fsdp flags: every config field has a documented flag; overrides parse."""

import subprocess
import sys
from dataclasses import fields

import pytest

from train.config import TrainConfig, check_config, parse_args


def test_help_documents_every_flag():
    out = subprocess.run([sys.executable, "-m", "train.fsdp", "--help"], capture_output=True, text=True, check=True).stdout
    for f in fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in out
        assert f.metadata["help"].split()[0] in out


def test_overrides_and_boolean_switches():
    cfg = parse_args(["--tokens", "64", "--no-infonce", "--kl-teacher", "--lr", "3e-4", "--task", "relay_qa:4"])
    assert cfg.tokens == 64 and not cfg.infonce and cfg.kl_teacher and cfg.lr == 3e-4 and cfg.task == "relay_qa:4"
    assert parse_args([]) == TrainConfig()


@pytest.mark.parametrize("flags, problem", [
    (["--source-order", "sideways"], "--source-order"),
    (["--wide-answers", "2"], "probability"),
    (["--wide-answers", "0.5", "--task", "relay_code"], "replaces relay_qa word values"),
    (["--wide-templates", "1.5"], "probability"),
    (["--wide-templates", "0.5", "--task", "arithmetic"], "rewords relay-task sentences"),
    (["--pseudo-words", "0.5"], "set --wide-answers too"),
    (["--pseudo-words", "1.5", "--wide-answers", "0.5"], "probability"),
    (["--multi-words", "0.5"], "set --wide-answers too"),
    (["--multi-words", "1.5", "--wide-answers", "0.5"], "probability"),
    (["--multi-words", "0.6", "--pseudo-words", "0.6", "--wide-answers", "0.5"], "either"),
])
def test_flags_that_would_be_ignored_are_rejected(flags, problem):
    with pytest.raises(ValueError, match=problem):
        check_config(parse_args(flags))
    check_config(parse_args([]))


def test_wide_templates_is_accepted_for_every_relay_task():
    for task in ("relay_qa", "relay_qa:4", "relay_code", "relay_code2"):
        cfg = parse_args(["--wide-templates", "0.5", "--task", task])
        assert cfg.wide_templates == 0.5
        check_config(cfg)
