"""Loaders for GSM8K, SQuAD (v1.1 and v2) and HotpotQA into `Example`s.

Decisions:
- Each loader reads the dataset's original release format (GSM8K jsonl, SQuAD nested json,
  HotpotQA json list), the Hugging Face column layout (parquet via pyarrow, or json/jsonl exports
  of it), or, for a name that is not a local path, the hub through `datasets.load_dataset`
  (imported lazily; `datasets` is an optional extra). "name:config" picks a hub config; GSM8K
  defaults to "main" and HotpotQA to "distractor".
- A string is a local path if it exists, has a .json/.jsonl/.parquet suffix, or starts with
  "/", "." or "~"; a missing local path is a DatasetFormatError, never a hub download.
- A directory is searched (recursively) for files whose name contains the split ("dev"/"val" count
  as validation), e.g. `dev-v1.1.json` or `main/test-00000-of-00001.parquet`.
- Every malformed input raises DatasetFormatError naming the file, the record and the field.
  Records are checked as they are converted, so `limit` also bounds the checking.
- `split` labels the examples (and picks files/hub splits); a single file is taken as one split.
- Answers: GSM8K's number after "####" without thousands commas (the solution's last line is
  rewritten to match); SQuAD's first gold answer, all of them in meta["answers"]; unanswerable
  SQuAD v2 questions get answer "" and meta["is_impossible"] True unless `answerable_only`.
- HotpotQA context paragraphs are flattened to "Title: sentence sentence ..." lines joined by "\n".

Splits for training (`load_dataset_split`, what `--data` / `--eval-data` of train.fsdp read):
- Training reads the train source whole if it is a file, else its "train" split. Evaluation reads
  the evaluation source's "validation" split (a folder or hub name without one: its "test" split,
  as GSM8K; a file: all of it) and deals its groups alternately to validation and test.
- When evaluation and training read the same file (no `--eval-data`, or the same file again),
  `hold_out` carves it instead: group i goes to test when i % 20 == 0, to validation when
  i % 20 == 1, else to training (5% / 5% / 90%, by position, so the same file always splits alike
  whatever the limits). A folder or hub name never needs this: its own splits serve.
- A group is a SQuAD article (title; the passage when untitled), else a passage, else a question,
  so no held-out article, passage or question is ever trained on; the splits are disjoint by
  construction and the trainer's check_disjoint confirms it. Limits take the first n of a split.
- Examples keep their ids (the record in its source) and are relabelled with the split they serve.
- SQuAD v2's unanswerable questions are dropped here (`answerable_only` defaults to True): the
  protocols have no way to abstain, and an empty gold answer would score every empty output.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import Any

from .example import DatasetFormatError, Example, check_split

FILE_SUFFIXES = (".json", ".jsonl", ".parquet")
HELD_OUT_EVERY = 20  # hold_out: 1 group in 20 to test, 1 to validation
SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "dev", "val", "valid"), "test": ("test",)}
NUMBER = re.compile(r"-?\d+(\.\d+)?")


# ---------------------------------------------------------------- reading files and hub splits

def _is_local(path_or_name: str) -> bool:
    path = Path(path_or_name).expanduser()
    return (path.exists() or path.suffix in FILE_SUFFIXES
            or path_or_name.startswith(("/", ".", "~")))


def _split_files(directory: Path, split: str) -> list[Path]:
    aliases = SPLIT_ALIASES[split]
    found = []
    for path in sorted(directory.rglob("*")):
        tokens = re.split(r"[^a-z0-9]+", path.name.lower())
        if path.is_file() and path.suffix in FILE_SUFFIXES and any(alias in tokens for alias in aliases):
            found.append(path)
    if not found:
        raise DatasetFormatError(f"{directory}: no .json/.jsonl/.parquet file for split {split!r} "
                                 f"(looked for names containing {aliases})")
    return found


def _read_parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"reading {path} needs pyarrow: pip install 'latentwire[datasets]'") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise DatasetFormatError(f"{path}: not a readable parquet file ({error})") from error


def _read_json_or_lines(path: Path) -> Any:
    """The parsed JSON document, or a list of the parsed lines of a JSON-lines file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DatasetFormatError(f"{path}: not UTF-8 text ({error})") from error
    if not text.strip():
        raise DatasetFormatError(f"{path}: file is empty (no records)")
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if path.suffix != ".jsonl":
        try:
            return json.loads(text)
        except json.JSONDecodeError as whole_error:
            try:
                json.loads(lines[0][1])
            except json.JSONDecodeError:
                raise DatasetFormatError(f"{path}: invalid JSON at line {whole_error.lineno} "
                                         f"column {whole_error.colno}: {whole_error.msg}") from whole_error
    records = []
    for index, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DatasetFormatError(f"{path}: record {index} (line {number}): invalid JSON: {error.msg}") from error
    return records


def _read_file(path: Path) -> Any:
    return _read_parquet(path) if path.suffix == ".parquet" else _read_json_or_lines(path)


def _hub_rows(name: str, split: str, default_config: str | None) -> Iterable[dict]:
    try:
        import datasets
    except ImportError:
        raise ImportError(f"{name!r} is not a local file, and loading it from the hub needs the `datasets` "
                          f"library (pip install 'latentwire[datasets]'); or pass a local "
                          f".json/.jsonl/.parquet path") from None
    repo, _, config = name.partition(":")
    return datasets.load_dataset(repo, config or default_config, split=split)


def _sources(path_or_name: str, split: str, default_config: str | None) -> Iterator[tuple[str, Any]]:
    """(label for messages, parsed content) for each file, or for the hub split."""
    check_split(split)
    if not _is_local(path_or_name):
        yield f"{path_or_name} [{split}]", _hub_rows(path_or_name, split, default_config)
        return
    path = Path(path_or_name).expanduser()
    if not path.exists():
        raise DatasetFormatError(f"{path}: no such file or directory")
    for file in _split_files(path, split) if path.is_dir() else [path]:
        yield str(file), _read_file(file)


# ---------------------------------------------------------------- checking fields

def _field(record: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(record, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DatasetFormatError(f"{where}: missing field {key!r} (found fields {sorted(record)[:10]})")
    value = record[key]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DatasetFormatError(f"{where}: field {key!r} should be {expected}, got {type(value).__name__}")
    return value


def _records(label: str, content: Any, layout: str) -> Iterable[Any]:
    if isinstance(content, dict):
        raise DatasetFormatError(f"{label}: record 0: expected {layout}, got a single JSON object "
                                 f"with fields {sorted(content)[:10]}")
    if isinstance(content, list) and not content:
        raise DatasetFormatError(f"{label}: file holds no records")
    if not isinstance(content, Iterable) or isinstance(content, str):
        raise DatasetFormatError(f"{label}: record 0: expected {layout}, got {type(content).__name__}")
    return content


def _take(examples: Iterable[Example], limit: int | None) -> list[Example]:
    return list(examples if limit is None else itertools.islice(examples, limit))


# ---------------------------------------------------------------- GSM8K

def _gsm8k_examples(path_or_name: str, split: str) -> Iterator[Example]:
    index = 0
    for label, content in _sources(path_or_name, split, "main"):
        for number, record in enumerate(_records(label, content, "JSON lines with 'question' and 'answer'")):
            where = f"{label}: record {number}"
            question = _field(record, "question", str, where)
            worked = _field(record, "answer", str, where)
            body, marker, final = worked.rpartition("####")
            answer = final.strip().replace(",", "")
            if not marker or not NUMBER.fullmatch(answer):
                raise DatasetFormatError(f"{where}: field 'answer' should end in '#### <number>', "
                                         f"got {worked[-40:]!r}")
            yield Example(id=f"gsm8k/{split}/{index:05d}", task="gsm8k", passage="", question=question,
                          answer=answer, split=split, solution=f"{body.rstrip()}\n#### {answer}".lstrip(),
                          meta={"source": label, "record": number})
            index += 1


def load_gsm8k(path_or_name: str, split: str = "test", limit: int | None = None) -> list[Example]:
    """GSM8K from a jsonl/json/parquet file, a folder of them, or a hub name (e.g. "openai/gsm8k")."""
    return _take(_gsm8k_examples(path_or_name, split), limit)


# ---------------------------------------------------------------- SQuAD

def _squad_example(where: str, split: str, qa_id: str, title: str, context: str, question: str,
                   texts: list, starts: list, impossible: bool) -> Example:
    if len(texts) != len(starts):
        raise DatasetFormatError(f"{where}: field 'answers' has {len(texts)} texts but {len(starts)} answer_start values")
    if not all(isinstance(text, str) for text in texts) or not all(isinstance(s, int) for s in starts):
        raise DatasetFormatError(f"{where}: field 'answers' should hold string texts and integer answer_start values")
    if not texts and not impossible:
        raise DatasetFormatError(f"{where}: field 'answers' is empty for a question not marked is_impossible")
    return Example(id=f"squad/{qa_id}", task="squad", passage=context, question=question,
                   answer=texts[0] if texts else "", split=split,
                   meta={"title": title, "answers": tuple(texts), "answer_starts": tuple(starts),
                         "answer_start": starts[0] if starts else -1, "is_impossible": not texts,
                         "source_id": qa_id})


def _squad_original(label: str, document: dict, split: str) -> Iterator[Example]:
    articles = _field(document, "data", list, f"{label}: record 0")
    for a, article in enumerate(articles):
        where = f"{label}: record data[{a}]"
        paragraphs = _field(article, "paragraphs", list, where)
        title = str(article.get("title", ""))
        for p, paragraph in enumerate(paragraphs):
            where = f"{label}: record data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, where)
            for q, qa in enumerate(_field(paragraph, "qas", list, where)):
                where = f"{label}: record data[{a}].paragraphs[{p}].qas[{q}]"
                qa_id = _field(qa, "id", str, where)
                question = _field(qa, "question", str, where)
                answers = _field(qa, "answers", list, where)
                impossible = bool(qa.get("is_impossible", False))
                for k, answer in enumerate(answers):
                    _field(answer, "text", str, f"{where}.answers[{k}]")
                    _field(answer, "answer_start", int, f"{where}.answers[{k}]")
                yield _squad_example(where, split, qa_id, title, context, question,
                                     [answer["text"] for answer in answers],
                                     [answer["answer_start"] for answer in answers], impossible)


def _squad_rows(label: str, rows: Iterable, split: str) -> Iterator[Example]:
    for number, row in enumerate(rows):
        where = f"{label}: record {number}"
        answers = _field(row, "answers", dict, where)
        yield _squad_example(where, split, _field(row, "id", str, where),
                             row.get("title") or "", _field(row, "context", str, where),
                             _field(row, "question", str, where),
                             _field(answers, "text", list, f"{where}.answers"),
                             _field(answers, "answer_start", list, f"{where}.answers"), impossible=True)


def _squad_examples(path_or_name: str, split: str) -> Iterator[Example]:
    for label, content in _sources(path_or_name, split, None):
        if isinstance(content, dict):
            yield from _squad_original(label, content, split)
        elif isinstance(content, list) and not (content and isinstance(content[0], dict) and "context" in content[0]):
            if content and isinstance(content[0], dict) and "data" in content[0]:
                raise DatasetFormatError(f"{label}: record 0: expected one SQuAD JSON object, got a list of "
                                         f"{len(content)} records")
            found = sorted(content[0])[:10] if content and isinstance(content[0], dict) else []
            raise DatasetFormatError(f"{label}: record 0: missing field 'data' (expected a SQuAD JSON object "
                                     f"{{'version', 'data': [...]}} or rows with 'context', 'question', "
                                     f"'answers'; found fields {found})")
        else:
            yield from _squad_rows(label, content, split)


def load_squad(path_or_name: str, split: str = "validation", limit: int | None = None,
               answerable_only: bool = False) -> list[Example]:
    """SQuAD v1.1/v2 from its json, HF-layout parquet/jsonl, a folder, or a hub name ("rajpurkar/squad")."""
    examples = _squad_examples(path_or_name, split)
    if answerable_only:
        examples = (example for example in examples if example.answer)
    return _take(examples, limit)


# ---------------------------------------------------------------- HotpotQA

def _join_sentences(sentences: list[str]) -> str:
    """HotpotQA sentences carry their own leading space after the first; add one where missing."""
    text = ""
    for sentence in sentences:
        text += sentence if not text or sentence[:1].isspace() else " " + sentence
    return text.strip()


def _hotpot_paragraphs(record: dict, where: str) -> list[tuple[str, list[str]]]:
    context = _field(record, "context", (list, dict), where)
    if isinstance(context, dict):
        titles = _field(context, "title", list, f"{where}.context")
        sentences = _field(context, "sentences", list, f"{where}.context")
        if len(titles) != len(sentences):
            raise DatasetFormatError(f"{where}: field 'context' has {len(titles)} titles but {len(sentences)} paragraphs")
        paragraphs = list(zip(titles, sentences))
    else:
        paragraphs = context
    for p, paragraph in enumerate(paragraphs):
        ok = (isinstance(paragraph, (list, tuple)) and len(paragraph) == 2 and isinstance(paragraph[0], str)
              and isinstance(paragraph[1], list) and all(isinstance(s, str) for s in paragraph[1]))
        if not ok:
            raise DatasetFormatError(f"{where}: field 'context' paragraph {p} should be [title, [sentences]]")
    return [(title, list(sentences)) for title, sentences in paragraphs]


def _hotpot_supporting(record: dict, where: str) -> tuple[tuple[str, int], ...]:
    facts = record.get("supporting_facts", [])
    if isinstance(facts, dict):
        facts = list(zip(facts.get("title", []), facts.get("sent_id", [])))
    if not isinstance(facts, list) or not all(isinstance(f, (list, tuple)) and len(f) == 2 for f in facts):
        raise DatasetFormatError(f"{where}: field 'supporting_facts' should be a list of [title, sentence index]")
    return tuple((str(title), int(sent)) for title, sent in facts)


def _hotpot_examples(path_or_name: str, split: str) -> Iterator[Example]:
    for label, content in _sources(path_or_name, split, "distractor"):
        for number, record in enumerate(_records(label, content, "a JSON list of HotpotQA records")):
            where = f"{label}: record {number}"
            id_key = "id" if isinstance(record, dict) and "id" in record and "_id" not in record else "_id"
            source_id = _field(record, id_key, str, where)
            question = _field(record, "question", str, where)
            answer = _field(record, "answer", str, where)
            paragraphs = _hotpot_paragraphs(record, where)
            passage = "\n".join(f"{title}: {_join_sentences(sentences)}" for title, sentences in paragraphs)
            yield Example(id=f"hotpotqa/{source_id}", task="hotpotqa", passage=passage, question=question,
                          answer=answer.strip(), split=split,
                          meta={"type": record.get("type", ""), "level": record.get("level", ""),
                                "supporting_facts": _hotpot_supporting(record, where),
                                "titles": tuple(title for title, _ in paragraphs), "source_id": source_id})


def load_hotpotqa(path_or_name: str, split: str = "validation", limit: int | None = None) -> list[Example]:
    """HotpotQA from its json list, HF-layout parquet/jsonl, a folder, or a hub name ("hotpotqa/hotpot_qa")."""
    return _take(_hotpot_examples(path_or_name, split), limit)


# ---------------------------------------------------------------- splits for training

LOADERS = {"gsm8k": load_gsm8k, "squad": load_squad, "hotpotqa": load_hotpotqa}
DEFAULT_CONFIGS = {"gsm8k": "main", "squad": None, "hotpotqa": "distractor"}


def check_source(path_or_name: str, what: str = "dataset") -> None:
    """DatasetFormatError for a local path that does not exist; hub names are checked when read."""
    if _is_local(path_or_name) and not Path(path_or_name).expanduser().exists():
        raise DatasetFormatError(f"{path_or_name}: no such file or directory ({what})")


def same_file(a: str, b: str) -> bool:
    """Whether two sources are one local file (a folder or hub name has splits of its own)."""
    if not (a and b and _is_local(a) and _is_local(b)):
        return False
    first, second = Path(a).expanduser().resolve(), Path(b).expanduser().resolve()
    return first == second and not first.is_dir()


def _evaluation_split(path_or_name: str, task: str) -> str:
    if not _is_local(path_or_name):
        try:
            import datasets
        except ImportError:
            return "validation"  # reading it raises the ImportError that says what to install
        repo, _, config = path_or_name.partition(":")
        names = datasets.get_dataset_split_names(repo, config or DEFAULT_CONFIGS[task])
        for split in ("validation", "test"):
            if split in names:
                return split
        raise DatasetFormatError(f"{path_or_name}: no 'validation' or 'test' split (found {list(names)})")
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        for split in ("validation", "test"):
            try:
                _split_files(path, split)
                return split
            except DatasetFormatError:
                continue
        raise DatasetFormatError(f"{path}: no .json/.jsonl/.parquet file for split 'validation' or 'test' "
                                 f"(looked for names containing {SPLIT_ALIASES['validation'] + SPLIT_ALIASES['test']})")
    return "validation"


def _group_key(example: Example) -> str:
    return example.meta.get("title") or example.passage or example.question


def _deal(examples: list[Example], part_of_group) -> dict[str, list[Example]]:
    """Examples by split, where group number g (in order of first appearance) goes to part_of_group(g)."""
    numbers: dict[str, int] = {}
    parts: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for example in examples:
        g = numbers.setdefault(_group_key(example), len(numbers))
        parts[part_of_group(g)].append(example)
    return parts


def _held_out_part(g: int) -> str:
    return {0: "test", 1: "validation"}.get(g % HELD_OUT_EVERY, "train")


def _alternate_part(g: int) -> str:
    return "validation" if g % 2 == 0 else "test"


def load_dataset_split(task: str, path_or_name: str, split: str, limit: int | None = None,
                       hold_out: bool = False, **kw) -> list[Example]:
    """The `split` of dataset `task` as training uses it (module docstring, "Splits for training")."""
    check_split(split)
    if task not in LOADERS:
        raise ValueError(f"unknown dataset task {task!r}; known: {', '.join(LOADERS)}")
    if task == "squad":
        kw.setdefault("answerable_only", True)
    load = LOADERS[task]
    if split == "train" and not hold_out:
        examples = load(path_or_name, split="train", limit=limit, **kw)
        if not examples:
            raise DatasetFormatError(f"{path_or_name}: no training records")
        return examples
    if hold_out:
        parts, rule = _deal(load(path_or_name, split="train", **kw), _held_out_part), (
            f"holding out 1 group in {HELD_OUT_EVERY} each for test and validation")
    else:
        parts, rule = _deal(load(path_or_name, split=_evaluation_split(path_or_name, task), **kw), _alternate_part), (
            "dealing groups alternately to validation and test")
    if not parts[split]:
        groups = "articles" if task == "squad" else "questions"
        raise DatasetFormatError(f"{path_or_name}: no records for the {split} split after {rule}: the {task} "
                                 f"data has too few {groups} ({sum(map(len, parts.values()))} records); "
                                 f"use a larger file or a separate evaluation file")
    return [replace(example, split=split) for example in _take(parts[split], limit)]
