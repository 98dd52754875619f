"""python -m train.evaluate RUN: a finished run's saved translator scored again on the run's own test split."""

import json

import pytest

from tests.train.conftest import TINY_RUN
from train.config import parse_args
from train.evaluate import NotARunError, SplitMismatchError, evaluate_run, main, read_summary, run_config
from train.loop import train


@pytest.fixture(scope="module")
def finished_run(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    flags = ["--source", tiny_models[0], "--target", tiny_models[1], *TINY_RUN, "--out-dir", str(out),
             "--steps", "2", "--eval-every", "2", "--task", "relay_code2", "--test-examples", "6", "--seed", "3"]
    summary = train(parse_args(flags))
    return out, summary


def test_the_run_is_scored_on_its_own_test_split_through_the_codec(finished_run, capsys):
    out, summary = finished_run
    before = (out / "summary.json").read_text()
    assert main([str(out), "--bridge-only"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    # the same test examples as the run's own test pass, in the same order: the split was rebuilt from its seed
    assert result["gold_samples"] == summary["samples"]["gold"]
    assert result["run"]["test_examples"] == summary["test_examples"] == 6
    assert set(result["methods"]) == {"bridge_fp16", "bridge_int8", "bridge_int6", "bridge_int4"}
    assert all(row["n"] == 6 for row in result["methods"].values())
    wire = [result["methods"][f"bridge_int{b}"]["wire_bytes_per_example"] for b in (8, 6, 4)]
    assert wire == sorted(wire, reverse=True) and wire[-1] > 0
    assert result["run"]["test_bridged_acc_of_the_run"] == summary["test_bridged_acc"]
    assert (out / "summary.json").read_text() == before  # what the run saved is left as it was
    assert "bridge_int4" in capsys.readouterr().out


def test_a_second_evaluation_keeps_the_first(finished_run):
    out, _ = finished_run
    evaluate_run(out, text_baselines=False)
    first = (out / "evaluation.json").read_text()
    evaluate_run(out, text_baselines=True)
    assert (out / "evaluation.prev.json").read_text() == first
    methods = json.loads((out / "evaluation.json").read_text())["methods"]
    assert {"target_alone", "text_upper", "text_relay", "bridge_int4"} <= set(methods)


def test_overrides_and_fields_this_version_lacks(finished_run, tmp_path):
    out, _ = finished_run
    summary = json.loads((out / "summary.json").read_text())
    summary["config"]["a_flag_from_the_future"] = 1
    summary["config"]["init_from"] = "/gpu/machine/stage1/translator"  # a curriculum stage's start, not here
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    cfg, dropped = run_config(read_summary(tmp_path), {"threads": 2, "source": None})
    assert dropped == ["a_flag_from_the_future"] and cfg.threads == 2 and cfg.source == summary["config"]["source"]
    assert cfg.init_from == ""  # so check_config does not look for that folder here


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, finished_run):
    with pytest.raises(NotARunError, match="summary.json is missing"):
        evaluate_run(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"steps_run": 3}))
    with pytest.raises(NotARunError, match="no 'config'"):
        evaluate_run(tmp_path)
    out, _ = finished_run
    (tmp_path / "summary.json").write_text((out / "summary.json").read_text())
    with pytest.raises(NotARunError, match="no saved translator"):
        evaluate_run(tmp_path)


def test_process_settings_come_back_and_a_changed_split_is_refused(finished_run, tmp_path):
    import torch

    out, summary = finished_run
    threads = torch.get_num_threads()
    evaluate_run(out, text_baselines=False, threads=threads + 1)
    assert torch.get_num_threads() == threads  # put back, as train() does
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "translator").symlink_to(out / "translator")
    changed = json.loads((out / "summary.json").read_text())
    changed["samples"]["gold"] = ["not", "these"]  # as if the task generator had changed since the run
    (moved / "summary.json").write_text(json.dumps(changed))
    with pytest.raises(SplitMismatchError, match="not the run's"):
        evaluate_run(moved, text_baselines=False)
    assert not (moved / "evaluation.json").exists()
    with pytest.raises(SystemExit):  # the command says so without a traceback
        main([str(moved), "--bridge-only"])


def test_a_fresh_run_in_the_folder_sets_the_old_evaluation_aside(tiny_models, tmp_path):
    out = tmp_path / "run"
    flags = ["--source", tiny_models[0], "--target", tiny_models[1], *TINY_RUN, "--out-dir", str(out),
             "--steps", "1", "--eval-every", "1", "--task", "relay_code2"]
    train(parse_args(flags + ["--seed", "0"]))
    evaluate_run(out, text_baselines=False)
    first = (out / "evaluation.json").read_text()
    train(parse_args(flags + ["--seed", "5"]))
    assert not (out / "evaluation.json").exists() and (out / "evaluation.prev.json").read_text() == first
