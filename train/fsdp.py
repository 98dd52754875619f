"""Entry point: ``python -m train.fsdp [flags]`` (``--help`` lists every flag).

In this version it trains in one process on the CPU or one GPU; the FSDP2 / torchrun path comes
with its own issue and keeps these flags. It prints target-alone vs bridged accuracy on the
held-out test split and writes ``summary.json`` and ``metrics.jsonl`` to ``--out-dir``.
"""

from __future__ import annotations

import sys

from .config import parse_args
from .loop import train


def main(argv=None) -> int:
    cfg = parse_args(argv)
    summary = train(cfg)
    n = summary["test_examples"]
    print(
        f"\nheld-out test ({n} examples, {cfg.task}, {cfg.protocol}, {summary['num_soft_tokens']} soft tokens, "
        f"{summary['device']}):\n"
        f"  target alone : {100 * summary['test_target_alone_acc']:.1f}%\n"
        f"  bridged      : {100 * summary['test_bridged_acc']:.1f}%\n"
        f"  best val     : {100 * summary['best_val_acc']:.1f}% at step {summary['best_step']} "
        f"(train {summary['train_s']:.0f}s, setup {summary['setup_s']:.0f}s)\n"
        f"  outputs in {cfg.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
