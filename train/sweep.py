"""Several training runs in one process: ``python -m train.sweep PLAN --out-dir DIR [common flags]``.

PLAN is a text file, one run per line: ``name: --flag value --flag ...`` (``#`` starts a comment).
Each run is ``train.fsdp``'s flags = the common flags, then the line's flags. The frozen models and
the source-state caches are loaded once and shared, which is what makes a sweep cheaper than
separate processes. Every run's ``summary.json`` lands in ``DIR/<name>/``; ``DIR/sweep.json`` and
``DIR/sweep.md`` collect them with the device, date, commit and exact command.

``--parallel N`` runs the lines as N concurrent ``python -m train.fsdp`` processes instead (the
embedded pair leaves an H100 mostly idle, so a GPU runs several at once); a line may then start
with ``NAME=value`` environment assignments (e.g. ``LW_FORCE_REFERENCE=1``). ``--timeout S`` kills
a run after S seconds: its row keeps the validation curve from its ``metrics.jsonl`` and says
``"status": "timeout"`` (a killed run has no test figure).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .config import DriverParser, parse_args
from .loop import train
from .provenance import commit, header_lines, lw_environment


def split_env(flags: list[str]) -> tuple[dict, list[str]]:
    """Leading ``NAME=value`` words of a plan line -> (environment, remaining flags)."""
    env = {}
    while flags and "=" in flags[0] and not flags[0].startswith("-"):
        key, value = flags[0].split("=", 1)
        env[key] = value
        flags = flags[1:]
    return env, flags


def validation_curve(metrics_path: Path) -> list[tuple[int, float]]:
    if not metrics_path.exists():
        return []
    curve = []
    for line in metrics_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a run killed mid-write leaves a partial last line
            continue
        if "val_acc" in record:
            curve.append((record["step"], record["val_acc"]))
    return curve


def run_parallel(runs, common: list[str], out_dir: Path, parallel: int, timeout: float | None) -> list[dict]:
    """Each run as its own ``python -m train.fsdp`` process, ``parallel`` at a time."""
    import os

    pending = list(runs)
    active: list[tuple[str, list[str], subprocess.Popen, float, object]] = []
    rows = []
    while pending or active:
        while pending and len(active) < parallel:
            name, flags = pending.pop(0)
            env, flags = split_env(flags)
            run_dir = out_dir / name
            run_dir.mkdir(parents=True, exist_ok=True)
            log = (run_dir / "stdout.log").open("w")
            cmd = [sys.executable, "-m", "train.fsdp", *common, *flags, "--out-dir", str(run_dir), "--no-progress"]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
            active.append((name, flags if not env else [f"{k}={v}" for k, v in env.items()] + flags, proc, time.time(), log))
        time.sleep(1.0)
        for item in list(active):
            name, flags, proc, started, log = item
            status = proc.poll()
            if status is None and timeout is not None and time.time() - started > timeout:
                proc.kill()
                status = proc.wait()
                status = "timeout"
            if status is None:
                continue
            active.remove(item)
            log.close()
            run_dir = out_dir / name
            row = {"name": name, "flags": " ".join(flags), "wall_s": round(time.time() - started, 1),
                   "status": "ok" if status == 0 else ("timeout" if status == "timeout" else f"exit {status}"),
                   "val_curve": validation_curve(run_dir / "metrics.jsonl")}
            if status == 0 and (run_dir / "summary.json").exists():
                summary = json.loads((run_dir / "summary.json").read_text())
                summary.pop("config", None)
                row.update(summary)
            rows.append(row)
            print(json.dumps({k: row.get(k) for k in ("name",) + COLUMNS}), flush=True)
    order = [name for name, _ in runs]
    return sorted(rows, key=lambda r: order.index(r["name"]))


def read_plan(path: str) -> list[tuple[str, list[str]]]:
    runs = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if ":" not in line:
            raise ValueError(f"{path}:{number}: expected 'name: --flags ...', got {raw!r}")
        name, flags = line.split(":", 1)
        runs.append((name.strip(), shlex.split(flags)))
    if not runs:
        raise ValueError(f"{path}: no runs")
    return runs


COLUMNS = ("status", "best_val_acc", "best_step", "final_val_acc", "test_bridged_acc", "test_target_alone_acc", "steps_run", "train_s")


def add_sweep_flags(group) -> None:
    group.add_argument("--parallel", type=int, default=0, metavar="N",
                       help="run the lines as N concurrent train.fsdp processes (0 = one after the other here)")
    group.add_argument("--timeout", type=float, default=None, metavar="S",
                       help="with --parallel, kill a run after S seconds (its row says timeout)")


PARSER = DriverParser("python -m train.sweep", __doc__, "PLAN", "plan file: one run per line, 'name: --flag value ...'",
                      add_sweep_flags)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__)
        return 2
    args, common = PARSER.parse(argv)
    plan, parallel, timeout = args.plan, args.parallel, args.timeout
    out_dir = Path(parse_args(common).out_dir)
    runs = read_plan(plan)
    for name, flags in runs:  # every line must parse before anything starts
        env, run_flags = split_env(flags)
        if env and not parallel:
            raise ValueError(f"{plan}: run {name!r} sets {', '.join(env)}; environment assignments need --parallel "
                             "(each run is then its own process)")
        parse_args(common + run_flags + ["--out-dir", str(out_dir / name)], prog=f"train.sweep {plan} (run {name})")
    rows = []
    if parallel:
        rows = run_parallel(runs, common, out_dir, parallel, timeout)
    else:
        for name, flags in runs:
            cfg = parse_args(common + flags + ["--out-dir", str(out_dir / name)])
            started = time.time()
            summary = train(cfg)
            summary.pop("config", None)
            rows.append({"name": name, "flags": " ".join(flags), "status": "ok", **summary, "wall_s": round(time.time() - started, 1)})
            print(json.dumps({k: rows[-1].get(k) for k in ("name",) + COLUMNS}), flush=True)
    device = next((r["device"] for r in rows if "device" in r), "see the runs' stdout.log")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit(), "command": "python -m train.sweep " + " ".join(map(shlex.quote, argv)), "device": device,
            "environment": lw_environment()}
    (out_dir / "sweep.json").write_text(json.dumps({**meta, "runs": rows}, indent=2))
    lines = [*header_lines(meta), ""]
    lines.append("| run | flags | " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * (len(COLUMNS) + 2))
    for r in rows:
        lines.append(f"| {r['name']} | `{r['flags']}` | " + " | ".join(str(r.get(c)) for c in COLUMNS) + " |")
    curves = [r for r in rows if r.get("val_curve")]
    if curves:
        lines += ["", "validation accuracy by step:", ""]
        lines += [f"- {r['name']}: " + ", ".join(f"{step}: {acc:.1%}" for step, acc in r["val_curve"]) for r in curves]
    (out_dir / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
