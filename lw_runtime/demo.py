"""``python -m lw_runtime.demo``: the bridge answering held-out questions on a CPU, in seconds.

The embedded source (Gemma-3-270M) reads each test example, the small translator shipped in
``lw_runtime/assets/embedded_translator/`` turns its states into soft tokens, the sender packs them
into wire packets (``encode``) and the receiver answers from the packets alone
(``generate(target, packets=...)``); the demo prints a few answers beside the target's own and the
gold, then bridged vs target-alone accuracy on ``--examples`` held-out examples.
Decisions:
- What to ask comes from ``provenance.json`` beside the weights (task, protocol, source order,
  seed, answer length, target depth: the run's own settings), so the test split is drawn as
  training drew it (``load_task(task, "test", n, seed)``, a prefix of the run's test set) and the
  run's figures, printed alongside, are comparable. One difference: the soft tokens cross the wire
  as 8-bit packets here, where training measured its soft tokens unpacked (fp32 on a CPU, bf16 on a GPU).
- Weights ship in bf16 (half the bytes); ``from_pretrained`` copies them into the fp32 module, so
  the demo computes in fp32 like training's CPU evaluation.
- All examples go in one message: one source forward, one encode, one generate per side; the
  target-alone side generates each distinct prompt once (under soft_only all are the bare anchor).
- A missing or malformed asset raises a typed error naming the file and how to make it, before any
  model loads; ``--package RUN_DIR`` writes an asset (bf16 weights + provenance) from a train.fsdp run.
- The examples come from training's task generators (``train.data``), imported inside the functions
  that draw them: the demo is not serving code, and no lw_runtime module imports train/ at import time.
Left out: dataset tasks (their files cannot be assumed here), sampling, streaming
(examples/serve_packets.py serves packets over HTTP).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .generate import generate
from .models import EMBEDDED_SOURCE, EMBEDDED_TARGET, load_model
from .packets import encode
from .protocols import PROTOCOLS, check_source_order, exact_match, extract_answer, source_text, target_alone_prompt, target_prompt
from .translator import CONFIG_NAME, WEIGHTS_NAME, BottleneckedGatedTranslator

if TYPE_CHECKING:
    from train.data import Example

DEFAULT_TRANSLATOR = Path(__file__).resolve().parent / "assets" / "embedded_translator"
PROVENANCE_NAME = "provenance.json"
HOW_TO_MAKE = (
    "make one: train with `python -m train.fsdp --out-dir OUT [flags]` (docs/training.md), then "
    "`python -m lw_runtime.demo --package OUT --translator {directory} --command '<that train command>' "
    "--commit <its commit>`, which writes the run's translator (bf16) and a provenance.json there"
)
SHOWN_TEXT_CHARS = 110


class DemoError(Exception):
    """The demo cannot run with the translator it was given; the message says what to do."""


class MissingTranslatorError(DemoError, FileNotFoundError):
    """The translator folder lacks a file the demo needs (config, weights or provenance)."""


class ProvenanceError(DemoError, ValueError):
    """provenance.json is unreadable, incomplete, or disagrees with the translator beside it."""


@dataclass(frozen=True)
class Provenance:
    """The training run behind a packaged translator: what the demo asks, and what the run measured."""

    task: str  # a generated task (relay_code, relay_qa:N, arithmetic, ...)
    protocol: str  # soft_only | context
    source_order: str  # passage_first | question_first
    seed: int  # the run's --seed: the demo's default test draw
    steps: int
    max_new_tokens: int  # the run's --max-new-tokens
    max_source_tokens: int  # the run's --max-source-tokens
    target_layers: int  # the run's --target-layers (0 = the whole target)
    test_examples: int
    test_bridged_acc: float
    test_target_alone_acc: float
    commit: str
    date: str
    device: str
    command: str


def read_provenance(directory: Path) -> Provenance:
    path = directory / PROVENANCE_NAME
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ProvenanceError(f"{path} is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ProvenanceError(f"{path} must hold a JSON object")
    known = {f.name: f.type for f in fields(Provenance)}
    missing, unknown = [k for k in known if k not in raw], sorted(set(raw) - set(known))
    if missing or unknown:
        raise ProvenanceError(f"{path}: missing fields {missing}, unknown fields {unknown}; it needs exactly {list(known)}")
    types = {"str": str, "int": int, "float": (int, float)}
    for name, kind in known.items():
        if not isinstance(raw[name], types[kind]) or isinstance(raw[name], bool):
            raise ProvenanceError(f"{path}: {name} must be of type {kind}, got {raw[name]!r}")
    prov = Provenance(**raw)
    if prov.protocol not in PROTOCOLS:
        raise ProvenanceError(f"{path}: protocol {prov.protocol!r} is not one of {PROTOCOLS}")
    try:
        check_source_order(prov.source_order, "source_order")
    except ValueError as e:
        raise ProvenanceError(f"{path}: {e}") from None
    from train.data import DATASET_TASKS, load_task

    if prov.task.partition(":")[0] in DATASET_TASKS:
        raise ProvenanceError(f"{path}: task {prov.task!r} reads a dataset; the demo draws generated tasks only")
    try:
        load_task(prov.task, "test", 1, seed=prov.seed)
    except ValueError as e:
        raise ProvenanceError(f"{path}: task {prov.task!r}: {e}") from None
    return prov


def check_asset(directory: Path) -> None:
    """MissingTranslatorError naming the first file the demo needs that ``directory`` lacks."""
    for name in (CONFIG_NAME, WEIGHTS_NAME, PROVENANCE_NAME):
        if not (directory / name).is_file():
            raise MissingTranslatorError(f"no translator at {directory}: {directory / name} is missing; "
                                         + HOW_TO_MAKE.format(directory=directory))


def load_translator(directory: Path) -> tuple[BottleneckedGatedTranslator, Provenance]:
    """The packaged translator in fp32 (whatever dtype its weights were saved in) and its provenance."""
    directory = Path(directory)
    check_asset(directory)
    prov = read_provenance(directory)
    translator = BottleneckedGatedTranslator.from_pretrained(directory).float().eval()
    if translator.config.source_order != prov.source_order:
        raise ProvenanceError(f"{directory}: provenance says source_order {prov.source_order!r}, the translator's "
                              f"config {translator.config.source_order!r}")
    return translator, prov


@dataclass
class DemoResult:
    examples: list[Example]
    bridged: list[str]  # the target's generated text, from the packets
    alone: list[str]  # the target's generated text, without soft tokens
    bridged_correct: int
    alone_correct: int
    packet_bytes: int
    seconds: float


def _short(text: str) -> str:
    text = " / ".join(text.split("\n"))
    return text if len(text) <= SHOWN_TEXT_CHARS else text[: SHOWN_TEXT_CHARS - 3] + "..."


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _pct(correct: int, n: int) -> str:
    return f"{100 * correct / n:5.1f}% ({correct}/{n})"


def _generate_distinct(target, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy answers to ``prompts``, each distinct prompt generated once (under soft_only every
    target-alone prompt is the bare anchor, so 50 rows are one)."""
    distinct = list(dict.fromkeys(prompts))
    answers = dict(zip(distinct, generate(target, texts=distinct, max_new_tokens=max_new_tokens)))
    return [answers[p] for p in prompts]


def run_demo(translator_dir: str | Path = DEFAULT_TRANSLATOR, examples: int = 50, show: int = 5,
             seed: int | None = None, bits: int = 8) -> DemoResult:
    """Answer ``examples`` held-out test examples over the wire and without it; print as it goes."""
    if examples < 1 or show < 0:
        raise ValueError(f"--examples must be >= 1 and --show >= 0, got {examples} and {show}")
    started = time.perf_counter()
    translator_dir = Path(translator_dir)
    translator, prov = load_translator(translator_dir)
    seed = prov.seed if seed is None else seed
    cfg = translator.config
    print(f"translator: {translator_dir} ({cfg.num_soft_tokens} soft tokens; {prov.task}, {prov.protocol}, "
          f"{prov.source_order}; {prov.steps} steps on {prov.device}, commit {prov.commit}, {prov.date})", flush=True)
    from train.data import load_task

    test = load_task(prov.task, "test", examples, seed=seed)

    source = load_model(cfg.source_model or EMBEDDED_SOURCE)
    target = load_model(cfg.target_model or EMBEDDED_TARGET)
    translator.check_compatible(source.hidden_size, target.hidden_size)
    if prov.target_layers:  # the translator was trained against the target's first N blocks
        from train.source_cache import truncate_blocks

        truncate_blocks(target, prov.target_layers)
    print(f"models: source {source.name}, target {target.name}"
          f"{f' (first {prov.target_layers} blocks)' if prov.target_layers else ''}; "
          f"ready after {time.perf_counter() - started:.1f}s", flush=True)

    phase = time.perf_counter()
    packets = encode(source, translator, [source_text(e, prov.protocol, prov.source_order) for e in test],
                     bits=bits, source_max_tokens=prov.max_source_tokens)
    packet_bytes = sum(len(p) for p in packets)
    print(f"sender: {len(test)} examples -> {len(packets)} packet(s), {packet_bytes} bytes ({bits}-bit) "
          f"in {time.perf_counter() - phase:.1f}s", flush=True)
    phase = time.perf_counter()
    bridged = generate(target, packets=packets, translator=translator,
                       texts=[target_prompt(e, prov.protocol) for e in test], max_new_tokens=prov.max_new_tokens)
    print(f"receiver: answered from the packets in {time.perf_counter() - phase:.1f}s", flush=True)
    phase = time.perf_counter()
    alone = _generate_distinct(target, [target_alone_prompt(e, prov.protocol) for e in test], prov.max_new_tokens)
    print(f"target alone: answered in {time.perf_counter() - phase:.1f}s", flush=True)

    bridged_ok = [exact_match(b, e.answer) for b, e in zip(bridged, test)]
    alone_ok = [exact_match(a, e.answer) for a, e in zip(alone, test)]
    for i, e in enumerate(test[:show]):
        print(f"[{i + 1}] source reads: {_short(source_text(e, prov.protocol, prov.source_order))}")
        if prov.protocol == "context":
            print(f"    target reads: {_short(target_prompt(e, prov.protocol))}")
        print(f"    gold: {_quoted(e.answer)} | bridged: {_quoted(extract_answer(bridged[i]))} "
              f"{'right' if bridged_ok[i] else 'wrong'} | target alone: {_quoted(extract_answer(alone[i]))} "
              f"{'right' if alone_ok[i] else 'wrong'}")
    n = len(test)
    print(f"accuracy on {n} held-out test examples ({prov.task} test split, seed {seed}):")
    print(f"  bridged      : {_pct(sum(bridged_ok), n)}")
    print(f"  target alone : {_pct(sum(alone_ok), n)}")
    print(f"  training run : bridged {100 * prov.test_bridged_acc:.1f}%, target alone "
          f"{100 * prov.test_target_alone_acc:.1f}% on its {prov.test_examples} test examples (soft tokens unpacked, on {prov.device})")
    seconds = time.perf_counter() - started
    print(f"done in {seconds:.1f}s", flush=True)
    return DemoResult(test, bridged, alone, sum(bridged_ok), sum(alone_ok), packet_bytes, seconds)


def package_run(run_dir: str | Path, directory: str | Path, command: str, commit: str) -> Provenance:
    """Write a train.fsdp run (``run_dir``: its --out-dir) as a demo asset: bf16 weights and provenance."""
    run_dir, directory = Path(run_dir), Path(directory)
    summary_path = run_dir / "summary.json"
    for needed in (summary_path, run_dir / "translator" / CONFIG_NAME, run_dir / "translator" / WEIGHTS_NAME):
        if not needed.is_file():
            raise MissingTranslatorError(f"{run_dir} is not a finished train.fsdp run: {needed} is missing")
    summary = json.loads(summary_path.read_text())
    cfg = summary["config"]
    prov = Provenance(
        task=cfg["eval_task"] or cfg["task"], protocol=cfg["protocol"], source_order=cfg["source_order"],
        seed=cfg["seed"], steps=summary["steps_run"], max_new_tokens=cfg["max_new_tokens"],
        max_source_tokens=cfg["max_source_tokens"], target_layers=cfg["target_layers"],
        test_examples=summary["test_examples"], test_bridged_acc=summary["test_bridged_acc"],
        test_target_alone_acc=summary["test_target_alone_acc"], commit=commit,
        date=datetime.fromtimestamp(summary_path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d"),
        device=summary["device"], command=command,
    )
    BottleneckedGatedTranslator.from_pretrained(run_dir / "translator").save_pretrained(directory, dtype=torch.bfloat16)
    (directory / PROVENANCE_NAME).write_text(json.dumps(asdict(prov), indent=2) + "\n")
    read_provenance(directory)  # what was written reads back
    return prov


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lw_runtime.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--translator", default=str(DEFAULT_TRANSLATOR),
                        help="folder with translator_config.json, translator.safetensors and provenance.json "
                             "(default: the one shipped in the package)")
    parser.add_argument("--examples", type=int, default=50, help="held-out test examples to score")
    parser.add_argument("--show", type=int, default=5, help="examples printed with their answers")
    parser.add_argument("--seed", type=int, default=None, help="test draw (default: the training run's seed)")
    parser.add_argument("--bits", type=int, default=8, choices=(4, 6, 8, 16), help="wire precision of the soft tokens")
    parser.add_argument("--package", metavar="RUN_DIR", default=None,
                        help="instead of running: write the train.fsdp run in RUN_DIR into --translator as an asset")
    parser.add_argument("--command", default=None, help="with --package: the command that trained the run")
    parser.add_argument("--commit", default=None, help="with --package: the commit that trained the run")
    args = parser.parse_args(argv)
    if args.package is not None:
        if not args.command or not args.commit:
            parser.error("--package needs --command and --commit (they go into provenance.json)")
        prov = package_run(args.package, args.translator, args.command, args.commit)
        print(f"wrote {args.translator}: {prov.task}, bridged {100 * prov.test_bridged_acc:.1f}% on {prov.test_examples}")
        return 0
    run_demo(args.translator, args.examples, args.show, args.seed, args.bits)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DemoError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
