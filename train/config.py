"""Training configuration: one dataclass, one flag per field, help text beside each field.

Decisions: the defaults train the embedded default pair (Gemma-3-270M -> SmolLM2-135M-Instruct) on
the 1-fact code relay in the ``soft_only`` protocol; every part of the stability recipe is a
boolean flag (``--no-<name>`` turns it off). ``--tokens`` overrides the preset's soft-token count.
``--batch-size`` is the global batch (all processes, all micro-batches), so a run's losses do not
depend on how many processes share it.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields

from pathlib import Path

from lw_runtime.models import EMBEDDED_SOURCE, EMBEDDED_TARGET
from lw_runtime.protocols import check_source_order
from lw_runtime.translator import CONFIG_NAME


def _f(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass
class TrainConfig:
    source: str = _f(EMBEDDED_SOURCE, "source model: embedded name, .gguf file, local folder or hub id")
    target: str = _f(EMBEDDED_TARGET, "target model: embedded name, .gguf file, local folder or hub id")
    task: str = _f("relay_code", "task: relay_code, relay_qa, relay_qa:N (N facts), arithmetic")
    eval_task: str = _f("", "task of the validation and test splits (empty = --task); another task measures generalisation")
    data: str = _f("", "dataset for --task squad, hotpotqa or gsm8k: a .json/.jsonl/.parquet file in its release or HF layout, a folder of them, or a hub name; without --eval-data, validation and test come from its own validation split (folder, hub) or 1 in 20 articles/questions each held out of the file (lw_runtime/data/loaders.py)")
    eval_data: str = _f("", "dataset of a squad/hotpotqa/gsm8k evaluation task, read from its validation split (a file: all of it) and dealt alternately to validation and test; needed when --eval-task is a dataset other than --task's")
    protocol: str = _f("soft_only", "soft_only (target sees soft tokens + anchor) or context (+ question as text)")
    source_order: str = _f("passage_first", "what the source reads first: passage_first or question_first (a causal source that reads the question first can mark the asked fact in the passage's states); no effect in context, where the source reads no question, so one flag serves a whole ladder")
    wide_answers: float = _f(0.0, "relay_qa training only: chance that a word fact's value (city, job, pet, colour) comes from a ~26k-word vocabulary disjoint from every validation/test pool, so the translator must carry words rather than memorise each kind's few dozen training values")
    wide_templates: float = _f(0.0, "relay tasks, training only: chance that a fact sentence or the question is worded from the kind's 4 training templates plus 13-19 extra ones (lw_runtime/data/wide_templates.py; none nearer to a validation/test wording than the 4 originals, tested), so the translator must read the fact rather than fit 4 wordings per slot")
    pseudo_words: float = _f(0.0, "relay_qa, training only, with --wide-answers: chance that each word of a wide answer is an invented word of 2-4 syllables (lw_runtime/data/pseudo_words.py; several tokens in both models, never a held-out word) instead of a one-token wide-vocabulary word, so the translator learns to carry spelling")
    multi_words: float = _f(0.0, "relay_qa, training only, with --wide-answers: chance that each word of a wide answer is a real English word that SmolLM2 splits into 2-4 pieces (lw_runtime/data/words_multi.txt, ~27k words; never a held-out word) instead of a one-token word; most held-out values the bridge misses are such words")
    preset: str = _f("embedded", "translator preset: embedded, tiny, efficient, conservative, aggressive, high_capacity")
    tokens: int = _f(0, "number of soft tokens K (0 = the preset's)")
    depth: int = _f(0, "translator depth (0 = the preset's)")
    heads: int = _f(0, "translator heads (0 = the preset's)")
    bottleneck: int = _f(0, "translator bottleneck dim (0 = the preset's)")
    source_layer: int = _f(9, "source layer whose hidden states the translator reads (0 = embeddings, -1 = last)")
    source_position: str = _f("conv", "order information for the translator's memory: none, learned (absolute table) or conv (causal depthwise conv over 4 source tokens; the default on weak evidence: on seeds 0-3 of the 4-digit relay it learned in 3 of 4 runs, none in 1 of 4, results/sweeps/README.md)")
    query_init_std: float = _f(1e-3, "std of the translator's learned queries at initialisation")
    gate_init: float = _f(0.0, "initial value of every residual gate (output scaled by tanh(gate))")
    init_from: str = _f("", "start from a saved translator folder (a run's OUT/translator or OUT/best) instead of a fresh one: a curriculum stage (e.g. 4 facts from the 1-fact translator) or fine-tuning; the architecture must match, the optimizer starts fresh")
    target_layers: int = _f(0, "keep only the target's first N blocks (0 = all); a cheaper setting for CPU tests")
    steps: int = _f(1200, "optimizer steps")
    batch_size: int = _f(32, "global batch: examples per optimizer step over all processes and micro-batches (per process per micro-batch: batch / (world x grad-accum))")
    grad_accum: int = _f(1, "micro-batches per optimizer step (gradient accumulation); --batch-size stays the global batch")
    lr: float = _f(1e-3, "translator learning rate (AdamW)")
    weight_decay: float = _f(0.01, "AdamW weight decay (not applied to gates, norms and queries)")
    warmup: int = _f(40, "linear warmup steps, then cosine decay")
    train_examples: int = _f(3000, "size of the synthetic training pool")
    val_examples: int = _f(64, "validation examples (early stopping)")
    test_examples: int = _f(200, "held-out test examples (unseen names, templates and answers)")
    eval_every: int = _f(200, "steps between validation evaluations")
    max_source_tokens: int = _f(256, "source texts longer than this are truncated from the left")
    max_new_tokens: int = _f(8, "tokens generated per answer at evaluation")
    baselines: bool = _f(True, "at the end, run every baseline on the test split (text upper bound, token budget, source alone, text relay, bridge at fp16/INT8/INT6/INT4)")
    relay_tokens: int = _f(16, "longest message the source may write in the text-relay baseline")
    rms_match: bool = _f(True, "scale soft tokens to the RMS of the target's embedding table")
    infonce: bool = _f(True, "InfoNCE anti-collapse loss between pooled soft tokens and pooled source states")
    infonce_weight: float = _f(0.05, "weight of the InfoNCE loss (active from half the warmup)")
    recon_steps: int = _f(0, "first N steps train only the reconstruction loss (a pretraining stage inside --steps), then the QA loss")
    recon_weight: float = _f(0.0, "weight of the reconstruction loss beside the QA loss after --recon-steps (0 = QA alone)")
    all_questions: bool = _f(False, "relay_qa:N training: each passage is asked about every fact in the same step (one source read per passage in context)")
    recon_eval: int = _f(32, "validation passages scored for reconstruction (token accuracy, exact, fact recall) when it is on")
    kl_teacher: bool = _f(False, "KL to a teacher: the target reading the full text the bridge replaces")
    kl_weight: float = _f(0.5, "weight of the teacher KL")
    spell_weight: float = _f(0.0, "weight of the spelling loss (0 = off): the first soft tokens are pulled (cosine) toward the target's input embeddings of the answer's tokens, one token per soft token, so the bridge learns to carry an answer's form, not only its meaning; training answers only. The term is W x the sum over pulled pairs / the answer tokens (+ EOS) of the batch, like the cross-entropy, so the weight per pair is below W; 'spell' in metrics.jsonl is the mean 1 - cos per pair")
    gate_lr_boost: bool = _f(True, "gates get --gate-lr-mult x the learning rate and no weight decay")
    gate_lr_mult: float = _f(3.0, "learning-rate multiplier for the gates (with --gate-lr-boost)")
    dropout: float = _f(0.1, "translator dropout")
    grad_clip: float = _f(1.0, "gradient clipping max norm (0 = off)")
    early_stopping: bool = _f(True, "stop when validation accuracy has not improved for --patience evaluations; restore the best")
    patience: int = _f(4, "evaluations without improvement before stopping")
    cache_source: bool = _f(True, "encode the training pool with the frozen source once, not every step")
    seed: int = _f(0, "seed for data, initialisation and order")
    shard_target: bool = _f(False, "shard the frozen target's blocks with FSDP2 across processes (default: replicated; shard only when it does not fit)")
    activation_checkpointing: bool = _f(False, "recompute the target's block activations in backward instead of keeping them")
    checkpoint_every: int = _f(200, "steps between checkpoints in out-dir/checkpoints (torch Distributed Checkpoint; 0 = off)")
    keep_checkpoints: int = _f(2, "complete checkpoints kept (older ones are deleted after a new one is written)")
    resume: bool = _f(False, "continue from the latest complete checkpoint in out-dir/checkpoints (same losses as an uninterrupted run)")
    max_nonfinite: int = _f(10, "steps with a non-finite loss or gradient are skipped; stop with an error once more than this many were")
    tensorboard: bool = _f(True, "also log to out-dir/tensorboard when the tensorboard package is installed")
    device: str = _f("auto", "cpu, cuda or auto")
    dtype: str = _f("auto", "model dtype: float32, bfloat16 or auto (bf16 on CUDA, fp32 on CPU)")
    out_dir: str = _f("runs/default", "where checkpoints, metrics.jsonl and the final translator go")
    threads: int = _f(0, "torch CPU threads (0 = torch's default)")
    progress: bool = _f(True, "show a progress bar")


# relay_qa's training augmentations (lw_runtime.data.tasks.RELAY_AUGMENTATIONS) -> their flags
AUGMENTATION_FLAGS = {"wide": "wide-answers", "wide_templates": "wide-templates", "pseudo_words": "pseudo-words",
                      "multi_words": "multi-words"}


def relay_augmentations(cfg: TrainConfig, keep_zero: bool = False) -> dict[str, float]:
    """The relay_qa augmentation keywords of ``cfg`` (those switched on, unless ``keep_zero``): passed
    to load_task only when on, so that tasks other than relay never see them."""
    values = {"wide": cfg.wide_answers, "wide_templates": cfg.wide_templates, "pseudo_words": cfg.pseudo_words,
              "multi_words": cfg.multi_words}
    return {k: v for k, v in values.items() if keep_zero or v > 0}


def check_config(cfg: TrainConfig) -> None:
    """Reject flag combinations that would be silently ignored, before any model is loaded."""
    check_source_order(cfg.source_order, "--source-order")
    for name, value in relay_augmentations(cfg, keep_zero=True).items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"--{AUGMENTATION_FLAGS[name]} is a probability in [0, 1], got {value}")
    if cfg.spell_weight < 0:
        raise ValueError(f"--spell-weight is a loss weight >= 0, got {cfg.spell_weight}")
    if cfg.pseudo_words > 0 and cfg.wide_answers == 0:
        raise ValueError("--pseudo-words replaces words of wide answers; set --wide-answers too")
    if cfg.multi_words > 0 and cfg.wide_answers == 0:
        raise ValueError("--multi-words replaces words of wide answers; set --wide-answers too")
    if cfg.pseudo_words + cfg.multi_words > 1.0:
        raise ValueError(f"--pseudo-words + --multi-words is the chance a wide word is either; got {cfg.pseudo_words + cfg.multi_words:g} > 1")
    if cfg.recon_steps < 0 or cfg.recon_weight < 0:
        raise ValueError(f"--recon-steps and --recon-weight are >= 0, got {cfg.recon_steps} and {cfg.recon_weight:g}")
    if cfg.recon_steps >= cfg.steps > 0:
        raise ValueError(f"--recon-steps {cfg.recon_steps} leaves no QA step of --steps {cfg.steps}")
    if cfg.init_from:
        if not (Path(cfg.init_from) / CONFIG_NAME).is_file():
            raise ValueError(f"--init-from {cfg.init_from}: no {CONFIG_NAME} there; pass a saved translator folder (a run's OUT/translator or OUT/best)")
    if cfg.wide_answers > 0 and cfg.task.split(":")[0] != "relay_qa":
        raise ValueError(f"--wide-answers replaces relay_qa word values; task {cfg.task!r} has none")
    if cfg.wide_templates > 0 and not cfg.task.startswith("relay_"):
        raise ValueError(f"--wide-templates rewords relay-task sentences; task {cfg.task!r} has none")
    from lw_runtime.data import DATASET_TASKS, check_source  # the dataset tasks, checked before any model loads

    eval_task = cfg.eval_task or cfg.task
    train_base, eval_base = cfg.task.partition(":")[0], eval_task.partition(":")[0]
    datasets = "/".join(DATASET_TASKS)
    if train_base in DATASET_TASKS and not cfg.data:
        raise ValueError(f"--task {cfg.task} reads a dataset: pass --data PATH (a .json/.jsonl/.parquet file, a folder of them, or a hub name)")
    if train_base not in DATASET_TASKS and cfg.data:
        raise ValueError(f"--data is the dataset of a {datasets} task; task {cfg.task!r} is generated and reads no file")
    if eval_base in DATASET_TASKS and not cfg.eval_data and eval_base != train_base:
        raise ValueError(f"--eval-task {eval_task} reads a dataset and --task {cfg.task} is another task, so --data cannot serve: pass --eval-data PATH")
    if eval_base not in DATASET_TASKS and cfg.eval_data:
        raise ValueError(f"--eval-data is the dataset of a {datasets} evaluation task; evaluation task {eval_task!r} is generated and reads no file")
    for flag, path in (("--data", cfg.data), ("--eval-data", cfg.eval_data)):
        if path:
            check_source(path, flag)
    if cfg.protocol == "context" and "gsm8k" in (train_base, eval_base):
        raise ValueError("--protocol context gives the source only the passage, and GSM8K has none (the problem is the question): use --protocol soft_only")


def take_flag(flags: list[str], name: str) -> str | None:
    """Remove ``name VALUE`` from a command line's ``flags`` and return VALUE (None when absent): for
    the drivers (sweep, ablations, curriculum) whose own flags sit among train.fsdp's."""
    if name not in flags:
        return None
    i = flags.index(name)
    if i + 1 >= len(flags):
        raise SystemExit(f"{name} needs a value")
    value = flags[i + 1]
    del flags[i : i + 2]
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.fsdp",
        description="Train a LatentWire translator (source hidden states -> soft tokens for the target).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float, "str": str}.get(f.type, str) if isinstance(f.type, str) else f.type
            parser.add_argument(flag, dest=f.name, type=kind, default=default, help=f.metadata["help"])
    return parser


def parse_args(argv=None) -> TrainConfig:
    return TrainConfig(**vars(build_parser().parse_args(argv)))
