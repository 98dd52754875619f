"""train.fsdp flags and config sections: every old flag still parses, --help is grouped by section
with one-line helps, sections round-trip, and the drivers share the parser (typos fail clearly)."""

import json
import os
import subprocess
import sys
from dataclasses import FrozenInstanceError, asdict, fields, replace

import pytest

from train import ablations, curriculum, sweep
from train.config import (SECTION_FIELDS, SECTIONS, OptimConfig, TrainConfig, build_parser, check_config,
                          parse_args)

# every flag train.fsdp has taken (by type), so a renamed field fails here: scripts and plans spell them
OLD_FLAGS = {
    "bool": ["baselines", "rms_match", "infonce", "all_questions", "kl_teacher", "gate_lr_boost", "early_stopping",
             "cache_source", "shard_target", "activation_checkpointing", "compile_regions", "resume", "tensorboard", "progress"],
    "int": ["tokens", "depth", "heads", "bottleneck", "source_layer", "target_layers", "steps", "batch_size",
            "grad_accum", "warmup", "train_examples", "val_examples", "test_examples", "eval_every",
            "max_source_tokens", "max_new_tokens", "relay_tokens", "recon_steps", "recon_eval", "patience", "seed",
            "checkpoint_every", "keep_checkpoints", "max_nonfinite", "threads"],
    "float": ["patience_floor", "wide_answers", "wide_templates", "pseudo_words", "multi_words", "query_init_std", "gate_init", "lr",
              "weight_decay", "infonce_weight", "recon_weight", "kl_weight", "spell_weight", "gate_lr_mult", "dropout",
              "grad_clip"],
    "str": ["source", "target", "task", "eval_task", "data", "eval_data", "protocol", "source_order", "preset",
            "source_position", "init_from", "device", "dtype", "tf32", "out_dir", "compile"],
}
SAMPLE = {"int": ("7", 7), "float": ("0.25", 0.25), "str": ("relay_qa:2", "relay_qa:2")}


def _flag(name):
    return "--" + name.replace("_", "-")


def test_the_fields_are_the_old_flags():
    assert sorted(f.name for f in fields(TrainConfig)) == sorted(n for names in OLD_FLAGS.values() for n in names)
    assert {f.name: f.type for f in fields(TrainConfig)} == {n: t for t, names in OLD_FLAGS.items() for n in names}


@pytest.mark.parametrize("name", [n for t in ("int", "float", "str") for n in OLD_FLAGS[t]])
def test_every_old_valued_flag_parses_to_its_value(name):
    kind = next(t for t, names in OLD_FLAGS.items() if name in names)
    text, value = SAMPLE[kind]
    for argv in ([_flag(name), text], [f"{_flag(name)}={text}"]):
        assert getattr(parse_args(argv), name) == value
        assert asdict(parse_args(argv)) == {**asdict(TrainConfig()), name: value}


@pytest.mark.parametrize("name", OLD_FLAGS["bool"])
def test_every_old_switch_parses_both_ways(name):
    assert getattr(parse_args([_flag(name)]), name) is True
    assert getattr(parse_args(["--no-" + _flag(name)[2:]]), name) is False


def test_overrides_and_boolean_switches():
    cfg = parse_args(["--tokens", "64", "--no-infonce", "--kl-teacher", "--lr", "3e-4", "--task", "relay_qa:4"])
    assert cfg.tokens == 64 and not cfg.infonce and cfg.kl_teacher and cfg.lr == 3e-4 and cfg.task == "relay_qa:4"
    assert parse_args([]) == TrainConfig()
    assert parse_args(["--tok", "64"]).tokens == 64  # unambiguous abbreviations, as before
    assert parse_args(["--source-layer", "-1"]).source_layer == -1


def test_help_lists_every_flag_under_its_section_in_one_line_each():
    out = subprocess.run([sys.executable, "-m", "train.fsdp", "--help"], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "250"}).stdout
    starts = [out.index(f"\n{section}:\n  {title}\n") for section, title in SECTIONS.items()]
    assert starts == sorted(starts)  # the groups in SECTIONS' order
    for (section, start), end in zip(zip(SECTIONS, starts), [*starts[1:], len(out)]):
        for name in SECTION_FIELDS[section]:
            assert f"\n  {_flag(name)}" in out[start:end], (section, name)
    for f in fields(TrainConfig):
        help_text = f.metadata["help"]
        assert "\n" not in help_text and len(help_text) <= 100, (f.name, len(help_text))
        assert help_text in out  # on one line: 250 columns leave room for every help


def test_every_field_is_in_exactly_one_section():
    names = [n for section in SECTIONS for n in SECTION_FIELDS[section]]
    assert sorted(names) == sorted(f.name for f in fields(TrainConfig))
    assert all(SECTION_FIELDS.values())


def test_sections_round_trip_and_read_the_flat_fields():
    cfg = parse_args(["--lr", "3e-4", "--tokens", "48", "--task", "relay_qa:4", "--no-infonce", "--out-dir", "x"])
    assert (cfg.optim.lr, cfg.bridge.tokens, cfg.dataset.task, cfg.loss.infonce, cfg.checkpoint.out_dir) == (
        3e-4, 48, "relay_qa:4", False, "x")
    assert isinstance(cfg.optim, OptimConfig) and OptimConfig().lr == TrainConfig().lr
    assert TrainConfig.from_sections(cfg.sections()) == cfg
    as_json = json.loads(json.dumps({name: asdict(section) for name, section in cfg.sections().items()}))
    assert TrainConfig.from_sections(as_json) == cfg
    assert TrainConfig.from_sections({"optim": {"lr": 3e-4}}) == TrainConfig(lr=3e-4)
    # summary.json's "config" stays flat: the keys scripts and the demo read back
    assert list(asdict(cfg)) == [f.name for f in fields(TrainConfig)] and replace(cfg, lr=1.0).optim.lr == 1.0


def test_a_section_is_written_whole_or_through_the_flat_field():
    cfg = TrainConfig()
    with pytest.raises(FrozenInstanceError):
        cfg.optim.lr = 5e-4  # a snapshot: writing a copy would be silently lost
    cfg.optim = replace(cfg.optim, lr=5e-4, steps=10)
    assert (cfg.lr, cfg.steps) == (5e-4, 10)
    cfg.lr = 1e-4
    assert cfg.optim.lr == 1e-4
    with pytest.raises(TypeError, match="takes a OptimConfig"):
        cfg.optim = cfg.loss
    with pytest.raises(ValueError, match="unknown config section 'optimizer'"):
        TrainConfig.from_sections({"optimizer": {}})
    with pytest.raises(TypeError, match="tokens"):
        TrainConfig.from_sections({"optim": {"tokens": 4}})  # a field of another section


@pytest.mark.parametrize("driver, argv, problem", [
    (sweep, ["p.plan", "--lrr", "3"], "unrecognized arguments: --lrr 3"),
    (sweep, ["p.plan", "--paralel", "2"], "unrecognized arguments: --paralel 2"),
    (sweep, ["p.plan", "--parallel", "two"], "argument --parallel: invalid int value: 'two'"),
    (sweep, ["--tokens", "4", "p.plan"], "PLAN comes first"),
    (curriculum, ["relay_qa:1,relay_qa:2", "--stpes", "2,3"], "unrecognized arguments: --stpes 2,3"),
    (ablations, ["tokens", "--onyl", "k32"], "unrecognized arguments: --onyl k32"),
    (ablations, ["token"], "argument NAME: invalid choice: 'token'"),
])
def test_the_drivers_reject_unknown_flags_before_anything_runs(driver, argv, problem, capsys):
    with pytest.raises(SystemExit) as stop:
        driver.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert problem in err and f"usage: {driver.PARSER.prog}" in err


@pytest.mark.parametrize("driver, group", [(sweep, "train.sweep"), (curriculum, "train.curriculum"),
                                           (ablations, "train.ablations")])
def test_driver_help_lists_its_flags_then_the_sections(driver, group, capsys):
    with pytest.raises(SystemExit) as stop:
        driver.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.index(f"\n{group}:\n") < out.index("\nmodel:\n") < out.index("\ncheckpoint:\n")


def test_driver_flags_come_out_and_the_training_flags_stay_in_order():
    args, common = sweep.PARSER.parse(["p.plan", "--tokens", "64", "--parallel", "2", "--source-layer", "-1",
                                       "--timeout=5", "--no-infonce"])
    assert (args.plan, args.parallel, args.timeout) == ("p.plan", 2, 5.0)
    assert common == ["--tokens", "64", "--source-layer", "-1", "--no-infonce"]
    args, common = ablations.PARSER.parse(["quality", "--collect", "--only", "soft_only_f1", "--out-dir", "d"])
    assert (args.name, args.collect, args.only, common) == ("quality", True, "soft_only_f1", ["--out-dir", "d"])
    out_dir, stages = curriculum.stage_flags(["relay_qa:1", "relay_qa:2"], ["--steps", "2,3", "--tokens", "8"])
    assert str(out_dir) == "runs/curriculum"
    assert [(parse_args(f).steps, parse_args(f).tokens, parse_args(f).task) for _, f in stages] == [
        (2, 8, "relay_qa:1"), (3, 8, "relay_qa:2")]


def test_curriculum_flags_replace_the_training_ones_of_the_same_name():
    help_text = curriculum.PARSER.parser().format_help()
    assert help_text.count("\n  --steps ") == 1 and "--steps N[,N...]" in help_text
    assert build_parser().format_help().count("\n  --steps ") == 1


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
