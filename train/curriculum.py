"""A curriculum over tasks: ``python -m train.curriculum TASK[,TASK...] --out-dir DIR [train flags]``.

Each stage is one ``train.fsdp`` run on its task (e.g. ``relay_qa:1,relay_qa:2,relay_qa:4``: the
fact ladder), in ``DIR/stage<i>_<task>``; every stage after the first starts from the previous
stage's translator (``--init-from``; with early stopping that is the best one by validation). The
common flags apply to every stage, and ``--steps``, ``--lr``, ``--batch-size`` and ``--train-examples`` may
be comma lists, one value per stage (a later stage fine-tunes: e.g. ``--lr 1e-3,5e-4,5e-4``; a 4-fact stage
with ``--all-questions`` asks four questions per passage, so it may take a quarter of the passages per step).
``DIR/curriculum.json`` collects each stage's held-out results, with the device, date, commit and
command (rewritten as each stage ends, so a curriculum cut short keeps the stages it finished); the last stage's test split is the curriculum's result. A stage whose ``summary.json``
exists with the same flags is reused (unless an earlier stage was retrained in this call: its
translator then changed), so a curriculum can be finished over several calls.

Decisions: stages run in one process, one after the other (the models load once); each stage's
optimizer and learning-rate schedule start fresh, as after ``--init-from``; a stage evaluates on
its own task's validation and test splits, so the table shows how each rung does when it is learnt.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .config import DriverParser, parse_args
from .loop import train
from .provenance import commit, lw_environment

PER_STAGE = ("steps", "lr", "batch_size", "train_examples")  # flags that may give one value per stage, comma-separated
RESULT_KEYS = ("test_bridged_acc", "test_target_alone_acc", "best_val_acc", "best_step", "final_val_acc",
               "steps_run", "train_s")


def add_curriculum_flags(group) -> None:
    """The curriculum's own flags; they replace train.fsdp's flags of the same names."""
    group.add_argument("--out-dir", default="runs/curriculum", metavar="DIR",
                       help="curriculum folder: stage i trains in DIR/stage<i>_<task>")
    group.add_argument("--steps", metavar="N[,N...]", help="optimizer steps: one value, or one per stage")
    group.add_argument("--lr", metavar="X[,X...]", help="learning rate: one value, or one per stage")
    group.add_argument("--batch-size", metavar="N[,N...]", help="global batch: one value, or one per stage")
    group.add_argument("--train-examples", metavar="N[,N...]", help="training pool size: one value, or one per stage")
    group.add_argument("--task", help="not taken: the stages' tasks are the TASKS argument")
    group.add_argument("--init-from", metavar="DIR", help="not taken: each stage starts from the previous one's")


PARSER = DriverParser("python -m train.curriculum", __doc__, "TASKS", "the stages' tasks, comma-separated",
                      add_curriculum_flags)


def stage_flags(tasks: list[str], common: list[str]) -> tuple[Path, list[tuple[str, list[str]]]]:
    """The curriculum's folder, and (stage folder name, the flags of that stage's run) for every
    stage, validated up front."""
    listed = {"--" + name.replace("_", "-") for name in PER_STAGE}
    glued = [a for a in common if a.split("=", 1)[0] in listed and "=" in a]
    if glued:  # one spelling for per-stage lists, as before argparse (which would read '--steps=1,2' too)
        flag = glued[0].split("=", 1)[0]
        raise SystemExit(f"train.curriculum reads {', '.join(glued)} as a separate flag and value: write '{flag} 1,2', not '{flag}=1,2'")
    own, common = PARSER.split(common)
    if own.task is not None or own.init_from is not None:
        raise SystemExit("train.curriculum sets --task and --init-from itself; give the tasks as its first argument")
    out_dir = Path(own.out_dir)
    per_stage = {name: getattr(own, name).split(",") for name in PER_STAGE if getattr(own, name) is not None}
    for name, values in per_stage.items():
        if len(values) not in (1, len(tasks)):
            raise SystemExit(f"--{name.replace('_', '-')} gives {len(values)} values for {len(tasks)} stages (give one, or one per stage)")
    stages, previous = [], None
    for i, task in enumerate(tasks):
        name = f"stage{i + 1}_{task.replace(':', '_f')}"
        flags = common + ["--task", task, "--out-dir", str(out_dir / name)]
        for flag, values in per_stage.items():
            flags += [f"--{flag.replace('_', '-')}", values[i] if len(values) > 1 else values[0]]
        if previous is not None:
            flags += ["--init-from", str(out_dir / previous / "translator")]
        parse_args(flags, prog=f"train.curriculum (stage {name})")  # every stage's flags parse before the first trains
        stages.append((name, flags))
        previous = name
    return out_dir, stages


def main(argv=None, prog: str = "python -m train.curriculum") -> int:
    """``prog``: how the curriculum was asked for, for its record (``train.fsdp --task A,B`` calls this)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__)
        return 2
    PARSER.parse(argv)  # every flag known and well-typed (or --help), before the stages are laid out
    tasks = [t for t in argv[0].split(",") if t]
    if not tasks:
        raise SystemExit(f"{prog}: no task in {argv[0]!r}; give the stages' tasks comma-separated, e.g. relay_qa:1,relay_qa:4")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # stages re-create the process group; never tested under torchrun
        raise SystemExit(f"{prog}: stages run in one process; under torchrun train each stage with --init-from")
    out_dir, stages = stage_flags(tasks, argv[1:])
    rows, retrained = [], False
    for name, flags in stages:
        cfg = parse_args(flags)
        done = Path(cfg.out_dir) / "summary.json"
        summary = json.loads(done.read_text()) if done.exists() else None
        if retrained or summary is None or summary.get("config") != asdict(cfg):
            retrained = True
            started = time.time()
            summary = train(cfg)
            print(f"[curriculum] {name}: bridged {summary['test_bridged_acc']:.3f} on {cfg.task} "
                  f"({time.time() - started:.0f}s)", flush=True)
        else:
            print(f"[curriculum] {name}: reusing {done}", flush=True)
        rows.append({"stage": name, "task": cfg.task, "init_from": cfg.init_from,
                     **{k: summary.get(k) for k in RESULT_KEYS}, "device": summary.get("device")})
        # rewritten after every stage, so a curriculum cut short still records what it finished and how
        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit(),
                "command": f"{prog} " + " ".join(map(shlex.quote, argv)), "environment": lw_environment()}
        (out_dir / "curriculum.json").write_text(json.dumps({**meta, "stages": rows}, indent=2))
    for r in rows:
        print(f"  {r['stage']:<22} test bridged {100 * r['test_bridged_acc']:.1f}%  target alone "
              f"{100 * r['test_target_alone_acc']:.1f}%  best val {100 * r['best_val_acc']:.1f}% at {r['best_step']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
