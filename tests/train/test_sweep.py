"""train.sweep: a plan of runs (in one process, and as parallel processes), its table and provenance."""

import json
import subprocess
import dataclasses
import shlex
import sys
from pathlib import Path

import pytest

from train.data.tasks import load_task
from train import curriculum, sweep
from train.config import check_config, parse_args


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


def _plan_stages(plan: Path, tmp: Path, common: list[str]) -> list[list[str]]:
    """Every run's train.fsdp flags in a plan, with the plan's common flags: sweep lines ``name: [ENV=value ...]
    --flags`` as train.sweep reads them (common flags first); chains lines ``name: TASK,TASK,... --flags``
    (scripts/gpu_chains.sh) as train.curriculum expands them, stage by stage (common flags after the line's,
    as gpu_chains.sh passes them: they may give one value per stage). A plan is one kind or the other."""
    runs = [(name, sweep.split_env(words)[1]) for name, words in sweep.read_plan(plan)]
    chains = {bool(flags) and not flags[0].startswith("-") for _, flags in runs}
    assert len(chains) == 1, f"{plan}: mixes sweep lines (--flags) and chains lines (TASKS --flags)"
    if chains.pop():
        return [stage for _, flags in runs
                for _, stage in curriculum.stage_flags(flags[0].split(","), [*flags[1:], *common, "--out-dir", str(tmp)])[1]]
    return [[*common, *flags, "--out-dir", str(tmp)] for _, flags in runs]


def _common_flags(plan: Path) -> list[str] | None:
    """The flags a plan's header gives for every line, on a ``# common: --flag ...`` line (plans from
    session 9 on; earlier ones state them in prose), with ``$LW_SOURCE`` / ``$LW_TARGET`` left out."""
    for raw in plan.read_text().splitlines():
        if raw.startswith("# common:"):
            words = shlex.split(raw.removeprefix("# common:"))
            return [w for i, w in enumerate(words) if not w.startswith("$") and not (
                w in ("--source", "--target") and i + 1 < len(words) and words[i + 1].startswith("$"))]
    return None


def _check_plan(plan: Path, tmp: Path) -> None:
    common = _common_flags(plan)
    for flags in _plan_stages(plan, tmp, common or []):
        cfg = parse_args(flags)
        if common is not None:  # without the common flags a line alone may lack e.g. --wide-answers
            # --init-from names a folder on the GPU machine (or a previous stage's), not here
            check_config(dataclasses.replace(cfg, init_from=None))
        load_task(cfg.task, "validation", 2)  # an unknown task name or fact count fails here


@pytest.mark.parametrize("plan", COMMITTED_PLANS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_committed_plan_parses(plan, tmp_path):
    """A flag typo, an unknown task or a bad flag value in a plan written for the next GPU machine fails
    here, not after its staging. (argparse takes unambiguous abbreviations, as train.fsdp does there.)"""
    _check_plan(plan, tmp_path)


def test_there_are_committed_plans():
    """The plans kept under results/ (those behind the current figures and the next runs; older ones are in
    git history) cover both kinds, so the parse test above runs on real sweep and chains lines."""
    kinds = {plan.name: not sweep.split_env(sweep.read_plan(plan)[0][1])[1][0].startswith("-") for plan in COMMITTED_PLANS}
    assert any(kinds.values()) and not all(kinds.values()), kinds  # chains plans and sweep plans
    assert _common_flags(REPO / "results/quality/multi5.plan")  # so check_config runs on the next plan's lines


@pytest.mark.parametrize("line, error", [
    ("a: --mutli-words 0.5", SystemExit),                       # a misspelt flag
    ("a: --task relay_qaa:4", ValueError),                      # an unknown task
    ("# common: --steps 5\na: --source-order questoin_first", ValueError),  # a bad value
    ("# common: --wide-answers 0\na: --multi-words 0.5", ValueError),  # an option that would be ignored
    ("a: relay_qa:1,relay_qa:4 --steps 100,200,300", SystemExit),  # chains: 3 step counts for 2 stages
    ("a: --seed 1\nb: relay_qa:1,relay_qa:4", AssertionError),  # sweep and chains lines mixed
])
def test_the_plan_check_catches(tmp_path, line, error):
    plan = tmp_path / "bad.plan"
    plan.write_text(line + "\n")
    with pytest.raises(error):
        _check_plan(plan, tmp_path)
