"""GSM8K / SQuAD / HotpotQA loaders on fixtures in each format, the hub path, and bad input."""

import json
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from train.data import DatasetFormatError, load_gsm8k, load_hotpotqa, load_squad

FIXTURES = Path(__file__).parent / "fixtures"


def write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def gsm8k_rows() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "gsm8k.jsonl").read_text().splitlines() if line.strip()]


def squad_hf_rows(fixture: str) -> list[dict]:
    """The Hugging Face `squad`/`squad_v2` column layout, built from an original-format fixture."""
    rows = []
    for article in json.loads((FIXTURES / fixture).read_text())["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows.append({"id": qa["id"], "title": article["title"], "context": paragraph["context"],
                             "question": qa["question"],
                             "answers": {"text": [a["text"] for a in qa["answers"]],
                                         "answer_start": [a["answer_start"] for a in qa["answers"]]}})
    return rows


def hotpot_hf_rows() -> list[dict]:
    """The Hugging Face `hotpot_qa` column layout, built from the original-format fixture."""
    return [{"id": r["_id"], "question": r["question"], "answer": r["answer"], "type": r["type"],
             "level": r["level"],
             "supporting_facts": {"title": [t for t, _ in r["supporting_facts"]],
                                  "sent_id": [s for _, s in r["supporting_facts"]]},
             "context": {"title": [t for t, _ in r["context"]], "sentences": [s for _, s in r["context"]]}}
            for r in json.loads((FIXTURES / "hotpotqa.json").read_text())]


def core(examples):
    return [(e.id, e.task, e.passage, e.question, e.answer, e.solution, e.split) for e in examples]


# ---------------------------------------------------------------- GSM8K

def test_gsm8k_jsonl_gives_numeric_answers_and_solutions_ending_in_them():
    examples = load_gsm8k(str(FIXTURES / "gsm8k.jsonl"))
    assert [e.answer for e in examples] == ["72", "10", "1200", "-3"]
    for e in examples:
        assert e.task == "gsm8k" and e.split == "test" and e.passage == ""
        assert e.solution.endswith(f"\n#### {e.answer}") and e.question.endswith("?")
    assert "<<48/2=24>>" in examples[0].solution
    assert len({e.id for e in examples}) == 4


def test_gsm8k_limit_takes_the_first_records():
    assert core(load_gsm8k(str(FIXTURES / "gsm8k.jsonl"), limit=2)) == core(load_gsm8k(str(FIXTURES / "gsm8k.jsonl")))[:2]


def test_gsm8k_parquet_and_json_list_match_jsonl(tmp_path):
    expected = core(load_gsm8k(str(FIXTURES / "gsm8k.jsonl"), split="train"))
    parquet = write_parquet(tmp_path / "gsm8k.parquet", gsm8k_rows())
    listed = tmp_path / "gsm8k.json"
    listed.write_text(json.dumps(gsm8k_rows()))
    assert core(load_gsm8k(str(parquet), split="train")) == expected
    assert core(load_gsm8k(str(listed), split="train")) == expected


def test_gsm8k_folder_reads_only_the_requested_split(tmp_path):
    rows = gsm8k_rows()
    write_parquet(tmp_path / "main" / "train-00000-of-00001.parquet", rows[:3])
    write_parquet(tmp_path / "main" / "test-00000-of-00001.parquet", rows[3:])
    assert [e.answer for e in load_gsm8k(str(tmp_path), split="train")] == ["72", "10", "1200"]
    assert [e.answer for e in load_gsm8k(str(tmp_path), split="test")] == ["-3"]
    with pytest.raises(DatasetFormatError, match="validation"):
        load_gsm8k(str(tmp_path), split="validation")


# ---------------------------------------------------------------- SQuAD

@pytest.mark.parametrize("fixture", ["squad_v1.json", "squad_v2.json"])
def test_squad_answers_are_spans_of_the_context_at_answer_start(fixture):
    examples = load_squad(str(FIXTURES / fixture))
    assert examples and all(e.task == "squad" and e.split == "validation" for e in examples)
    for e in examples:
        for text, start in zip(e.meta["answers"], e.meta["answer_starts"]):
            assert e.passage[start:start + len(text)] == text
        assert e.id == f"squad/{e.meta['source_id']}"


def test_squad_v1_keeps_every_gold_answer_and_the_first_as_answer():
    first = load_squad(str(FIXTURES / "squad_v1.json"))[0]
    assert first.answer == "France" and first.meta["answers"] == ("France", "France")
    assert first.meta["title"] == "Normans" and first.question == "In what country is Normandy located?"


def test_squad_v2_unanswerable_questions_get_empty_answers_or_are_dropped():
    examples = load_squad(str(FIXTURES / "squad_v2.json"))
    assert [e.answer for e in examples] == ["France", "The Normans", ""]
    assert [e.meta["is_impossible"] for e in examples] == [False, False, True]
    assert [e.answer for e in load_squad(str(FIXTURES / "squad_v2.json"), answerable_only=True)] == ["France", "The Normans"]


@pytest.mark.parametrize("fixture", ["squad_v1.json", "squad_v2.json"])
def test_squad_parquet_and_jsonl_in_hf_layout_match_the_original_json(tmp_path, fixture):
    expected = core(load_squad(str(FIXTURES / fixture), split="train"))
    parquet = write_parquet(tmp_path / "squad.parquet", squad_hf_rows(fixture))
    lines = tmp_path / "squad.jsonl"
    lines.write_text("\n".join(json.dumps(row) for row in squad_hf_rows(fixture)))
    assert core(load_squad(str(parquet), split="train")) == expected
    assert core(load_squad(str(lines), split="train")) == expected


# ---------------------------------------------------------------- HotpotQA

def test_hotpotqa_context_is_flattened_into_titled_paragraphs():
    examples = load_hotpotqa(str(FIXTURES / "hotpotqa.json"))
    assert [e.answer for e in examples] == ["yes", "Chief of Protocol", "Animorphs"]
    first = examples[0]
    assert first.passage.split("\n") == [
        "Ed Wood: Edward Davis Wood Jr. was an American filmmaker, actor, writer, producer, and director. "
        "He is best known for cult films.",
        "Scott Derrickson: Scott Derrickson is an American director, screenwriter and producer. "
        "He lives in Los Angeles, California."]
    assert "diplomat. As an adult" in examples[1].passage
    assert first.meta["supporting_facts"] == (("Scott Derrickson", 0), ("Ed Wood", 0))
    assert (first.meta["type"], first.meta["level"]) == ("comparison", "hard")
    assert first.id == "hotpotqa/5a8b57f25542995d1e6f1371" and first.split == "validation"
    assert all("  " not in e.passage for e in examples)


def test_hotpotqa_parquet_in_hf_layout_matches_the_original_json(tmp_path):
    parquet = write_parquet(tmp_path / "hotpot.parquet", hotpot_hf_rows())
    from_json, from_parquet = load_hotpotqa(str(FIXTURES / "hotpotqa.json")), load_hotpotqa(str(parquet))
    assert core(from_parquet) == core(from_json)
    assert [e.meta for e in from_parquet] == [e.meta for e in from_json]


# ---------------------------------------------------------------- the hub, through `datasets`

def test_hub_names_go_to_datasets_load_dataset_with_default_configs(monkeypatch):
    calls = []

    def load_dataset(repo, config, split):
        calls.append((repo, config, split))
        return {"openai/gsm8k": gsm8k_rows(), "rajpurkar/squad": squad_hf_rows("squad_v1.json"),
                "hotpotqa/hotpot_qa": hotpot_hf_rows()}[repo]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert len(load_gsm8k("openai/gsm8k", split="train", limit=3)) == 3
    assert load_squad("rajpurkar/squad")[0].answer == "France"
    assert load_hotpotqa("hotpotqa/hotpot_qa:fullwiki")[0].answer == "yes"
    assert len(load_hotpotqa("hotpotqa/hotpot_qa")) == 3
    assert calls == [("openai/gsm8k", "main", "train"), ("rajpurkar/squad", None, "validation"),
                     ("hotpotqa/hotpot_qa", "fullwiki", "validation"),
                     ("hotpotqa/hotpot_qa", "distractor", "validation")]


def test_hub_name_without_datasets_installed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="datasets"):
        load_gsm8k("openai/gsm8k")


# ---------------------------------------------------------------- bad input

BAD_FIXTURES = [
    # (loader, fixture, words the message must contain: file, record, field or problem)
    (load_squad, "gsm8k.jsonl", ["gsm8k.jsonl", "record 0", "'data'"]),
    (load_hotpotqa, "gsm8k.jsonl", ["gsm8k.jsonl", "record 0", "'_id'"]),
    (load_gsm8k, "squad_v1.json", ["squad_v1.json", "record 0", "single JSON object"]),
    (load_hotpotqa, "squad_v1.json", ["squad_v1.json", "record 0", "single JSON object"]),
    (load_gsm8k, "gsm8k_missing_answer.jsonl", ["gsm8k_missing_answer.jsonl", "record 1", "'answer'"]),
    (load_gsm8k, "gsm8k_no_final_answer.jsonl", ["gsm8k_no_final_answer.jsonl", "record 0", "'answer'", "####"]),
    (load_gsm8k, "gsm8k_invalid_line.jsonl", ["gsm8k_invalid_line.jsonl", "record 1", "line 2", "invalid JSON"]),
    (load_squad, "squad_truncated.json", ["squad_truncated.json", "invalid JSON", "line 1"]),
    (load_squad, "squad_missing_context.json", ["squad_missing_context.json", "paragraphs[1]", "'context'"]),
    (load_hotpotqa, "hotpotqa_bad_context.json", ["hotpotqa_bad_context.json", "record 1", "'context'"]),
    (load_gsm8k, "empty.jsonl", ["empty.jsonl", "empty"]),
    (load_squad, "empty.jsonl", ["empty.jsonl", "empty"]),
    (load_hotpotqa, "does_not_exist.json", ["does_not_exist.json", "no such file"]),
    (load_gsm8k, "does_not_exist.jsonl", ["does_not_exist.jsonl", "no such file"]),
]


@pytest.mark.parametrize("loader, fixture, words", BAD_FIXTURES, ids=[f"{l.__name__}-{f}" for l, f, _ in BAD_FIXTURES])
def test_bad_file_raises_dataset_format_error_naming_the_problem(loader, fixture, words):
    with pytest.raises(DatasetFormatError) as raised:
        loader(str(FIXTURES / fixture))
    for word in words:
        assert word in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_squad_record_with_wrong_field_type_names_the_record_and_field(tmp_path):
    rows = squad_hf_rows("squad_v1.json")
    rows[2]["question"] = 17
    path = tmp_path / "squad.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    with pytest.raises(DatasetFormatError, match=r"squad\.jsonl: record 2: field 'question' should be str, got int"):
        load_squad(str(path))


def test_parquet_with_the_wrong_columns_names_the_missing_column(tmp_path):
    path = write_parquet(tmp_path / "gsm8k.parquet", [{"problem": "x", "answer": "#### 1"}])
    with pytest.raises(DatasetFormatError, match=r"gsm8k\.parquet: record 0: missing field 'question'"):
        load_gsm8k(str(path))


def test_corrupt_parquet_raises_dataset_format_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DatasetFormatError, match="broken.parquet"):
        load_squad(str(path))


def test_squad_answer_count_mismatch_in_hf_layout_is_reported(tmp_path):
    rows = squad_hf_rows("squad_v1.json")
    rows[1]["answers"]["answer_start"] = []
    path = write_parquet(tmp_path / "squad.parquet", rows)
    with pytest.raises(DatasetFormatError, match=r"record 1: field 'answers'"):
        load_squad(str(path))
