"""Several training runs in one process: ``python -m train.sweep PLAN --out-dir DIR [common flags]``.

PLAN is a text file, one run per line: ``name: --flag value --flag ...`` (``#`` starts a comment).
Each run is ``train.fsdp``'s flags = the common flags, then the line's flags. The frozen models and
the source-state caches are loaded once and shared, which is what makes a sweep cheaper than
separate processes. Every run's ``summary.json`` lands in ``DIR/<name>/``; ``DIR/sweep.json`` and
``DIR/sweep.md`` collect them with the device, date, commit and exact command.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .config import parse_args
from .loop import train


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


def commit() -> str:
    """The code's commit (``LW_COMMIT`` wins: copies of the tree without .git, e.g. a GPU machine)."""
    import os

    if os.environ.get("LW_COMMIT"):
        return os.environ["LW_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


COLUMNS = ("best_val_acc", "best_step", "final_val_acc", "test_bridged_acc", "test_target_alone_acc", "steps_run", "train_s")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    plan, common = argv[0], argv[1:]
    out_dir = Path(parse_args(common).out_dir)
    rows = []
    for name, flags in read_plan(plan):
        cfg = parse_args(common + flags + ["--out-dir", str(out_dir / name)])
        started = time.time()
        summary = train(cfg)
        summary.pop("config", None)
        rows.append({"name": name, "flags": " ".join(flags), **summary, "wall_s": round(time.time() - started, 1)})
        print(json.dumps({k: rows[-1].get(k) for k in ("name",) + COLUMNS}), flush=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit(), "command": "python -m train.sweep " + " ".join(map(shlex.quote, argv)), "device": rows[-1]["device"]}
    (out_dir / "sweep.json").write_text(json.dumps({**meta, "runs": rows}, indent=2))
    lines = [f"device: {meta['device']} · date: {meta['date']} · commit: {meta['commit']}", f"command: `{meta['command']}`", ""]
    lines.append("| run | flags | " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * (len(COLUMNS) + 2))
    for r in rows:
        lines.append(f"| {r['name']} | `{r['flags']}` | " + " | ".join(str(r.get(c)) for c in COLUMNS) + " |")
    (out_dir / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
