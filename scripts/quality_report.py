"""Markdown table, JSON and plots for finished training runs copied back from a GPU machine.

Usage: python scripts/quality_report.py [--pieces TARGET] NAME OUT_DIR RUN_ROOT [RUN_ROOT ...]

Each RUN_ROOT is a train.sweep folder (``sweep.json`` + one folder per run) or a train.curriculum
folder (``curriculum.json`` + one folder per stage); every ``summary.json`` below it becomes a row
named ``<root>/<run>``. Runs with baselines go into train.ablations' table (all baselines, 95%
intervals, diagnostics) and plots; runs without them get a short table, their intervals bootstrapped
from the test predictions each summary saves (``test_breakdown``), and every run gets tables by asked
attribute and wording, and a table with a second interval that resamples the held-out answer values
instead of the examples (each value is asked several times; ``train.metrics.bootstrap_ci(groups=)``)
beside the values it misses most. The provenance (command, commit, date, device) is read from each root's
sweep.json / curriculum.json; a root that has neither (plain ``train.fsdp`` runs) may carry a
``provenance.json`` written from the launching call, and the report marks its command as such.
``--pieces TARGET`` (a model name or file ``lw_runtime.models.load_model`` takes, e.g. the embedded
target) adds accuracy by how many target tokens the gold answer is (numbers apart): the bridge relays
one-token words far better than words the target writes in several pieces.
Runs of several facts also get their misses by cause: the output is another fact's value from the same
passage (the bridge picked the wrong fact), or a value the passage does not hold (it carried the asked
fact but not its exact value), or empty. The test split is regenerated from the run's task, seed and size
(``load_task``), and a run whose saved golds it does not reproduce is left out, said so in the table.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.metrics import bootstrap_ci  # noqa: E402
from train.data.tasks import fact_range, load_task  # noqa: E402
from lw_runtime.protocols import answer_continuation, extract_answer, normalize_answer  # noqa: E402
from train.ablations import markdown, plots  # noqa: E402


def load(root: Path) -> tuple[dict, list[dict]]:
    meta_file = next((root / n for n in ("curriculum.json", "sweep.json", "provenance.json") if (root / n).exists()), None)
    if meta_file is None:
        raise SystemExit(f"{root}: no curriculum.json, sweep.json or provenance.json (not a finished sweep or curriculum)")
    meta = json.loads(meta_file.read_text())
    if meta_file.name == "provenance.json":  # written by hand from the launching call: say so in the report
        meta["command"] = f"{meta['command']} [{meta.get('provenance', 'provenance.json')}]"
    rows = []
    for summary in sorted(root.glob("*/summary.json"), key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.parent.name)]):
        s = json.loads(summary.read_text())
        rows.append({"name": f"{root.name}/{summary.parent.name}", **s})
    return {k: meta.get(k) for k in ("command", "commit", "date", "device")}, rows


def bridge_cell(row: dict) -> str:
    """The greedy test accuracy, with its interval when the run saved its predictions."""
    predictions = row.get("test_breakdown", {}).get("predictions")
    if not predictions:
        return f"{100 * row['test_bridged_acc']:.1f}"
    mean, lo, hi = bootstrap_ci([float(p["correct"]) for p in predictions])
    if abs(mean - row["test_bridged_acc"]) > 1e-9:
        raise SystemExit(f"{row['name']}: test_breakdown ({mean}) disagrees with test_bridged_acc ({row['test_bridged_acc']})")
    return f"{100 * mean:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def breakdown_tables(rows: list[dict]) -> str:
    """The greedy test pass of each run by asked attribute, and by the asked fact's wording and the
    question's wording (accuracy % and n), from the summaries' ``test_breakdown``."""
    if not rows:
        return ""
    text = ""
    for slice_name in ("kind", "fact_template", "question_template"):
        keys = sorted({k for r in rows for k in r["test_breakdown"][slice_name]})
        text += f"\ntest accuracy % by {slice_name.replace('_', ' ')} (greedy test pass, `test_breakdown`; n in brackets)\n\n"
        text += "| " + slice_name + " | " + " | ".join(r["name"] for r in rows) + " |\n"
        text += "|---" * (len(rows) + 1) + "|\n"
        for k in keys:
            cells = []
            for r in rows:
                c = r["test_breakdown"][slice_name].get(k)
                cells.append(f"{100 * c['accuracy']:.0f} ({c['n']})" if c else "")
            text += f"| {k} | " + " | ".join(cells) + " |\n"
    return text


def piece_key(tokenizer, answer: str) -> str:
    """The slice of an answer: "number" for digits, "words" for answers of several words ("web
    designer"), else how many target tokens the one word is after a space, as the target writes it (3+ pooled)."""
    if answer.isdigit():
        return "number"
    if len(answer.split()) > 1:
        return "words"
    n = len(tokenizer(answer_continuation(answer), add_special_tokens=False)["input_ids"])
    return str(n) if n < 3 else "3+"


def pieces_table(rows: list[dict], tokenizer) -> tuple[str, dict]:
    """Greedy test accuracy by the gold answer's length in target tokens, per run and pooled over
    the runs (the pooled row counts each run's examples; the runs share test splits by seed)."""
    keys = ("number", "1", "2", "3+", "words")
    figures, pooled, key_of = {}, {k: [0, 0] for k in keys}, {}
    for r in rows:
        counts = {k: [0, 0] for k in keys}
        for p in r["test_breakdown"]["predictions"]:
            if p["gold"] not in key_of:  # runs of one seed share their golds: tokenize each once
                key_of[p["gold"]] = piece_key(tokenizer, p["gold"])
            c = counts[key_of[p["gold"]]]
            c[0] += p["correct"]
            c[1] += 1
        figures[r["name"]] = {k: {"correct": a, "n": n} for k, (a, n) in counts.items()}
        for k, (a, n) in counts.items():
            pooled[k][0] += a
            pooled[k][1] += n
    figures["pooled"] = {k: {"correct": a, "n": n} for k, (a, n) in pooled.items()}

    def cells(c: dict) -> str:
        return " | ".join(f"{100 * c[k]['correct'] / c[k]['n']:.0f} ({c[k]['n']})" if c[k]["n"] else "" for k in keys)

    text = ("\ntest accuracy % by the gold answer's length in target tokens (greedy test pass; numbers and "
            "answers of several words apart; n in brackets)\n\n| run | number | one word, 1 token | 2 tokens | "
            "3+ tokens | several words |\n|---|---|---|---|---|---|\n")
    text += "".join(f"| {name} | {cells(c)} |\n" for name, c in figures.items())
    return text, figures


MISS_CAUSES = ("another fact's value", "not in the passage", "empty")


def miss_cause(output: str, facts, asked: int) -> str:
    """Why a multi-fact answer missed: another fact's value (normalised as the scorer does), no answer, or
    a value the passage does not hold."""
    said = normalize_answer(extract_answer(output))
    if not said:
        return "empty"
    others = {normalize_answer(value) for i, (_, _, value) in enumerate(facts) if i != asked}
    return "another fact's value" if said in others else "not in the passage"


def _eval_task(cfg: dict) -> str:
    """The task of a run's test split (--eval-task, else --task)."""
    return cfg.get("eval_task") or cfg.get("task", "")


def misses_table(rows: list[dict]) -> tuple[str, dict]:
    """For runs of several facts: each run's greedy test misses by cause (MISS_CAUSES)."""
    multi = [r for r in rows if _eval_task(r.get("config", {})).startswith("relay_")
             and fact_range(_eval_task(r["config"]))[1] > 1]
    if not multi:
        return "", {}
    text = ("\nmisses by cause, runs of several facts (greedy test pass; the test split regenerated from the run's "
            "task and seed)\n\n| run | examples | misses | " + " | ".join(MISS_CAUSES) + " |\n|---|---|---|"
            + "---|" * len(MISS_CAUSES) + "\n")
    figures = {}
    for r in multi:
        cfg, preds = r["config"], r["test_breakdown"]["predictions"]
        split = {e.id: e for e in load_task(_eval_task(cfg), "test", cfg["test_examples"], seed=cfg["seed"])}
        if any(p["id"] not in split or split[p["id"]].answer != p["gold"] for p in preds):
            text += f"| {r['name']} | {len(preds)} | (this commit does not regenerate the run's test split) |" + " |" * len(MISS_CAUSES) + "\n"
            continue
        counts = Counter(miss_cause(p["output"], split[p["id"]].meta["facts"], split[p["id"]].meta["asked"])
                         for p in preds if not p["correct"])
        figures[r["name"]] = {"examples": len(preds), "misses": sum(counts.values()), **{c: counts[c] for c in MISS_CAUSES}}
        text += f"| {r['name']} | {len(preds)} | {sum(counts.values())} | " + " | ".join(str(counts[c]) for c in MISS_CAUSES) + " |\n"
    return text, figures


def value_tables(rows: list[dict], top: int = 8) -> tuple[str, dict]:
    """Each run's greedy test accuracy with two 95% intervals — resampling examples, and resampling
    the held-out answer *values* (a cluster bootstrap: a split asks each pet, colour, job ... several
    times, and a bridge that misses a value often misses all its examples) — and the values it misses most,
    with its most frequent wrong output. Returns the Markdown and the figures for the JSON."""
    if not rows:
        return "", {}
    text = ("\ntest accuracy % with a 95% interval over examples and over answer values (greedy test pass; "
            "values = distinct (kind, gold) pairs), and the most-missed values (misses / asked, most frequent "
            "wrong output)\n\n| run | n | values | accuracy [over examples] | [over values] | most-missed values |\n"
            "|---|---|---|---|---|---|\n")
    figures = {}
    for r in rows:
        preds = r["test_breakdown"]["predictions"]
        correct = [float(p["correct"]) for p in preds]
        values = [(p.get("kind", "-"), p["gold"]) for p in preds]
        mean, lo, hi = bootstrap_ci(correct)
        _, vlo, vhi = bootstrap_ci(correct, groups=values)
        by_value: dict = {}
        for p, v in zip(preds, values):
            by_value.setdefault(v, []).append(p)
        missed = sorted(((sum(not p["correct"] for p in ps), len(ps), v, ps) for v, ps in by_value.items()),
                        key=lambda t: (-t[0], -t[1], t[2]))
        worst = []
        for misses, asked, (_, gold), ps in missed[:top]:
            if not misses:
                break
            wrong = Counter(p["output"].strip().splitlines()[0] if p["output"].strip() else "(empty)"
                            for p in ps if not p["correct"]).most_common(1)[0][0]
            worst.append({"gold": gold, "misses": misses, "asked": asked, "wrong": wrong})
        figures[r["name"]] = {"accuracy": mean, "ci_examples": [lo, hi], "ci_values": [vlo, vhi],
                              "values": len(by_value), "most_missed": worst}
        cells = "; ".join(f"{w['gold']} {w['misses']}/{w['asked']} ({w['wrong']!r})" for w in worst)
        text += (f"| {r['name']} | {len(preds)} | {len(by_value)} | {100 * mean:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | "
                 f"[{100 * vlo:.1f}, {100 * vhi:.1f}] | {cells.replace('|', '/')} |\n")
    return text, figures


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    tokenizer = None
    if "--pieces" in argv[1:] or argv[-1:] == ["--pieces"]:
        raise SystemExit("--pieces TARGET goes first: quality_report.py [--pieces TARGET] NAME OUT_DIR RUN_ROOT ...")
    if argv[:1] == ["--pieces"]:
        from lw_runtime.models import load_model

        tokenizer = load_model(argv[1]).tokenizer
        argv = argv[2:]
    if len(argv) < 3:
        print(__doc__)
        return 2
    name, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    metas, rows = {}, []
    for root in map(Path, argv[2:]):
        meta, found = load(root)
        metas[str(root)] = meta
        rows += found
    full = [r for r in rows if "evaluation" in r]
    short = [r for r in rows if "evaluation" not in r]
    devices = sorted({r.get("device") for r in rows if r.get("device")})
    header = {"device": ", ".join(devices), "date": ", ".join(sorted({m["date"] for m in metas.values() if m["date"]})),
              "commit": ", ".join(sorted({m["commit"] for m in metas.values() if m["commit"]})),
              "command": "one per run root, listed below"}
    text = markdown(name, full, header) if full else f"# {name}\n"
    if short:
        text += "\nruns without baselines (--no-baselines): bridge accuracy % on the test split\n\n"
        text += ("| run | n | best val (step) | final val | bridge [95% bootstrap over the saved test predictions] |\n"
                 "|---|---|---|---|---|\n")
        text += "".join(f"| {r['name']} | {r['test_examples']} | {100 * r['best_val_acc']:.1f} ({r['best_step']}) | "
                        f"{100 * r['final_val_acc']:.1f} | {bridge_cell(r)} |\n" for r in short)
    with_predictions = [r for r in rows if r.get("test_breakdown")]
    text += breakdown_tables(with_predictions)
    values_md, value_figures = value_tables(with_predictions)
    text += values_md
    misses_md, miss_figures = misses_table(with_predictions)
    text += misses_md
    piece_figures = {}
    if tokenizer is not None:
        pieces_md, piece_figures = pieces_table(with_predictions, tokenizer)
        text += pieces_md
    text += "\nvalidation accuracy by step:\n\n" + "".join(
        f"- {r['name']}: " + ", ".join(f"{s}: {100 * a:.1f}" for s, a in r.get("history", [])) + "\n" for r in rows)
    text += "\ncommands:\n\n" + "".join(f"- {k} (commit {m['commit']}, {m['date']}): `{m['command']}`\n" for k, m in metas.items())
    (out / f"{name}.md").write_text(text)
    (out / f"{name}.json").write_text(json.dumps({"roots": metas, "runs": rows, "by_value": value_figures, "by_pieces": piece_figures,
                                                     "misses_by_cause": miss_figures}, indent=2))
    if full:
        plots(name, full, out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
