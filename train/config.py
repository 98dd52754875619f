"""Training configuration in sections: one flat dataclass whose fields say their section, one flag each.

Sections (torchtitan's layout): model, bridge (the translator), dataset, loss, optim, eval, parallel,
checkpoint. A field names its section where it is defined (``lr: float = _optim(1e-3, "...")``);
``--help`` shows one argument group per section, and ``cfg.optim`` is an ``OptimConfig``, a frozen
dataclass of the section's current values (write with ``cfg.lr = ...`` or ``cfg.optim = replace(...)``).
Why flat storage, not nested dataclasses: ``cfg.<name>``, ``replace(cfg, name=...)``,
``TrainConfig(name=...)`` and ``asdict(cfg)`` (the flat ``config`` of every summary.json, which the
drivers, scripts and the demo read back) keep working unchanged, and a section cannot drift from its
fields. The data section is ``dataset`` because ``--data`` is the dataset path. Each help is one line
saying what a flag does; evidence behind defaults is in docs/training.md ("Flag reference"). The drivers
(sweep, curriculum, ablations) parse their own flags and train.fsdp's with one argparse parser
(``DriverParser``), so a misspelt flag fails before anything runs. Defaults train the embedded pair on
the 1-fact code relay in ``soft_only``; each part of the stability recipe has a ``--no-<name>`` switch.
Left out: config files (a sweep plan line is the unit of variation) and nested storage.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, make_dataclass

from pathlib import Path

from lw_runtime.models import EMBEDDED_SOURCE, EMBEDDED_TARGET
from lw_runtime.protocols import check_source_order
from lw_runtime.translator import CONFIG_NAME

# section -> title of its --help group; the order is --help's
SECTIONS = {
    "model": "the frozen source and target models",
    "bridge": "the translator trained from source states to target soft tokens",
    "dataset": "tasks, datasets, splits and relay training augmentations",
    "loss": "losses beside the answer cross-entropy",
    "optim": "optimisation: steps, batch, learning rate, schedule",
    "eval": "validation, early stopping and the test baselines",
    "parallel": "device, processes and memory",
    "checkpoint": "outputs, checkpoints, resume and logging",
}


def _section(name: str):
    """The field factory of one section: ``_optim(default, help)`` declares a field of ``optim``."""
    assert name in SECTIONS, name

    def section_field(default, help_text: str):
        return field(default=default, metadata={"help": help_text, "section": name})

    return section_field


_model, _bridge, _dataset, _loss, _optim, _eval, _parallel, _checkpoint = map(_section, SECTIONS)


@dataclass
class TrainConfig:
    # model
    source: str = _model(EMBEDDED_SOURCE, "source model: embedded name, .gguf file, local folder or hub id")
    target: str = _model(EMBEDDED_TARGET, "target model: embedded name, .gguf file, local folder or hub id")
    source_layer: int = _model(9, "source layer the translator reads (0 = embeddings, -1 = last)")
    target_layers: int = _model(0, "keep only the target's first N blocks (0 = all); cheaper for CPU tests")
    max_source_tokens: int = _model(256, "source texts longer than this are truncated from the left")
    cache_source: bool = _model(True, "encode the training pool with the frozen source once, not every step")
    dtype: str = _model("auto", "model dtype: float32, bfloat16 or auto (bf16 on CUDA, fp32 on CPU)")
    tf32: str = _model("auto", "fp32 matmuls on CUDA as TF32: on, off, auto (on when --dtype is bf16)")
    # bridge
    preset: str = _bridge("embedded", "translator preset: embedded, tiny, efficient, conservative, aggressive, "
                                      "high_capacity")
    tokens: int = _bridge(0, "number of soft tokens K (0 = the preset's)")
    depth: int = _bridge(0, "translator depth (0 = the preset's)")
    heads: int = _bridge(0, "translator heads (0 = the preset's)")
    bottleneck: int = _bridge(0, "translator bottleneck dim (0 = the preset's)")
    source_position: str = _bridge("conv", "order information for the translator's memory: none, learned or conv")
    query_init_std: float = _bridge(1e-3, "std of the translator's learned queries at initialisation")
    gate_init: float = _bridge(1.0, "initial value of every residual gate (output scaled by tanh(gate)); 0 closes them")
    dropout: float = _bridge(0.1, "translator dropout")
    rms_match: bool = _bridge(True, "scale soft tokens to the RMS of the target's embedding table")
    init_from: str = _bridge("", "start from a saved translator folder (OUT/translator or OUT/best), same shape")
    # dataset
    task: str = _dataset("relay_code", "task: relay_code, relay_qa, relay_qa:N (N facts) or :N-M (a mix), arithmetic, "
                                       "squad, hotpotqa, gsm8k")
    eval_task: str = _dataset("", "task of the validation and test splits (empty = --task)")
    data: str = _dataset("", "dataset of a squad/hotpotqa/gsm8k task: .json/.jsonl/.parquet file, folder or hub name")
    eval_data: str = _dataset("", "dataset of a squad/hotpotqa/gsm8k --eval-task other than --task's (its validation split)")
    protocol: str = _dataset("soft_only", "soft_only (target sees soft tokens + anchor) or context (+ question as text)")
    source_order: str = _dataset("passage_first", "what the source reads first in soft_only: passage_first or question_first")
    wide_answers: float = _dataset(0.0, "relay_qa training: chance a word answer comes from a ~26k-word wide vocabulary")
    wide_templates: float = _dataset(0.0, "relay training: chance a sentence is worded from extra training templates")
    pseudo_words: float = _dataset(0.0, "with --wide-answers: chance each wide word is an invented 2-4 syllable word")
    multi_words: float = _dataset(0.0, "with --wide-answers: chance each wide word is a real word of 2-4 target tokens")
    train_examples: int = _dataset(3000, "size of the training pool")
    val_examples: int = _dataset(64, "validation examples (early stopping)")
    test_examples: int = _dataset(200, "held-out test examples (unseen names, templates and answers)")
    all_questions: bool = _dataset(False, "relay_qa:N training: ask about every fact of a passage in the same step")
    # loss
    infonce: bool = _loss(True, "InfoNCE anti-collapse loss between pooled soft tokens and pooled source states")
    infonce_weight: float = _loss(0.05, "weight of the InfoNCE loss (active from half the warmup)")
    recon_steps: int = _loss(0, "first N of --steps train only the reconstruction loss, then the QA loss")
    recon_weight: float = _loss(0.0, "weight of the reconstruction loss beside the QA loss (0 = QA alone)")
    kl_teacher: bool = _loss(False, "KL to a teacher: the target reading the full text the bridge replaces")
    kl_weight: float = _loss(0.5, "weight of the teacher KL")
    spell_weight: float = _loss(0.0, "weight of the loss pulling soft tokens to the answer's embeddings (0 = off)")
    # optim
    steps: int = _optim(2000, "optimizer steps")
    batch_size: int = _optim(32, "global batch: examples per optimizer step over all processes and micro-batches")
    grad_accum: int = _optim(1, "micro-batches per optimizer step; --batch-size stays the global batch")
    lr: float = _optim(1e-3, "translator learning rate (AdamW)")
    weight_decay: float = _optim(0.01, "AdamW weight decay (not applied to gates, norms and queries)")
    warmup: int = _optim(40, "linear warmup steps, then cosine decay")
    gate_lr_boost: bool = _optim(True, "gates get --gate-lr-mult x the learning rate and no weight decay")
    gate_lr_mult: float = _optim(3.0, "learning-rate multiplier for the gates (with --gate-lr-boost)")
    grad_clip: float = _optim(1.0, "gradient clipping max norm (0 = off)")
    max_nonfinite: int = _optim(10, "steps with a non-finite loss or gradient are skipped; stop after more than N")
    seed: int = _optim(0, "seed for data, initialisation and order")
    # eval
    eval_every: int = _eval(200, "steps between validation evaluations")
    early_stopping: bool = _eval(True, "stop when validation accuracy stalls for --patience evaluations; keep the best")
    patience: int = _eval(4, "evaluations without improvement before stopping")
    patience_floor: float = _eval(0.1, "patience counts once validation accuracy reaches this; below it a run trains on")
    max_new_tokens: int = _eval(8, "tokens generated per answer at evaluation")
    recon_eval: int = _eval(32, "validation passages scored for reconstruction when it is on")
    baselines: bool = _eval(True, "at the end, score every baseline on the test split (text, relay, INT8/6/4 bridge)")
    relay_tokens: int = _eval(16, "longest message the source may write in the text-relay baseline")
    # parallel
    device: str = _parallel("auto", "cpu, cuda or auto")
    threads: int = _parallel(0, "torch CPU threads (0 = torch's default)")
    shard_target: bool = _parallel(False, "shard the frozen target's blocks with FSDP2 across processes instead of replicating")
    activation_checkpointing: bool = _parallel(False, "recompute the target's block activations in backward")
    compile: str = _parallel("auto", "compiled fixed-shape step: auto (CUDA; eager on CPU), on, waited (not pipelined), off")
    compile_regions: bool = _parallel(False, "captured step: compile one target block, reuse it for every block (faster compile)")
    # checkpoint
    out_dir: str = _checkpoint("runs/default", "where checkpoints, metrics.jsonl and the final translator go")
    checkpoint_every: int = _checkpoint(200, "steps between checkpoints in out-dir/checkpoints (0 = off)")
    keep_checkpoints: int = _checkpoint(2, "complete checkpoints kept (older ones are deleted)")
    resume: bool = _checkpoint(False, "continue from the latest complete checkpoint in out-dir/checkpoints")
    tensorboard: bool = _checkpoint(True, "also log to out-dir/tensorboard when tensorboard is installed")
    progress: bool = _checkpoint(True, "show a progress bar")

    def sections(self) -> dict:
        """Every section as its frozen dataclass: ``{"model": ModelConfig(...), ...}``."""
        return {name: getattr(self, name) for name in SECTIONS}

    @classmethod
    def from_sections(cls, sections: Mapping) -> TrainConfig:
        """The config of ``{section: its dataclass or a dict of its fields}``; a section left out keeps
        its defaults. ``TrainConfig.from_sections(cfg.sections()) == cfg``."""
        cfg = cls()
        for name, values in sections.items():
            if name not in SECTIONS:
                raise ValueError(f"unknown config section {name!r}; sections: {', '.join(SECTIONS)}")
            setattr(cfg, name, SECTION_CLASSES[name](**values) if isinstance(values, Mapping) else values)
        return cfg


# the fields of each section, in declaration order
SECTION_FIELDS = {name: tuple(f.name for f in fields(TrainConfig) if f.metadata["section"] == name) for name in SECTIONS}


def _section_class(name: str) -> type:
    """A frozen dataclass with the fields of section ``name``: same names, types, defaults and help."""
    by_name = {f.name: f for f in fields(TrainConfig)}
    cls = make_dataclass(
        name.title() + "Config",
        [(n, by_name[n].type, field(default=by_name[n].default, metadata=by_name[n].metadata)) for n in SECTION_FIELDS[name]],
        frozen=True,
    )
    cls.__module__ = __name__
    cls.__doc__ = f"train.fsdp's {name} section: {SECTIONS[name]}."
    return cls


def _section_property(name: str) -> property:
    def get(cfg: TrainConfig):
        return SECTION_CLASSES[name](**{n: getattr(cfg, n) for n in SECTION_FIELDS[name]})

    def set_(cfg: TrainConfig, section) -> None:
        if not isinstance(section, SECTION_CLASSES[name]):
            raise TypeError(f"cfg.{name} takes a {SECTION_CLASSES[name].__name__}, got {type(section).__name__}")
        for n in SECTION_FIELDS[name]:
            setattr(cfg, n, getattr(section, n))

    return property(get, set_, doc=f"the {name} section ({SECTIONS[name]}) as a frozen dataclass")


SECTION_CLASSES = {name: _section_class(name) for name in SECTIONS}
(ModelConfig, BridgeConfig, DatasetConfig, LossConfig, OptimConfig, EvalConfig, ParallelConfig,
 CheckpointConfig) = SECTION_CLASSES.values()
for _name in SECTIONS:
    setattr(TrainConfig, _name, _section_property(_name))


# relay_qa's training augmentations (train.data.tasks.RELAY_AUGMENTATIONS) -> their flags
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
    if not 0.0 <= cfg.patience_floor <= 1.0:
        raise ValueError(f"--patience-floor is a validation accuracy in [0, 1], got {cfg.patience_floor}")
    if cfg.tf32 not in ("auto", "on", "off"):
        raise ValueError(f"--tf32 is on, off or auto, got {cfg.tf32!r}")
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
    if cfg.all_questions and cfg.protocol == "context" and cfg.spell_weight > 0:
        raise ValueError("--spell-weight pulls soft tokens toward one answer; with --all-questions in context one "
                         "passage's soft tokens serve every question, so the two do not combine")
    if cfg.compile_regions and cfg.activation_checkpointing:
        raise ValueError("--compile-regions does not reach blocks under --activation-checkpointing "
                         "(checkpoint traces them with its own operator): use one of the two")
    if cfg.compile_regions and (cfg.compile == "off" or cfg.shard_target):
        raise ValueError("--compile-regions shapes the captured step's compile; with "
                         f"{'--compile off' if cfg.compile == 'off' else '--shard-target'} the step runs eagerly")
    if cfg.compile not in ("off", "on", "waited", "auto"):
        raise ValueError(f"--compile is off, on, waited or auto, got {cfg.compile!r}")
    if cfg.compile in ("on", "waited"):
        from .captured import check_capturable

        check_capturable(cfg)
    if cfg.init_from:
        if not (Path(cfg.init_from) / CONFIG_NAME).is_file():
            raise ValueError(f"--init-from {cfg.init_from}: no {CONFIG_NAME} there; pass a saved translator folder (a run's OUT/translator or OUT/best)")
    if cfg.wide_answers > 0 and cfg.task.split(":")[0] != "relay_qa":
        raise ValueError(f"--wide-answers replaces relay_qa word values; task {cfg.task!r} has none")
    if cfg.wide_templates > 0 and not cfg.task.startswith("relay_"):
        raise ValueError(f"--wide-templates rewords relay-task sentences; task {cfg.task!r} has none")
    from .data import DATASET_TASKS, check_source  # the dataset tasks, checked before any model loads

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


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each flag's default after its help (unless empty or None); a driver's description as written."""

    def __init__(self, prog, **kw):
        super().__init__(prog, max_help_position=34, **kw)

    def _get_help_string(self, action):
        return action.help if action.default in ("", None) else super()._get_help_string(action)


_METAVARS = {"init_from": "DIR", "data": "PATH", "eval_data": "PATH"}


def _add_field(container, f) -> None:
    flag, help_text = "--" + f.name.replace("_", "-"), f.metadata["help"]
    if f.type == "bool":
        container.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
    else:
        kind = {"int": int, "float": float, "str": str}[f.type]  # the annotation, a string (postponed annotations)
        metavar = {int: "N", float: "X"}.get(kind) or _METAVARS.get(f.name, f.name.rsplit("_", 1)[-1].upper())
        container.add_argument(flag, dest=f.name, type=kind, default=f.default, metavar=metavar, help=help_text)


def add_train_flags(parser: argparse.ArgumentParser, skip: set[str] = frozenset()) -> None:
    """Add one flag per TrainConfig field to ``parser``, one argument group per section; the flags in
    ``skip`` are left out (a driver that defines them itself)."""
    by_name = {f.name: f for f in fields(TrainConfig)}
    for section, title in SECTIONS.items():
        group = parser.add_argument_group(section, title)
        for name in SECTION_FIELDS[section]:
            if "--" + name.replace("_", "-") not in skip:
                _add_field(group, by_name[name])


def build_parser(prog: str = "python -m train.fsdp", add_help: bool = True) -> argparse.ArgumentParser:
    """train.fsdp's parser: one flag per TrainConfig field, one argument group per section."""
    parser = argparse.ArgumentParser(
        prog=prog, usage=f"{prog} [flags]", add_help=add_help, formatter_class=_HelpFormatter,
        description="Train a LatentWire translator (source hidden states -> soft tokens for the target).",
        epilog="stages:\n  --task A,B,... trains one stage per task, each from the previous stage's translator\n"
               "  (python -m train.curriculum, into OUT/stage<i>_<task>); --steps, --lr, --batch-size and\n"
               "  --train-examples may then give one value per stage: --task relay_qa:1,relay_qa:4 --steps 1000,2000",
    )
    add_train_flags(parser)
    return parser


def parse_args(argv=None, prog: str = "python -m train.fsdp") -> TrainConfig:
    """The TrainConfig of train.fsdp's command line ``argv``; ``prog`` names the caller in errors."""
    return TrainConfig(**vars(build_parser(prog).parse_args(argv)))


class DriverParser:
    """The command line of a driver (sweep, curriculum, ablations): ``POSITIONAL [flags]``, the driver's
    own flags (``add_flags(group)`` adds them to an argparse group or parser) mixed with train.fsdp's. One argparse parser holds both kinds,
    the driver's group first, then train.fsdp's sections; a driver flag replaces the train.fsdp flag of
    the same name (curriculum's per-stage ``--steps``). It checks the whole line and serves ``--help``;
    ``parse`` returns the driver's flags and the train.fsdp flags as written, in order, for its runs."""

    def __init__(self, prog: str, description: str, positional: str, positional_help: str,
                 add_flags: Callable, choices: list[str] | None = None):
        self.prog, self.description, self.add_flags = prog, description, add_flags
        self.positional, self.positional_help, self.choices = positional, positional_help, choices

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=self.prog, usage=f"{self.prog} {self.positional} [flags]",
                                         description=self.description, formatter_class=_HelpFormatter)
        parser.add_argument(self.positional.lower(), metavar=self.positional, choices=self.choices,
                            help=self.positional_help + (f": {', '.join(self.choices)}" if self.choices else ""))
        self.add_flags(parser.add_argument_group(self.prog.removeprefix("python -m "), "flags of the driver itself"))
        add_train_flags(parser, skip=set(parser._option_string_actions))  # the driver's flags so far, -h too
        return parser

    def split(self, flags: list[str]) -> tuple[argparse.Namespace, list[str]]:
        """(the driver's flags, the others in their order) of ``flags``, without checking the others."""
        own = argparse.ArgumentParser(prog=self.prog, add_help=False)
        self.add_flags(own)
        return own.parse_known_args(flags)

    def parse(self, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
        """``[POSITIONAL, *flags]`` -> (the positional and the driver's flags, the train.fsdp flags). An
        unknown or misspelt flag, a bad value or a missing positional exits with argparse's message."""
        parser = self.parser()
        parsed = parser.parse_args(argv)
        if argv[0].startswith("-"):
            parser.error(f"{self.positional} comes first, before the flags")
        own, train_flags = self.split(argv[1:])
        setattr(own, self.positional.lower(), getattr(parsed, self.positional.lower()))
        return own, train_flags
