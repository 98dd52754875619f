"""Which code produced a result: the commit every results file records, and the LW_* switches.

``LW_COMMIT`` wins (copies of the tree without an up-to-date .git, e.g. on a GPU machine, where the
caller exports the commit it sent); otherwise ``git rev-parse --short HEAD`` of this checkout, with
``+dirty`` when tracked files differ from it; ``unknown`` without either. ``lw_environment`` is
every ``LW_*`` environment variable (``LW_FORCE_REFERENCE=1`` changes which kernels ran), recorded
beside the commit so a results file says how it was run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    if os.environ.get("LW_COMMIT"):
        return os.environ["LW_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def lw_environment() -> dict[str, str]:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("LW_")}


def header_lines(meta: dict) -> list[str]:
    """The Markdown lines that open a results table: device, date, commit, command and the LW_*
    switches (the last only when any was set)."""
    env = meta.get("environment") or {}
    return [f"device: {meta['device']} · date: {meta['date']} · commit: {meta['commit']}", f"command: `{meta['command']}`",
            *([f"environment: `{' '.join(f'{k}={v}' for k, v in env.items())}`"] if env else [])]
