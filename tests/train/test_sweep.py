"""train.sweep: a plan of runs (in one process, and as parallel processes), its table and provenance."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from train import sweep
from train.config import parse_args


def _common(tiny_run, out):
    return tiny_run(out, "--steps", "2", "--eval-every", "2")


def test_plan_runs_and_records_commit_command_and_lw_switches(tiny_run, tmp_path, monkeypatch):
    plan = tmp_path / "p.plan"
    plan.write_text("# two settings\na: --task relay_code2\nb: --task relay_qa:2 --wide-answers 0.5 --source-order question_first  # wide\n")
    monkeypatch.setenv("LW_SWEEP_TEST", "1")
    assert sweep.main([str(plan), *_common(tiny_run, tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [r["name"] for r in result["runs"]] == ["a", "b"]
    assert all(r["status"] == "ok" and r["steps_run"] == 2 for r in result["runs"])
    assert result["environment"]["LW_SWEEP_TEST"] == "1" and result["commit"]
    assert json.loads((tmp_path / "out" / "b" / "summary.json").read_text())["config"]["wide_answers"] == 0.5
    saved = json.loads((tmp_path / "out" / "b" / "translator" / "translator_config.json").read_text())
    assert saved["source_order"] == "question_first"  # a server reads how to build the source text here
    table = (tmp_path / "out" / "sweep.md").read_text()
    assert "`LW_SWEEP_TEST=1`" in table and "| b | `--task relay_qa:2 --wide-answers 0.5 --source-order question_first` | ok |" in table


def test_a_bad_line_stops_the_plan_before_anything_trains(tiny_run, tmp_path):
    plan = tmp_path / "p.plan"
    plan.write_text("a: --task relay_code2\nb: --no-such-flag\n")
    with pytest.raises(SystemExit):
        sweep.main([str(plan), *_common(tiny_run, tmp_path / "out")])
    assert not (tmp_path / "out" / "a").exists()


def test_parallel_runs_are_processes_with_their_own_environment(tiny_run, tmp_path):
    plan = tmp_path / "p.plan"
    plan.write_text("ref: LW_FORCE_REFERENCE=1 --task relay_code2\n")
    done = subprocess.run([sys.executable, "-m", "train.sweep", str(plan), *_common(tiny_run, tmp_path / "out"),
                           "--parallel", "1", "--timeout", "300"], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads((tmp_path / "out" / "sweep.json").read_text())["runs"][0]
    assert row["status"] == "ok" and row["flags"].startswith("LW_FORCE_REFERENCE=1")
    assert json.loads((tmp_path / "out" / "ref" / "summary.json").read_text())["environment"]["LW_FORCE_REFERENCE"] == "1"


REPO = Path(__file__).resolve().parents[2]
COMMITTED_PLANS = sorted((REPO / "results").rglob("*.plan"))


@pytest.mark.parametrize("plan", COMMITTED_PLANS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_committed_plan_parses(plan):
    """A flag typo in a plan written for the next GPU machine fails here, not after its staging.

    Sweep lines are ``name: [ENV=value ...] --flags``; curriculum lines (scripts/gpu_chains.sh) start
    with the ladder ``relay_qa:1,relay_qa:2,...``, each rung parsed as that stage's ``--task``."""
    for name, words in sweep.read_plan(plan):
        _, flags = sweep.split_env(words)
        ladder = [None]
        if flags and not flags[0].startswith("-"):
            ladder, flags = flags[0].split(","), flags[1:]
        for task in ladder:
            stage = flags if task is None else ["--task", task, *flags]
            cfg = parse_args([*stage, "--out-dir", "unused"])
            assert cfg.task, f"{plan}: {name}"


def test_the_plan_check_catches_a_typo(tmp_path):
    plan = tmp_path / "typo.plan"
    plan.write_text("a: --mutli-words 0.5\n")
    with pytest.raises(SystemExit):
        test_every_committed_plan_parses(plan)
