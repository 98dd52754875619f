"""Quality over seeds: the runs of one or more ``train.sweep`` folders grouped into cells, one row per cell
with the mean, spread and count of learned seeds (scripts/seed_table.py is the command line).

Decisions:
- A cell is the runs whose config (``summary.json`` ``config``, fields a run's commit did not have filled
  with today's defaults) and LW_* switches agree once the run's identity is removed: ``RUN_IDENTITY`` (seed,
  out_dir and the fields that change nothing trained) and ``ENV_NOT_IDENTITY``. ``name_pattern`` groups by the
  run name with that pattern removed instead (``_s\\d+$``: qr_s3 -> qr). Cells span roots.
- A root is a ``train.sweep`` folder (``sweep.json`` + run folders) or a folder of plain ``train.fsdp`` run
  folders, each with its ``summary.json`` (no sweep: runs without a summary are not seen there).
- A run without ``summary.json`` (killed, timed out, died) counts as run, in no mean: "no figure", never 0.
  Its config is rebuilt from the sweep's command and its plan line, as train.sweep built it; when that no
  longer parses, it is grouped by its name.
- Learned: test accuracy >= target-alone accuracy + ``learned_points`` (exactly +20 counts). Stable: final
  validation >= best validation - ``stable_points``. Differences are taken in points and rounded to 1e-6, so
  0.29 - 0.09 (0.19999999999999998 in floats) counts as the 20 points it is. sd is the sample sd (n - 1) over
  the runs with a figure.
- Compression: mean target tokens of the text the source reads (lw_runtime.protocols.source_text, the text the
  K soft tokens stand for) over the run's regenerated test split, / K; only with a target tokenizer. The split
  is checked against the predictions the summary saved. Bytes: len() of one real packet
  (``encode_soft_tokens`` of a 1 x K x target-dim tensor, the runtime's default group size).
Left out: bootstrap intervals per run (scripts/quality_report.py), plots, curriculum roots.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import re
import shlex
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from lw_runtime.packets import encode_soft_tokens
from lw_runtime.protocols import source_text
from lw_runtime.translator import CONFIG_NAME
from lw_runtime.wire import WireFormatError

from .config import TrainConfig, parse_args
from .data import data_keywords, load_task
from .sweep import PARSER as SWEEP_PARSER
from .sweep import split_env, validation_curve

LEARNED_POINTS = 20.0
STABLE_POINTS = 2.0
SEED_PART = r"_s\d+$"
WIRE_BITS = (8, 4)
GROUP_SIZE = inspect.signature(encode_soft_tokens).parameters["group_size"].default
# fields that name a run or change nothing it learns; the rest of the config is the cell
RUN_IDENTITY = ("seed", "out_dir", "resume", "progress", "tensorboard", "checkpoint_every", "keep_checkpoints", "threads")
# LW_* variables that are paths or provenance (the config's source/target say which models ran)
ENV_NOT_IDENTITY = ("LW_SOURCE", "LW_TARGET", "LW_COMMIT")
SUMMARY_KEYS = ("config", "test_bridged_acc", "test_target_alone_acc", "best_val_acc", "best_step", "final_val_acc")
DEFAULTS = asdict(TrainConfig())
FIELDS = {f.name: f for f in fields(TrainConfig)}


class SeedTableError(ValueError):
    """A run root that is not a finished train.sweep folder, or a file in it that is not what train.sweep writes."""


@dataclass
class Run:
    root: str
    name: str
    status: str
    run_dir: Path
    summary: dict | None = None
    config: dict | None = None
    config_from: str = ""
    environment: dict = field(default_factory=dict)
    val_curve: list = field(default_factory=list)
    evaluation: dict | None = None  # RUN/evaluation.json (python -m train.evaluate RUN), where the run has one
    evaluation_ignored: str = ""  # why an evaluation.json there was not taken


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SeedTableError(f"{path}: not JSON ({exc})") from None


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def sweep_config(meta: dict, flags: str, run_dir: Path) -> tuple[dict, dict]:
    """(config, LW_* environment) train.sweep gave the run of plan line ``flags``: the sweep's common flags,
    then the line's. ``SeedTableError`` when today's flags no longer parse them."""
    words = shlex.split(meta.get("command") or "")
    if "train.sweep" not in words:
        raise SeedTableError(f"the sweep command {meta.get('command')!r} is not a train.sweep command")
    _, common = SWEEP_PARSER.split(words[words.index("train.sweep") + 2:])
    env, run_flags = split_env(shlex.split(flags))
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            cfg = parse_args(common + run_flags + ["--out-dir", str(run_dir)])
    except SystemExit:
        raise SeedTableError(f"its flags do not parse at this commit: {err.getvalue().strip().splitlines()[-1]}") from None
    return asdict(cfg), {**(meta.get("environment") or {}), **env}


def load_root(root: Path) -> tuple[dict, list[Run]]:
    """The provenance of a train.sweep folder and its runs in the sweep's order: those sweep.json lists,
    then run folders with a summary.json it does not list."""
    root = Path(root)
    meta_file = root / "sweep.json"
    summaries = {p.parent.name: p for p in root.glob("*/summary.json")}
    if not meta_file.is_file() and not summaries:
        raise SeedTableError(f"{root}: no sweep.json (not a finished train.sweep folder) and no <run>/summary.json below it")
    # a folder of plain train.fsdp runs (no sweep): each run's summary is its whole provenance
    meta = _read_json(meta_file) if meta_file.is_file() else {"command": "train.fsdp runs (no sweep.json)"}
    listed = {row["name"]: row for row in meta.get("runs", [])}
    if not summaries:
        raise SeedTableError(f"{root}: no <run>/summary.json below it; sweep.json lists "
                             f"{', '.join(listed) or 'no runs'} (copy the run folders back with it)")
    runs = []
    for name in list(listed) + sorted(set(summaries) - set(listed), key=_natural):
        row, run_dir = listed.get(name, {}), root / name
        run = Run(str(root), name, row.get("status", "ok"), run_dir)
        if name in summaries:
            run.summary = _read_json(summaries[name])
            missing = [k for k in SUMMARY_KEYS if k not in run.summary]
            if missing:
                raise SeedTableError(f"{summaries[name]}: no {', '.join(missing)} (not a train.fsdp summary)")
            run.config = {**DEFAULTS, **run.summary["config"]}
            run.config_from = "summary.json"
            # older summaries lack it: then the sweep's switches and the plan line's, as train.sweep set them
            run.environment = (run.summary["environment"] if "environment" in run.summary
                               else {**(meta.get("environment") or {}), **split_env(shlex.split(row.get("flags", "")))[0]})
            run.val_curve = [list(h) for h in run.summary.get("history", [])]
            if (run_dir / "evaluation.json").is_file():
                evaluation = _read_json(run_dir / "evaluation.json")
                # only an evaluation of this run's test split (a stale one from an earlier run in the folder is not)
                if evaluation.get("gold_samples") == (run.summary.get("samples") or {}).get("gold"):
                    run.evaluation = evaluation
                else:
                    run.evaluation_ignored = "evaluation.json scored other test examples (an earlier run's?)"
        else:
            if run.status == "ok":
                run.status = "ok, but no summary.json copied back"
            try:
                run.config, run.environment = sweep_config(meta, row.get("flags", ""), run_dir)
                run.config_from = "sweep command + plan line"
            except SeedTableError as exc:
                run.config_from = f"none: {exc}"
            run.val_curve = [list(p) for p in row.get("val_curve") or validation_curve(run_dir / "metrics.jsonl")]
        runs.append(run)
    provenance = {k: meta.get(k) for k in ("command", "commit", "date", "device", "environment")}
    if not meta_file.is_file():
        devices = sorted({str(r.summary.get("device")) for r in runs if r.summary})
        provenance["device"] = ", ".join(devices)
    return provenance, runs


def cell_key(run: Run, name_pattern: str | None) -> tuple:
    """What a run shares with the other seeds of its cell (see the module docstring)."""
    if name_pattern is not None or run.config is None:
        return (("name", re.sub(name_pattern or SEED_PART, "", run.name)),)
    config = tuple((k, v) for k, v in sorted(run.config.items()) if k not in RUN_IDENTITY)
    env = tuple((k, v) for k, v in sorted(run.environment.items()) if k not in ENV_NOT_IDENTITY)
    return config + tuple(("$" + k, v) for k, v in env)


def group_runs(runs: list[Run], name_pattern: str | None = None) -> list[tuple[tuple, list[Run]]]:
    cells: dict[tuple, list[Run]] = {}
    for run in runs:
        cells.setdefault(cell_key(run, name_pattern), []).append(run)
    return list(cells.items())


def _flag(name: str, value) -> str:
    if name.startswith("$"):
        return f"{name[1:]}={value}" if value is not None else f"{name[1:]} unset"
    if name == "name":
        return str(value)
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool) and FIELDS.get(name) is not None and FIELDS[name].type == "bool":
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {value}" if value not in ("", None) else f"{flag} ''"


def cell_labels(keys: list[tuple]) -> list[str]:
    """Each cell as the flags (and LW_* switches) that differ between the cells of configs ("all runs" when
    none does); a cell of names (--group-by-name, or runs whose config is lost) as its name."""
    dicts = [dict(k) for k in keys]
    configs = [d for d in dicts if "name" not in d]
    names = sorted({n for d in configs for n in d}, key=lambda n: (n.startswith("$"), n))
    differ = [n for n in names if len({json.dumps(d.get(n), sort_keys=True) for d in configs}) > 1]
    return [d["name"] if "name" in d else " ".join(_flag(n, d.get(n)) for n in differ) or "all runs" for d in dicts]


def _points(acc: float) -> float:
    return 100 * acc


def _at_least(gain: float, points: float) -> bool:
    """gain >= points, both in points, with the float noise of accuracies k/n removed."""
    return round(gain, 6) >= points


_PACKET_BYTES: dict[tuple[int, int, int], int] = {}


def wire_bytes(num_tokens: int, dim: int, bits: int) -> int:
    """Bytes of one message of ``num_tokens`` x ``dim`` soft tokens at ``bits``: len() of the real packets."""
    key = (num_tokens, dim, bits)
    if key not in _PACKET_BYTES:
        soft = torch.randn(1, num_tokens, dim, generator=torch.Generator().manual_seed(0))
        _PACKET_BYTES[key] = sum(len(p) for p in encode_soft_tokens(soft, bytes(8), bits=bits))
    return _PACKET_BYTES[key]


def target_dim(run: Run, given: int | None) -> tuple[int | None, str]:
    """The target's hidden size for ``run``: its saved translator's config, else ``given`` (--target-dim)."""
    for folder in ("translator", "best"):
        path = run.run_dir / folder / CONFIG_NAME
        if path.is_file():
            saved = _read_json(path)
            if given is not None and saved["target_dim"] != given:
                raise SeedTableError(f"{path}: target_dim {saved['target_dim']}, but --target-dim {given} was given")
            return saved["target_dim"], str(path)
    return (given, "--target-dim") if given is not None else (None, "no saved translator config and no --target-dim")


def test_text_tokens(run: Run, tokenizer) -> dict:
    """Mean target tokens of the source-read text and of the passage over the run's regenerated test split,
    or ``{"reason": ...}`` when the split cannot be rebuilt here."""
    cfg, summary = run.config, run.summary
    task = cfg["eval_task"] or cfg["task"]
    try:
        keywords = data_keywords(cfg["task"], cfg["eval_task"], "test", cfg["data"], cfg["eval_data"])
        split = load_task(task, "test", summary.get("test_examples", cfg["test_examples"]), seed=cfg["seed"], **keywords)
    except (OSError, ValueError) as exc:
        return {"reason": f"test split of {task!r} not rebuilt here: {exc}"}
    predictions = (summary.get("test_breakdown") or {}).get("predictions")
    if predictions is not None and [(p["id"], p["gold"]) for p in predictions] != [(e.id, e.answer) for e in split]:
        return {"reason": "this commit does not regenerate the run's test split (ids or answers differ from its predictions)"}

    def mean_tokens(texts: list[str]) -> float:
        return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) / len(texts)

    return {"source_text_tokens_mean": mean_tokens([source_text(e, cfg["protocol"], cfg["source_order"]) for e in split]),
            "passage_tokens_mean": mean_tokens([e.passage for e in split]), "examples": len(split),
            "split_checked": predictions is not None}


def run_figures(run: Run, learned_points: float, stable_points: float, tokenizer=None, given_dim: int | None = None) -> dict:
    """Every figure of one run; runs without a summary get their status, config source and curve only."""
    out = {"root": run.root, "name": run.name, "status": run.status, "seed": (run.config or {}).get("seed"),
           "config_from": run.config_from, "environment": run.environment, "val_curve": run.val_curve}
    if run.evaluation_ignored:
        out["evaluation_ignored"] = run.evaluation_ignored
    s = run.summary
    if s is None:
        return {**out, "figure": False}
    test, alone, best, final = (_points(s[k]) for k in ("test_bridged_acc", "test_target_alone_acc", "best_val_acc", "final_val_acc"))
    k = s.get("num_soft_tokens") or run.config["tokens"]
    dim, dim_from = target_dim(run, given_dim)
    out.update(figure=True, test=test, target_alone=alone, best_val=best, best_step=s["best_step"], final_val=final,
               learned=_at_least(test - alone, learned_points), stable=_at_least(final - best, -stable_points) if best >= 0 else None,
               num_soft_tokens=k, target_dim=dim, target_dim_from=dim_from, device=s.get("device"))
    # the codec rows: the run's own baselines pass, else a later python -m train.evaluate RUN
    methods = (s.get("evaluation") or run.evaluation or {}).get("methods", {})
    if "bridge_fp16" in methods:
        out["bridge_fp16_test"] = _points(methods["bridge_fp16"]["accuracy"])
    for bits in WIRE_BITS:
        if f"bridge_int{bits}" in methods:
            out[f"bridge_int{bits}_test"] = _points(methods[f"bridge_int{bits}"]["accuracy"])
        try:
            out[f"int{bits}_bytes"] = wire_bytes(k, dim, bits) if dim else None
        except WireFormatError as exc:  # the runtime would refuse this shape too
            out[f"int{bits}_bytes"], out[f"int{bits}_bytes_reason"] = None, str(exc)
    if tokenizer is not None:
        tokens = test_text_tokens(run, tokenizer)
        out.update(tokens)
        if "source_text_tokens_mean" in tokens:
            out["compression"] = tokens["source_text_tokens_mean"] / k
    return out


def _mean(values: list) -> float | None:
    return statistics.fmean(values) if values else None


def cell_figures(runs: list[dict]) -> dict:
    """The cell's figures over its runs with a figure (``runs`` as ``run_figures`` returns them)."""
    done = [r for r in runs if r["figure"]]
    tests = [r["test"] for r in done]

    def same(key: str):
        values = sorted({r.get(key) for r in done} - {None})
        return values[0] if len(values) == 1 else (values or None)

    codec = [r for r in done if "bridge_fp16_test" in r and "bridge_int4_test" in r]
    return {
        "runs": len(runs), "seeds": [r["seed"] for r in runs], "with_figure": len(done),
        "no_figure": [f"{r['name']} ({r['status']})" for r in runs if not r["figure"]],
        "test_mean": _mean(tests), "test_sd": statistics.stdev(tests) if len(tests) > 1 else None,
        "test_min": min(tests, default=None), "test_max": max(tests, default=None),
        "learned": sum(r["learned"] for r in done), "target_alone_mean": _mean([r["target_alone"] for r in done]),
        "stable": sum(bool(r["stable"]) for r in done), "stable_known": sum(r["stable"] is not None for r in done),
        "compression_mean": _mean([r["compression"] for r in done if "compression" in r]),
        "compression_runs": sum("compression" in r for r in done),
        **{f"bridge_int{b}_test_mean": _mean([r[f"bridge_int{b}_test"] for r in done if f"bridge_int{b}_test" in r]) for b in WIRE_BITS},
        "codec_runs": len(codec), "bridge_fp16_test_mean": _mean([r["bridge_fp16_test"] for r in codec]),
        # INT4 against fp16 of the same run's soft tokens: the largest loss over the runs that have both
        "int4_minus_fp16_worst": min((r["bridge_int4_test"] - r["bridge_fp16_test"] for r in codec), default=None),
        "num_soft_tokens": same("num_soft_tokens"), "target_dim": same("target_dim"),
        **{f"int{b}_bytes": same(f"int{b}_bytes") for b in WIRE_BITS},
    }


def seed_table(roots: list, name_pattern: str | None = None, learned_points: float = LEARNED_POINTS,
               stable_points: float = STABLE_POINTS, tokenizer=None, target_dim: int | None = None) -> dict:
    """The table's JSON: provenance of every root, every run's figures, and the cells in order of first run."""
    provenance, runs = {}, []
    for root in roots:
        provenance[str(root)], found = load_root(Path(root))
        runs += found
    cells = group_runs(runs, name_pattern)
    labels = cell_labels([key for key, _ in cells])
    figures = {id(r): run_figures(r, learned_points, stable_points, tokenizer, target_dim) for r in runs}
    table_cells = []
    for label, (key, members) in zip(labels, cells):
        rows = [figures[id(r)] for r in members]
        table_cells.append({"label": label, "names": sorted({re.sub(name_pattern or SEED_PART, "", r.name) for r in members}, key=_natural),
                            "members": [f"{r.root}/{r.name}" for r in members], "key": {k: v for k, v in key},
                            **cell_figures(rows)})
    return {"grouping": f"run name without /{name_pattern}/" if name_pattern else "config without " + ", ".join(RUN_IDENTITY),
            "rules": {"learned": f"test accuracy >= target-alone accuracy + {learned_points:g} points (exactly + {learned_points:g} counts)",
                      "stable": f"final validation accuracy >= best validation accuracy - {stable_points:g} points",
                      "no_figure": "a run without summary.json is counted as run, in no mean or count of learned",
                      "sd": "sample standard deviation (n - 1) over the runs with a figure"},
            "group_size": GROUP_SIZE, "roots": provenance, "cells": table_cells, "runs": list(figures.values())}


def _num(value, fmt: str = "{:.1f}") -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return "/".join(_num(v, fmt) for v in value)
    return fmt.format(value)


def markdown(table: dict, command: str, made: str, tokenizer_name: str | None) -> str:
    """The table as Markdown: the command that made it, the rules, one row per cell, provenance below."""
    rules = table["rules"]
    compression = (f"mean `{tokenizer_name}` tokens of the text the source reads (test split) / K" if tokenizer_name
                   else "— (needs --tokenizer)")
    lines = [
        "# Test accuracy over seeds, per cell", "",
        f"command: `{command}` · {made}", "",
        f"Cells: runs grouped by {table['grouping']}. Learned: {rules['learned']}. Stable: {rules['stable']}. "
        f"A run without summary.json (killed, timed out, died) is run but has no figure: it is in no mean and no count. "
        f"± is the {rules['sd']}; — for one run. Compression: {compression}. Bytes: one message as real packets "
        f"(lw_runtime.packets, 1 x K x target hidden size, group size {table['group_size']}).", "",
        "| cell | runs | seeds | with figure | test % mean ± sd | min–max | learned | target alone % | stable "
        "| compression | K | INT8 bytes | INT4 bytes |",
        "|---" * 13 + "|",
    ]
    for c in table["cells"]:
        done = c["with_figure"]
        seeds = ", ".join("?" if s is None else str(s) for s in c["seeds"])
        spread = f"{_num(c['test_min'])}–{_num(c['test_max'])}" if done else "—"
        mean = f"{_num(c['test_mean'])} ± {_num(c['test_sd'])}" if done else "—"
        comp = _num(c["compression_mean"], "{:.1f}×") + ("" if c["compression_runs"] in (0, done) else f" ({c['compression_runs']} runs)")
        names = ", ".join(c["names"])
        label = c["label"] if c["label"] == names else f"{c['label']} ({names})"
        lines.append(f"| {label} | {c['runs']} | {seeds} | {done} | {mean} | {spread} | "
                     f"{c['learned']} of {done} | {_num(c['target_alone_mean'])} | {c['stable']} of {c['stable_known']} | "
                     f"{comp} | {_num(c['num_soft_tokens'], '{}')} | {_num(c['int8_bytes'], '{:,}')} | {_num(c['int4_bytes'], '{:,}')} |")
    quantized = [c for c in table["cells"] if c["bridge_int8_test_mean"] is not None or c["bridge_int4_test_mean"] is not None]
    if quantized:
        lines += ["", "test % through the codec (the runs' baselines or a later `python -m train.evaluate RUN`; mean over the "
                  "runs that have them; the worst INT4 − fp16 is per run, same soft tokens)", "",
                  "| cell | runs | fp16 | INT8 | INT4 | worst INT4 − fp16 |", "|---|---|---|---|---|---|"]
        lines += [f"| {c['label']} | {c['codec_runs']} | {_num(c['bridge_fp16_test_mean'])} | {_num(c['bridge_int8_test_mean'])} | "
                  f"{_num(c['bridge_int4_test_mean'])} | {_num(c['int4_minus_fp16_worst'])} |" for c in quantized]
    missing = [(c["label"], n) for c in table["cells"] for n in c["no_figure"]]
    if missing:
        lines += ["", "runs without a figure:", ""] + [f"- {label}: {n}" for label, n in missing]
    lines += ["", "run roots:", ""]
    lines += [f"- `{root}` (commit {p['commit']}, {p['date']}, {p['device']}): `{p['command']}`" for root, p in table["roots"].items()]
    return "\n".join(lines) + "\n"
