"""Test accuracy over seeds, one row per cell, from finished train.sweep folders: OUT/seed_table.md and .json.

Usage: python scripts/seed_table.py OUT RUN_ROOT [RUN_ROOT ...] [--group-by-name REGEX] [--learned-points 20]
       [--stable-points 2] [--tokenizer NAME_OR_FILE] [--target-dim N]

Each RUN_ROOT is a train.sweep folder: sweep.json and one folder per run (its summary.json; metrics.jsonl and
translator/ when copied back). The project's headline figure is a cell's mean ± sd over seeds with how many
seeds learned, never its best run; the rules (grouping, learned, stable, killed runs, compression, bytes) are
train/seed_table.py's docstring and are printed above the table. ``--group-by-name REGEX`` groups by the run
name with REGEX removed (``_s\\d+$``) instead of by config. ``--tokenizer`` (an embedded model name, a folder, a
.gguf or a tokenizer.json file: the runs' target) turns on the compression column. ``--target-dim`` is the
target's hidden size for runs whose translator/translator_config.json was not copied back (embedded
SmolLM2-135M: 576); without either, the bytes columns say —. The JSON holds every run's figures, each root's
provenance (command, commit, date, device) and the command that made the table.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.provenance import commit  # noqa: E402
from train.seed_table import LEARNED_POINTS, STABLE_POINTS, SeedTableError, markdown, seed_table  # noqa: E402


def load_tokenizer(name_or_file: str):
    """A tokenizer.json file, or the tokenizer of a model lw_runtime.models can load (embedded name, folder, .gguf)."""
    if name_or_file.endswith(".json"):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_file=name_or_file)
    from transformers import AutoTokenizer

    from lw_runtime.models import resolve

    return AutoTokenizer.from_pretrained(resolve(name_or_file))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/seed_table.py", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder for seed_table.md and seed_table.json")
    p.add_argument("roots", nargs="+", type=Path, metavar="RUN_ROOT", help="train.sweep output folders")
    p.add_argument("--group-by-name", metavar="REGEX", help="group by the run name with REGEX removed (e.g. '_s\\d+$')")
    p.add_argument("--learned-points", type=float, default=LEARNED_POINTS, help="learned: test >= target alone + this")
    p.add_argument("--stable-points", type=float, default=STABLE_POINTS, help="stable: final validation >= best - this")
    p.add_argument("--tokenizer", metavar="NAME_OR_FILE", help="the target's tokenizer, for the compression column")
    p.add_argument("--target-dim", type=int, help="target hidden size where a run's translator config is absent")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    command = "python scripts/seed_table.py " + " ".join(map(shlex.quote, argv))
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    try:
        table = seed_table(args.roots, args.group_by_name, args.learned_points, args.stable_points, tokenizer, args.target_dim)
    except SeedTableError as exc:
        raise SystemExit(f"seed_table: {exc}") from None
    made = {"commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    text = markdown(table, command, f"commit {made['commit']}, {made['date']}", args.tokenizer)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seed_table.md").write_text(text)
    (args.out / "seed_table.json").write_text(json.dumps({"command": command, **made, "tokenizer": args.tokenizer, **table}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
