"""Evaluation metrics: EM / F1 with bootstrap 95% intervals, degenerate-output counts, entropy.

Decisions:
- EM and F1 use SQuAD normalisation on the strictly extracted answer (``lw_runtime.protocols.extract_answer``).
- Intervals: percentile bootstrap over examples (2,000 resamples, fixed seed), so two methods
  evaluated on the same examples can be compared on the same footing. ``groups=`` gives a cluster
  bootstrap instead (resample whole groups, e.g. the gold answer value): a relay-QA test split asks
  each held-out value several times (9-13 distinct pets, colours, jobs in 200 examples), so whether a
  bridge carries *new values* is measured on far fewer independent draws than there are examples.
- Degenerate outputs: empty answers, and repetition loops (an n-gram of 1-3 tokens repeated to
  fill most of the output, like the original study's "3=3=3=...").
"""

from __future__ import annotations

import math
import random
from collections import Counter

from lw_runtime.protocols import exact_match, extract_answer, normalize_answer


def f1_score(prediction: str, gold: str) -> float:
    pred = normalize_answer(extract_answer(prediction)).split()
    ref = normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def bootstrap_ci(values: list[float], resamples: int = 2000, seed: int = 0, level: float = 0.95,
                 groups: list | None = None) -> tuple[float, float, float]:
    """(mean, low, high) of a per-example score. With ``groups`` (one label per example, e.g. the gold
    answer), a cluster bootstrap: whole groups are resampled with replacement and the mean is taken over
    the examples they hold, so examples that share a group count as one draw, not as independent ones."""
    n = len(values)
    if n == 0:
        return (float("nan"),) * 3
    if groups is not None and len(groups) != n:
        raise ValueError(f"bootstrap_ci got {len(groups)} group labels for {n} values")
    mean = sum(values) / n
    rng = random.Random(seed)
    if groups is None:
        means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    else:
        by_group: dict = {}
        for g, v in zip(groups, values):
            by_group.setdefault(g, []).append(v)
        clusters = [(sum(v), len(v)) for v in by_group.values()]
        means = []
        for _ in range(resamples):
            draw = [clusters[rng.randrange(len(clusters))] for _ in clusters]
            means.append(sum(t for t, _ in draw) / sum(c for _, c in draw))
        means.sort()
    lo = means[int((1 - level) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return mean, lo, hi


def is_empty(output: str) -> bool:
    return not extract_answer(output)


def is_repetition_loop(output: str, min_repeats: int = 4) -> bool:
    """True when a short unit (1-3 words or characters) repeats back to back >= min_repeats times
    and covers most of the output."""
    text = output.strip()
    if len(text) < 6:
        return False
    words = text.split()
    for units, joiner in ((words, " "), (list(text.replace(" ", "")), "")):
        for size in (1, 2, 3):
            if len(units) < size * min_repeats:
                continue
            best = run = 1
            for i in range(size, len(units) - size + 1, size):
                if units[i : i + size] == units[i - size : i]:
                    run += 1
                    best = max(best, run)
                else:
                    run = 1
            if best >= min_repeats and best * size >= 0.6 * len(units):
                return True
    return False


def summarize(outputs: list[str], golds: list[str]) -> dict:
    em = [float(exact_match(o, g)) for o, g in zip(outputs, golds)]
    f1 = [f1_score(o, g) for o, g in zip(outputs, golds)]
    em_mean, em_lo, em_hi = bootstrap_ci(em)
    f1_mean, f1_lo, f1_hi = bootstrap_ci(f1)
    return {
        "n": len(outputs),
        "accuracy": em_mean,
        "accuracy_ci95": [em_lo, em_hi],
        "f1": f1_mean,
        "f1_ci95": [f1_lo, f1_hi],
        "empty": sum(is_empty(o) for o in outputs),
        "repetition_loops": sum(is_repetition_loop(o) for o in outputs),
    }


def breakdown(examples, outputs: list[str]) -> dict:
    """Exact-match accuracy of ``outputs`` by slice of ``examples``: the asked attribute (``kind``),
    the asked fact's wording (``fact_template``) and the question's wording (``question_template``),
    each slice ``{"n": .., "accuracy": ..}``; and every prediction beside its gold answer, so that a
    reader can see where a bridge fails (one wording, one kind, near misses) and not only how often.
    Examples without relay-QA metadata fall into the slice ``"-"``."""
    slices: dict[str, dict[str, list[float]]] = {"kind": {}, "fact_template": {}, "question_template": {}}
    predictions = []
    for e, out in zip(examples, outputs, strict=True):
        meta = e.meta or {}
        templates = meta.get("templates") or ()
        keys = {"kind": meta.get("kind", "-"),
                "fact_template": templates[meta["asked"]] if templates and "asked" in meta else "-",
                "question_template": templates[-1] if templates else "-"}
        ok = float(exact_match(out, e.answer))
        for slice_name, key in keys.items():
            slices[slice_name].setdefault(key, []).append(ok)
        predictions.append({"id": e.id, "gold": e.answer, "output": out, "correct": bool(ok), **keys})
    return {
        **{name: {key: {"n": len(v), "accuracy": sum(v) / len(v)} for key, v in sorted(groups.items())}
           for name, groups in slices.items()},
        "predictions": predictions,
    }


def entropy(logits) -> float:
    """Mean entropy (nats) of the softmax over the last dim of a (N, V) tensor."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    return float(-(logp.exp() * logp).sum(-1).mean())


def fmt_ci(summary: dict, key: str = "accuracy") -> str:
    lo, hi = summary[f"{key}_ci95"]
    value = summary[key]
    if math.isnan(value):
        return "n/a"
    return f"{100 * value:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
