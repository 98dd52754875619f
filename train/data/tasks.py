"""`load_task`: one entry point from a task name to a list of Examples.

Names: "relay_qa" (all attributes), "relay_qa:4" (n_facts=4), "relay_qa:1-4" (a mix: 1, 2, 3 and 4 facts
in turn; train on it and evaluate on "relay_qa:4" with --eval-task), "relay_code" / "relay_code:2" (code
facts only), "relay_code2" / "relay_code3" (code facts with 2- or 3-digit codes), "arithmetic", and "gsm8k" / "squad" / "hotpotqa" with `path=` (a file, folder or hub
name). For the real datasets `n` is a limit taking the first n records in file order (None for all)
and `seed` is unused, so evaluation sets stay the same across runs; shuffling is the trainer's job.
With `data=` (and `hold_out=`) instead, a dataset split is read the way the trainer reads it,
validation and test held out or taken from an evaluation source (loaders.py, "Splits for
training"); `data_keywords` turns train.fsdp's `--data` / `--eval-data` into those keywords.
Protocols: SQuAD and HotpotQA have a passage and suit `context` (the target reads the question);
`soft_only` works too and is harder (the soft tokens must carry the answer span). GSM8K has no
passage, only the problem, so it is `soft_only` only, answered by the number after "####";
train.config.check_config rejects it with `--protocol context` before any model loads.
The relay-QA training augmentations `wide`, `wide_templates`, `pseudo_words` and `multi_words` pass through to `relay_qa`; any
other task rejects them with a ValueError rather than a TypeError from deep inside its generator.
"""

from __future__ import annotations

from .arithmetic import arithmetic
from .example import Example, check_split
from .loaders import LOADERS, load_dataset_split, same_file
from .synthetic import relay_qa

DATASET_TASKS = tuple(LOADERS)
RELAY_AUGMENTATIONS = ("wide", "wide_templates", "pseudo_words", "multi_words")


def load_task(name: str, split: str, n: int | None, seed: int = 0, **kw) -> list[Example]:
    base, _, suffix = name.partition(":")
    relay = ("relay_qa", "relay_code", "relay_code2", "relay_code3")
    if suffix and base not in relay:
        raise ValueError(f"task {name!r}: only {', '.join(relay)} take a ':n_facts' suffix")
    augmentations = [key for key in RELAY_AUGMENTATIONS if key in kw]
    if augmentations and base not in relay:
        raise ValueError(f"task {name!r}: {', '.join(augmentations)} are relay-QA training augmentations")
    if base in relay:
        if base.startswith("relay_code"):
            kw["kinds"] = ("code",)
            kw.setdefault("code_digits", int(base[-1]) if base[-1].isdigit() else 4)
        lo, hi = fact_range(name)
        if lo == hi:
            return relay_qa(split, n, seed=seed, **({"n_facts": lo} if suffix else {}), **kw)
        # a mix of fact counts: example j has lo + j % k facts, so every prefix is balanced and a prefix of
        # the mix is the mix of the prefix (each count's generator is seeded on its own)
        k = hi - lo + 1
        parts = [relay_qa(split, n // k + (i < n % k), seed=seed, n_facts=lo + i, **kw) for i in range(k)]
        return [parts[j % k][j // k] for j in range(n)]
    if base == "arithmetic":
        return arithmetic(split, n, seed=seed, **kw)
    if base in LOADERS:
        if "data" in kw:
            return load_dataset_split(base, kw.pop("data"), split, n, **kw)
        if "path" not in kw:
            raise ValueError(f"task {name!r} reads a dataset: pass path= or data= (a local file, folder or hub name)")
        return LOADERS[base](kw.pop("path"), split=split, limit=n, **kw)
    raise ValueError(f"unknown task {name!r}; known: relay_qa[:n], relay_code[:n], relay_code2, relay_code3, arithmetic, "
                     f"{', '.join(LOADERS)}")


def fact_range(name: str) -> tuple[int, int]:
    """The facts per passage of a relay task name: "relay_qa" (1, 1), "relay_qa:4" (4, 4), "relay_qa:1-4"
    (1, 4: a mix, each count equally often)."""
    base, _, suffix = name.partition(":")
    if not suffix:
        return 1, 1
    lo, dash, hi = suffix.partition("-")
    if not lo.isdigit() or (dash and not hi.isdigit()):
        raise ValueError(f"task {name!r}: the part after ':' must be the number of facts, N or a range N-M")
    lo_n, hi_n = int(lo), int(hi) if dash else int(lo)
    if not dash and lo_n < 1:
        raise ValueError(f"task {name!r}: a passage needs at least 1 fact")
    if dash and not 1 <= lo_n < hi_n:
        raise ValueError(f"task {name!r}: a range of facts N-M needs 1 <= N < M")
    return lo_n, hi_n


def data_keywords(task: str, eval_task: str, split: str, data: str, eval_data: str) -> dict:
    """load_task keywords for `split` of a run training `task` on `data` and evaluating `eval_task`
    (empty = `task`) on `eval_data`: {} for a generated task. Evaluation reads `eval_data`, else
    `data` when the evaluation task is the training task; reading the very file training reads
    holds part of it out (`hold_out`), so train, validation and test stay disjoint."""
    check_split(split)
    eval_task = eval_task or task
    base = (task if split == "train" else eval_task).partition(":")[0]
    if base not in LOADERS:
        return {}
    same_task = eval_task.partition(":")[0] == task.partition(":")[0]
    eval_source = eval_data or (data if same_task else "")
    source = data if split == "train" else eval_source
    if not source:
        flag = "--data" if split == "train" else "--eval-data"
        raise ValueError(f"task {base!r} ({split}) reads a dataset and none was given: pass {flag} PATH "
                         f"(a .json/.jsonl/.parquet file, a folder of them, or a hub name)")
    return {"data": source, "hold_out": same_file(data, eval_source)}
