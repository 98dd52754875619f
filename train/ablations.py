"""The original study's ablations and the quality ladder, one command each:

    python -m train.ablations NAME --out-dir DIR [train.fsdp flags shared by every run]

NAME: ``stability`` (recipe on/off), ``tokens`` (32/48/64 soft tokens), ``generalisation``
(train on one task, evaluate on the other), ``quantization`` (bytes per request at each bit width
next to text, token ids and KV cache), ``latency`` (time and memory per request, text vs latent),
``quality`` (relay-QA ladder 1/2/4/8 facts x soft_only/context), or ``all``.

Every run trains with the leak guard on and evaluates every baseline on the same test examples
(``train.evaluate``). Runs whose ``summary.json`` already exists in DIR are read back, not
retrained, so a long plan can be finished over several calls. ``--only RUN[,RUN]`` trains just
those runs of the plan and writes nothing else: several processes can then share one GPU (the
embedded pair leaves an H100 mostly idle) and a last call without ``--only`` collects
(``--collect``: read back only, list the runs that did not finish instead of training them). Outputs in DIR: ``<name>.json``
(every figure, with device, date, commit and command), ``<name>.md`` (tables) and plots
(``curves_<name>.png``: validation accuracy per run with peak and final marked;
``accuracy_<name>.png``: accuracy vs compression and accuracy vs bytes).
"""

from __future__ import annotations

import json
import shlex
import statistics
import sys
import time
from pathlib import Path

from dataclasses import asdict

import torch

from lw_runtime import kv_cache

from .config import DriverParser, parse_args
from .loop import train
from .metrics import fmt_ci
from .provenance import commit, header_lines, lw_environment

RECIPE_OFF = ["--no-rms-match", "--no-infonce", "--no-gate-lr-boost", "--dropout", "0", "--grad-clip", "0", "--no-early-stopping"]

PLANS: dict[str, list[tuple[str, list[str]]]] = {
    "stability": [("recipe_on", []), ("recipe_off", RECIPE_OFF)],
    "tokens": [(f"k{k}", ["--tokens", str(k)]) for k in (32, 48, 64)],
    "generalisation": [
        ("relay_to_relay", ["--task", "relay_qa"]),
        ("relay_to_arithmetic", ["--task", "relay_qa", "--eval-task", "arithmetic"]),
        ("arithmetic_to_arithmetic", ["--task", "arithmetic"]),
        ("arithmetic_to_relay", ["--task", "arithmetic", "--eval-task", "relay_qa"]),
    ],
    "quantization": [("bits", [])],
    "latency": [("latency", [])],
    "quality": [
        (f"{protocol}_f{n}", ["--task", f"relay_qa:{n}", "--protocol", protocol])
        for protocol in ("soft_only", "context")
        for n in (1, 2, 4, 8)
    ],
}

LLAMA8B_KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, 8 KV heads, head dim 128, bf16 = 128 KiB


def kv_bytes_per_token(model) -> int:
    """KV-cache bytes per token of ``model`` in bf16 (what a KV-sharing system would send)."""
    return kv_cache.kv_bytes_per_token(model.config, itemsize=2)


def request_bytes(summary: dict, target) -> dict:
    """Bytes one request sends for the same context, per representation."""
    ev = summary["evaluation"]
    d = ev["diagnostics"]
    tokens = d["passage_tokens_mean"]
    out = {
        "text_utf8": d["passage_utf8_bytes_mean"],
        "token_ids_uint16": 2 * tokens,
        "token_ids_int32": 4 * tokens,
        "kv_cache_target": kv_bytes_per_token(target.model) * tokens,
        "kv_cache_llama31_8b": LLAMA8B_KV_BYTES_PER_TOKEN * tokens,
    }
    for name, m in ev["methods"].items():
        if name.startswith("bridge_"):
            out[f"latents_{name[7:]}"] = m["wire_bytes_per_example"]
    return out


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def measure_latency(cfg, translator, source, target, examples, repeats: int = 5) -> dict:
    """Per-request wall time (batch 1, median) and peak GPU memory: bridge vs text vs text relay."""
    from lw_runtime.generate import generate
    from lw_runtime.protocols import full_text_prompt, source_text, target_prompt
    from lw_runtime.source import encode_source

    from .evaluate import quantize_soft, relay_messages

    e = examples[0]
    bits = 4

    def bridge():
        states = encode_source(source, [source_text(e, cfg.protocol, cfg.source_order)], cfg.source_layer, cfg.max_source_tokens)
        with torch.no_grad():
            soft = translator(states.hidden, states.mask)
        soft = quantize_soft(soft, bits)
        generate(target, soft, texts=[target_prompt(e, cfg.protocol)], max_new_tokens=cfg.max_new_tokens)

    def text():
        generate(target, texts=[full_text_prompt(e)], max_new_tokens=cfg.max_new_tokens)

    def relay():
        msgs, _ = relay_messages(source, [e], cfg.relay_tokens)
        generate(target, texts=[f"Message: {msgs[0]}{target_prompt(e, cfg.protocol)}"], max_new_tokens=cfg.max_new_tokens)

    out = {}
    for name, fn in (("bridge_int4", bridge), ("text_upper", text), ("text_relay", relay)):
        fn()  # warm-up
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        out[name] = {"ms_per_request": _median_ms(fn, repeats)}
        if torch.cuda.is_available():
            out[name]["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_plan(name: str, common: list[str], out_dir: Path, only: set[str] | None = None, collect: bool = False) -> list[dict]:
    rows = []
    for run_name, flags in PLANS[name]:
        if only is not None and run_name not in only:
            continue
        run_dir = out_dir / run_name
        summary_path = run_dir / "summary.json"
        cfg = parse_args(common + flags + ["--out-dir", str(run_dir)])
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())
            if "evaluation" in summary and "bytes_per_request" in summary and summary.get("config") == asdict(cfg):
                rows.append({"name": run_name, "flags": " ".join(flags), **summary, "reused": True})
                print(f"[{name}] {run_name}: reusing {summary_path} (same flags)", flush=True)
                continue
        if collect:
            print(f"[{name}] {run_name}: no finished run with these flags in {run_dir}; left out (--collect)", flush=True)
            rows.append({"name": run_name, "flags": " ".join(flags), "missing": True})
            continue
        if not cfg.baselines:
            raise ValueError("train.ablations needs the baselines: drop --no-baselines")
        summary, translator, source, target = train(cfg, return_models=True)
        test = summary.pop("_test_examples")
        summary["bytes_per_request"] = request_bytes(summary, target)
        if name == "latency":
            summary["latency"] = measure_latency(cfg, translator, source, target, test)
        summary_path.write_text(json.dumps(summary, indent=2))
        rows.append({"name": run_name, "flags": " ".join(flags), **summary})
        print(f"[{name}] {run_name}: bridge {fmt_ci(summary['evaluation']['methods']['bridge_fp16'])}", flush=True)
    return rows


def markdown(name: str, rows: list[dict], meta: dict) -> str:
    lines = [f"# {name}", "", *header_lines(meta), ""]
    if meta.get("missing_runs"):
        lines += [f"not run or not finished (left out): {', '.join(meta['missing_runs'])}", ""]
    methods = list(rows[0]["evaluation"]["methods"])
    lines.append("accuracy % on the held-out test split [95% bootstrap interval]; n = test examples")
    lines.append("")
    lines.append("| run | n | compression | best val (step) | final val | " + " | ".join(methods) + " |")
    lines.append("|" + "---|" * (len(methods) + 5))
    for r in rows:
        ev = r["evaluation"]
        lines.append(
            f"| {r['name']} | {r['test_examples']} | {ev['diagnostics']['compression_ratio']:.1f}x | "
            f"{100 * r['best_val_acc']:.1f} ({r['best_step']}) | {100 * r['final_val_acc']:.1f} | "
            + " | ".join(fmt_ci(ev["methods"][m]) for m in methods)
            + " |"
        )
    lines += ["", "| run | format chosen on validation (text baselines) | degenerate (empty / loops) in bridge_fp16 | soft RMS / target RMS | soft cosine | first-token entropy bridge / text | spelled slots % |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ev, d = r["evaluation"], r["evaluation"]["diagnostics"]
        fmts = ", ".join(f"{k}: {v['chosen']}" for k, v in ev["formats"].items())
        b = ev["methods"]["bridge_fp16"]
        spelled = f"{100 * d['spelled_fraction']:.1f}" if "spelled_fraction" in d else "-"  # older summaries lack it
        lines.append(
            f"| {r['name']} | {fmts} | {b['empty']} / {b['repetition_loops']} | {d['soft_token_rms']:.4f} / {d['target_embedding_rms']:.4f} | "
            f"{d['soft_mean_pairwise_cosine']:.3f} | {d['first_token_entropy_bridge']:.2f} / {d['first_token_entropy_text_upper']:.2f} | {spelled} |"
        )
    if any("bytes_per_request" in r for r in rows):
        keys = list(rows[0]["bytes_per_request"])
        lines += ["", "bytes per request (mean over test examples; latents include header, scales and CRC)", "", "| run | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
        for r in rows:
            lines.append(f"| {r['name']} | " + " | ".join(f"{r['bytes_per_request'][k]:,.0f}" for k in keys) + " |")
    if any("latency" in r for r in rows):
        lines += ["", "latency per request (batch 1, median of 5) and peak GPU memory", "", "| path | ms / request | peak GPU MiB |", "|---|---|---|"]
        for r in rows:
            for path, v in r.get("latency", {}).items():
                lines.append(f"| {path} | {v['ms_per_request']:.1f} | {v.get('peak_gpu_mib', float('nan')):.0f} |")
    return "\n".join(lines) + "\n"


def plots(name: str, rows: list[dict], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        hist = r.get("history") or []
        if not hist:
            continue
        steps, acc = zip(*hist)
        line = ax.plot(steps, [100 * a for a in acc], label=r["name"])[0]
        best = max(range(len(acc)), key=lambda i: acc[i])
        ax.plot(steps[best], 100 * acc[best], "*", color=line.get_color(), markersize=12)
        ax.plot(steps[-1], 100 * acc[-1], "o", color=line.get_color())
    ax.set(xlabel="step", ylabel="validation accuracy %", title=f"{name}: training curves (* peak, o final)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / f"curves_{name}.png", dpi=120)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        ev = r["evaluation"]
        a1.plot(ev["diagnostics"]["compression_ratio"], 100 * ev["methods"]["bridge_fp16"]["accuracy"], "o")
        a1.annotate(r["name"], (ev["diagnostics"]["compression_ratio"], 100 * ev["methods"]["bridge_fp16"]["accuracy"]), fontsize=7)
        if "bytes_per_request" in r:
            b = r["bytes_per_request"]
            pts = [(b["text_utf8"], ev["methods"]["text_upper"]["accuracy"], "text"), (b["kv_cache_target"], ev["methods"]["text_upper"]["accuracy"], "KV")]
            pts += [(b[f"latents_{q}"], ev["methods"][f"bridge_{q}"]["accuracy"], q) for q in ("fp16", "int8", "int6", "int4")]
            a2.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", alpha=0.7, label=r["name"])
            for x, y, lab in pts:
                a2.annotate(lab, (x, 100 * y), fontsize=6)
    a1.set(xlabel="compression (passage tokens / soft tokens)", ylabel="bridge accuracy %", title="accuracy vs compression")
    a2.set(xscale="log", xlabel="bytes per request", ylabel="accuracy %", title="accuracy vs bytes")
    if a2.get_legend_handles_labels()[0]:
        a2.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / f"accuracy_{name}.png", dpi=120)
    plt.close(fig)


def add_ablation_flags(group) -> None:
    group.add_argument("--only", metavar="RUN[,RUN...]", help="train just these runs of the plan and write nothing else")
    group.add_argument("--collect", action="store_true", help="read finished runs back only; list those missing")


PARSER = DriverParser("python -m train.ablations", __doc__, "NAME", "the plan to run", add_ablation_flags,
                      choices=[*PLANS, "all"])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__)
        return 2
    args, common = PARSER.parse(argv)
    names = list(PLANS) if args.name == "all" else [args.name]
    only, collect = None, args.collect
    if args.only is not None:
        only = set(args.only.split(","))
        known = {run for name in names for run, _ in PLANS[name]}
        if only - known:
            raise SystemExit(f"--only: unknown runs {sorted(only - known)}; known: {sorted(known)}")
    out_dir = Path(parse_args(common).out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        rows = run_plan(name, common, out_dir, only, collect)
        if only is not None:
            continue
        missing = [r["name"] for r in rows if r.get("missing")]
        rows = [r for r in rows if not r.get("missing")]
        if not rows:
            print(f"[{name}] nothing to collect", flush=True)
            continue
        meta = {
            "device": rows[-1]["device"],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": commit(),
            "command": "python -m train.ablations " + " ".join(map(shlex.quote, [name] + common)),
            "environment": lw_environment(),
        }
        if missing:
            meta["missing_runs"] = missing
        (out_dir / f"{name}.json").write_text(json.dumps({**meta, "runs": rows}, indent=2))
        table = markdown(name, rows, meta)
        (out_dir / f"{name}.md").write_text(table)
        plots(name, rows, out_dir)
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
