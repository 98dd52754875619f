"""Entry point: ``python -m train.fsdp [flags]`` or ``torchrun --nproc_per_node=N -m train.fsdp [flags]``.

One process (CPU or one GPU) without torchrun; under torchrun the translator is sharded with FSDP2
(``train.distributed``), checkpoints go through torch Distributed Checkpoint (``train.checkpoint``)
and the flags mean the same (``--batch-size`` is the global batch). Rank 0 prints target-alone vs
bridged accuracy on the held-out test split and writes ``summary.json`` and ``metrics.jsonl`` to
``--out-dir``; ``docs/training.md`` covers launching, checkpoints and memory.

``--task A,B,...`` (several tasks) trains them as stages, each from the previous stage's translator:
the same as ``python -m train.curriculum A,B,... [flags]``, whose per-stage ``--steps``, ``--lr``,
``--batch-size`` and ``--train-examples`` lists it takes, so the staged recipe is one ``train.fsdp``
command; ``--out-dir`` (default ``runs/default``) holds ``stage<i>_<task>`` folders and ``curriculum.json``.
"""

from __future__ import annotations

import os
import sys

from .config import TrainConfig, build_parser, parse_args
from .loop import train


def _resolve(flag: str, options: list[str]) -> str | None:
    """The option ``flag`` names as argparse reads it: itself, or the one option it abbreviates."""
    if flag in options:
        return flag
    matches = [o for o in options if o.startswith(flag)]
    return matches[0] if len(matches) == 1 else None


def staged_tasks(argv: list[str]) -> tuple[str, list[str]] | None:
    """(the comma-separated tasks, the other flags) when ``--task`` (or an abbreviation argparse would
    take for it) lists several tasks, else None; the other flags get ``--out-dir runs/default`` when
    no spelling of ``--out-dir`` is among them."""
    options = [o for o in build_parser()._option_string_actions if o.startswith("--")]
    for i, arg in enumerate(argv):
        name, glued, value = arg.partition("=")
        if not name.startswith("--") or _resolve(name, options) != "--task":
            continue
        if glued:
            value, rest = value, argv[:i] + argv[i + 1 :]
        elif i + 1 < len(argv):
            value, rest = argv[i + 1], argv[:i] + argv[i + 2 :]
        else:
            return None  # argparse reports the missing value
        if "," not in value:
            return None
        if not any(a.startswith("--") and _resolve(a.partition("=")[0], options) == "--out-dir" for a in rest):
            rest = rest + ["--out-dir", TrainConfig.out_dir]
        return value, rest
    return None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    staged = staged_tasks(argv)
    if staged is not None:
        from . import curriculum

        tasks, rest = staged
        return curriculum.main([tasks, *rest], prog="python -m train.fsdp --task")
    cfg = parse_args(argv)
    summary = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    n = summary["test_examples"]
    print(
        f"\nheld-out test ({n} examples, {cfg.eval_task or cfg.task}, {cfg.protocol}, {summary['num_soft_tokens']} soft tokens, "
        f"{summary['device']}):\n"
        f"  target alone : {100 * summary['test_target_alone_acc']:.1f}% (plain prompt format)\n"
        f"  bridged      : {100 * summary['test_bridged_acc']:.1f}%\n"
        + (f"  best val     : {100 * summary['best_val_acc']:.1f}% at step {summary['best_step']} "
           if summary["best_step"] else "  best val     : none (no validation ran: 0 steps, e.g. a saved translator evaluated) ")
        + f"(train {summary['train_s']:.0f}s, setup {summary['setup_s']:.0f}s)\n"
        f"  outputs in {cfg.out_dir}"
    )
    if "evaluation" in summary:
        from .metrics import fmt_ci

        print("\nall methods on the same test examples (accuracy %, 95% bootstrap interval):")
        for name, m in summary["evaluation"]["methods"].items():
            print(f"  {name:<14} {fmt_ci(m):<22} empty {m['empty']:>3}  loops {m['repetition_loops']:>3}")
        d = summary["evaluation"]["diagnostics"]
        print(f"  compression {d['compression_ratio']:.1f}x (passage {d['passage_tokens_mean']:.1f} tokens / {d['soft_tokens']} soft tokens)")
    elif "evaluation_skipped" in summary:
        print(f"\nbaselines skipped: {summary['evaluation_skipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
