"""`load_task`: one entry point from a task name to a list of Examples.

Names: "relay_qa" (all attributes), "relay_qa:4" (n_facts=4), "relay_code" / "relay_code:2" (code
facts only), "relay_code2" / "relay_code3" (code facts with 2- or 3-digit codes), "arithmetic", and "gsm8k" / "squad" / "hotpotqa" with `path=` (a file, folder or hub
name). For the real datasets `n` is a limit taking the first n records in file order (None for all)
and `seed` is unused, so evaluation sets stay the same across runs; shuffling is the trainer's job.
The relay-QA training augmentations `wide`, `wide_templates`, `pseudo_words` and `multi_words` pass through to `relay_qa`; any
other task rejects them with a ValueError rather than a TypeError from deep inside its generator.
"""

from __future__ import annotations

from .arithmetic import arithmetic
from .example import Example
from .loaders import load_gsm8k, load_hotpotqa, load_squad
from .synthetic import relay_qa

LOADERS = {"gsm8k": load_gsm8k, "squad": load_squad, "hotpotqa": load_hotpotqa}
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
        if suffix:
            if not suffix.isdigit():
                raise ValueError(f"task {name!r}: the part after ':' must be the number of facts")
            kw["n_facts"] = int(suffix)
        if base.startswith("relay_code"):
            kw["kinds"] = ("code",)
            kw.setdefault("code_digits", int(base[-1]) if base[-1].isdigit() else 4)
        return relay_qa(split, n, seed=seed, **kw)
    if base == "arithmetic":
        return arithmetic(split, n, seed=seed, **kw)
    if base in LOADERS:
        if "path" not in kw:
            raise ValueError(f"task {name!r} reads a dataset: pass path= (a local file, folder or hub name)")
        return LOADERS[base](kw.pop("path"), split=split, limit=n, **kw)
    raise ValueError(f"unknown task {name!r}; known: relay_qa[:n], relay_code[:n], relay_code2, relay_code3, arithmetic, "
                     f"{', '.join(LOADERS)}")
