"""GSM8K-like arithmetic word problems with a worked solution ending in "#### N".

Decisions:
- A problem is a start count plus 1..max_steps operations on it: "add" (+x), "sub" (-x, never
  reaching zero), "groups" (+x*y) and "share" (/x, exact, always the last step and bringing its own
  question). The structured form is kept in `meta` ("start", "ops") so tests recompute the answer.
- Numbers stay small (start 5-60, addends 2-40, groups up to 6 x 12) so a 270M-parameter target
  can do the arithmetic; the hard part is carrying the numbers across the bridge.
- Names (first names only), items and templates use the split partitions of pools.py/templates.py;
  the problem text goes in `question` and `passage` is "" as for GSM8K.
- The solution uses GSM8K's `<<a+b=c>>` calculator annotations so both read the same way.
"""

from __future__ import annotations

import random

from .example import Example, check_split
from .pools import split_pool
from .templates import ARITHMETIC

SYMBOLS = {"add": "+", "sub": "-", "share": "/"}


def apply_ops(start: int, ops: tuple[tuple[str, tuple[int, ...]], ...]) -> int:
    """The count after applying `ops` (as stored in meta["ops"]) to `start`."""
    count = start
    for op, args in ops:
        if op == "add":
            count += args[0]
        elif op == "sub":
            count -= args[0]
        elif op == "groups":
            count += args[0] * args[1]
        elif op == "share":
            if count % args[0]:
                raise ValueError(f"{count} does not share equally into {args[0]}")
            count //= args[0]
        else:
            raise ValueError(f"unknown operation {op!r}")
    return count


def _draw_op(rng: random.Random, count: int, last: bool) -> tuple[str, tuple[int, ...]]:
    divisors = [k for k in range(2, 10) if count % k == 0 and count // k >= 2]
    choices = ["add", "groups"] + (["sub"] if count >= 4 else []) + (["share"] if last and divisors else [])
    op = rng.choice(choices)
    if op == "add":
        return op, (rng.randint(2, 40),)
    if op == "sub":
        return op, (rng.randint(2, count - 2) if count > 4 else 2,)
    if op == "groups":
        return op, (rng.randint(2, 6), rng.randint(2, 12))
    return op, (rng.choice(divisors),)


def _solution_line(name: str, item: str, count: int, op: str, args: tuple[int, ...]) -> tuple[str, int]:
    if op == "groups":
        added = args[0] * args[1]
        new = count + added
        return (f"The {args[0]} groups hold {args[0]} * {args[1]} = <<{args[0]}*{args[1]}={added}>>{added} {item}, "
                f"so {name} has {count} + {added} = <<{count}+{added}={new}>>{new} {item}."), new
    new = apply_ops(count, ((op, args),))
    sign = SYMBOLS[op]
    if op == "share":
        return f"Each share gets {count} / {args[0]} = <<{count}/{args[0]}={new}>>{new} {item}.", new
    return f"{name} then has {count} {sign} {args[0]} = <<{count}{sign}{args[0]}={new}>>{new} {item}.", new


def arithmetic(split: str, n: int, seed: int = 0, max_steps: int = 3) -> list[Example]:
    """`n` word problems of 1..`max_steps` operations from `split`, deterministic in the arguments."""
    check_split(split)
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    names, items = split_pool("first_names", split), split_pool("items", split)
    rng = random.Random(f"arithmetic|{split}|{max_steps}|{seed}")
    examples = []
    for index in range(n):
        name, item = rng.choice(names), rng.choice(items)
        start = rng.randint(5, 60)
        n_ops = rng.randint(1, max_steps)
        templates = [rng.choice(ARITHMETIC["start"][split])]
        sentences = [templates[0].format(name=name, x=start, item=item)]
        solution = [f"{name} starts with {start} {item}."]
        ops, count = [], start
        for step in range(n_ops):
            op, args = _draw_op(rng, count, last=step == n_ops - 1)
            names_of_args = dict(zip(("x", "y"), args))
            templates.append(rng.choice(ARITHMETIC[op][split]))
            sentences.append(templates[-1].format(name=name, item=item, **names_of_args))
            line, count = _solution_line(name, item, count, op, args)
            solution.append(line)
            ops.append((op, args))
        if ops[-1][0] != "share":
            templates.append(rng.choice(ARITHMETIC["question"][split]))
            sentences.append(templates[-1].format(name=name, item=item))
        answer = str(count)
        examples.append(Example(
            id=f"arithmetic/{split}/m{max_steps}/s{seed}/{index:06d}", task="arithmetic", passage="",
            question=" ".join(sentences), answer=answer, split=split,
            solution="\n".join(solution + [f"#### {answer}"]),
            meta={"start": start, "ops": tuple(ops), "name": name, "item": item,
                  "templates": tuple(templates)}))
    return examples
