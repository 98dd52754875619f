"""train.fsdp's --data / --eval-data: real datasets reach the trainer with disjoint train/validation/test."""

import json
import shutil
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from train.data import DatasetFormatError, data_keywords, load_task
from train.config import check_config, parse_args
from train.loop import load_splits

FIXTURES = Path(__file__).parent / "fixtures"
SQUAD_TRAIN = str(FIXTURES / "squad_train.json")  # 6 articles, 9 questions, SQuAD v1.1 release layout
HOTPOT_DEV = str(FIXTURES / "hotpotqa.json")  # 3 questions, HotpotQA release layout
GSM8K = str(FIXTURES / "gsm8k.jsonl")  # 4 problems, GSM8K release layout


def load_like_train(flags: list[str]):
    """Parse and check flags, then load the three splits with _train's own calls (no models)."""
    cfg = parse_args(flags)
    check_config(cfg)
    return load_splits(cfg)


def answers(examples):
    return [e.answer for e in examples]


def titles(examples):
    return {e.meta["title"] for e in examples}


# ---------------------------------------------------------------- the command

def test_squad_training_file_with_hotpotqa_dev_file_trains_on_all_of_one_and_evaluates_on_the_other():
    train, val, test = load_like_train(["--task", "squad", "--data", SQUAD_TRAIN, "--eval-task", "hotpotqa",
                                        "--eval-data", HOTPOT_DEV, "--protocol", "context"])
    assert len(train) == 9 and {e.task for e in train} == {"squad"} and {e.split for e in train} == {"train"}
    # the dev file's questions are dealt alternately: 1st and 3rd to validation, 2nd to test
    assert answers(val) == ["yes", "Animorphs"] and answers(test) == ["Chief of Protocol"]
    assert {e.split for e in val} == {"validation"} and {e.split for e in test} == {"test"}
    for e in train:
        assert e.passage[e.meta["answer_start"]:e.meta["answer_start"] + len(e.answer)] == e.answer


def test_the_default_protocol_is_accepted_for_squad():
    train, _, _ = load_like_train(["--task", "squad", "--data", SQUAD_TRAIN])
    assert parse_args(["--task", "squad", "--data", SQUAD_TRAIN]).protocol == "soft_only" and train


# ---------------------------------------------------------------- holding out of one file

def test_data_alone_holds_whole_articles_out_for_validation_and_test():
    train, val, test = load_like_train(["--task", "squad", "--data", SQUAD_TRAIN])
    # article i goes to test when i % 20 == 0, validation when i % 20 == 1, training otherwise
    assert titles(test) == {"Beyonce"} and titles(val) == {"Chopin"}
    assert titles(train) == {"Eiffel_Tower", "Amazon_River", "Photosynthesis", "Mount_Everest"}
    assert len(train) + len(val) + len(test) == 9
    assert not {e.passage for e in train} & {e.passage for e in val + test}
    assert {e.split for e in train} == {"train"} and {e.split for e in val} == {"validation"}


def test_held_out_splits_do_not_depend_on_the_example_limits():
    full = load_like_train(["--task", "squad", "--data", SQUAD_TRAIN])
    small = load_like_train(["--task", "squad", "--data", SQUAD_TRAIN, "--train-examples", "2",
                             "--val-examples", "1", "--test-examples", "1"])
    for whole, limited, n in zip(full, small, (2, 1, 1)):
        assert limited == whole[:n]
    assert load_like_train(["--task", "squad", "--data", SQUAD_TRAIN]) == full


def test_eval_data_naming_the_training_file_again_holds_out_the_same_way():
    same_file = str(FIXTURES / ".." / "fixtures" / "squad_train.json")
    again = load_like_train(["--task", "squad", "--data", SQUAD_TRAIN, "--eval-data", same_file])
    assert again == load_like_train(["--task", "squad", "--data", SQUAD_TRAIN])


def test_gsm8k_jsonl_and_parquet_hold_out_the_same_problems_with_numeric_answers(tmp_path):
    rows = [json.loads(line) for line in Path(GSM8K).read_text().splitlines() if line.strip()]
    parquet = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    from_jsonl = load_like_train(["--task", "gsm8k", "--data", GSM8K])
    from_parquet = load_like_train(["--task", "gsm8k", "--data", str(parquet)])
    assert [answers(split) for split in from_jsonl] == [["1200", "-3"], ["10"], ["72"]]
    assert [answers(split) for split in from_parquet] == [answers(split) for split in from_jsonl]
    assert all(e.solution.endswith(f"#### {e.answer}") and e.passage == "" for split in from_jsonl for e in split)
    assert from_jsonl[2][0].id == "gsm8k/train/00000"  # ids keep naming the record in its source


def test_a_generated_evaluation_task_leaves_all_of_data_to_training():
    train, val, _ = load_like_train(["--task", "squad", "--data", SQUAD_TRAIN, "--eval-task", "relay_code",
                                     "--val-examples", "4", "--test-examples", "4"])
    assert len(train) == 9 and {e.task for e in val} == {"relay_qa"}


def test_unanswerable_squad_v2_questions_are_not_trained_on():
    keywords = data_keywords("squad", "", "train", str(FIXTURES / "squad_v2.json"), str(FIXTURES / "squad_v1.json"))
    assert keywords == {"data": str(FIXTURES / "squad_v2.json"), "hold_out": False}
    assert answers(load_task("squad", "train", None, **keywords)) == ["France", "The Normans"]


# ---------------------------------------------------------------- folders and the hub use their own splits

def test_a_folder_trains_on_its_train_file_and_evaluates_on_its_dev_file(tmp_path):
    shutil.copy(SQUAD_TRAIN, tmp_path / "train-v1.1.json")
    shutil.copy(FIXTURES / "squad_v1.json", tmp_path / "dev-v1.1.json")
    train, val, test = load_like_train(["--task", "squad", "--data", str(tmp_path)])
    assert len(train) == 9 and titles(val) == {"Normans"} and titles(test) == {"Oxygen"}


def test_a_gsm8k_folder_without_a_validation_file_evaluates_on_its_test_file(tmp_path):
    lines = Path(GSM8K).read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:2]))
    (tmp_path / "test.jsonl").write_text("\n".join(lines[2:]))
    train, val, test = load_like_train(["--task", "gsm8k", "--data", str(tmp_path)])
    assert (answers(train), answers(val), answers(test)) == (["72", "10"], ["1200"], ["-3"])


def test_hub_names_read_train_and_the_validation_split_or_else_test(monkeypatch):
    gsm8k_rows = [json.loads(line) for line in Path(GSM8K).read_text().splitlines() if line.strip()]
    hub = {("openai/gsm8k", "main"): {"train": gsm8k_rows[:2], "test": gsm8k_rows[2:]}}
    calls = []

    def load_dataset(repo, config, split):
        calls.append((repo, config, split))
        return hub[repo, config][split]

    fake = types.SimpleNamespace(load_dataset=load_dataset,
                                 get_dataset_split_names=lambda repo, config: list(hub[repo, config]))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    train, val, test = load_like_train(["--task", "gsm8k", "--data", "openai/gsm8k"])
    assert (answers(train), answers(val), answers(test)) == (["72", "10"], ["1200"], ["-3"])
    assert calls == [("openai/gsm8k", "main", "train"), ("openai/gsm8k", "main", "test"), ("openai/gsm8k", "main", "test")]


# ---------------------------------------------------------------- flags that cannot work fail before models load

@pytest.mark.parametrize("flags, problem", [
    (["--task", "squad"], "pass --data PATH"),
    (["--task", "relay_code", "--data", SQUAD_TRAIN], "generated and reads no file"),
    (["--task", "squad", "--data", SQUAD_TRAIN, "--eval-task", "hotpotqa"], "pass --eval-data PATH"),
    (["--task", "relay_code", "--eval-task", "squad"], "pass --eval-data PATH"),
    (["--task", "relay_code", "--eval-data", HOTPOT_DEV], "generated and reads no file"),
    (["--task", "squad", "--data", SQUAD_TRAIN, "--eval-task", "arithmetic", "--eval-data", HOTPOT_DEV], "generated"),
    (["--task", "gsm8k", "--data", GSM8K, "--protocol", "context"], "soft_only"),
    (["--task", "relay_code", "--eval-task", "gsm8k", "--eval-data", GSM8K, "--protocol", "context"], "soft_only"),
])
def test_dataset_flags_that_cannot_work_are_rejected(flags, problem):
    with pytest.raises(ValueError, match=problem):
        check_config(parse_args(flags))


@pytest.mark.parametrize("flag", ["--data", "--eval-data"])
def test_a_missing_file_is_a_dataset_format_error_naming_it_and_the_flag(tmp_path, flag):
    missing = str(tmp_path / "train.json")
    flags = ["--task", "squad", "--data", SQUAD_TRAIN] + [flag, missing]
    with pytest.raises(DatasetFormatError) as raised:
        check_config(parse_args(flags))
    assert missing in str(raised.value) and "no such file" in str(raised.value) and flag in str(raised.value)


def test_a_malformed_record_is_reported_with_file_record_and_field():
    path = str(FIXTURES / "squad_missing_context.json")
    with pytest.raises(DatasetFormatError, match=r"squad_missing_context\.json: record data\[0\]\.paragraphs\[1\]: missing field 'context'"):
        load_like_train(["--task", "squad", "--data", path])


def test_a_missing_field_is_reported_with_file_record_and_field():
    path = str(FIXTURES / "gsm8k_missing_answer.jsonl")
    with pytest.raises(DatasetFormatError, match=r"gsm8k_missing_answer\.jsonl: record 1: missing field 'answer'"):
        load_like_train(["--task", "gsm8k", "--data", path])


def test_an_invalid_json_line_in_the_evaluation_file_is_reported_with_its_line():
    path = str(FIXTURES / "gsm8k_invalid_line.jsonl")
    with pytest.raises(DatasetFormatError, match=r"gsm8k_invalid_line\.jsonl: record 1 \(line 2\): invalid JSON"):
        load_like_train(["--task", "gsm8k", "--data", GSM8K, "--eval-data", path])


def test_the_wrong_dataset_for_the_task_names_the_missing_field():
    with pytest.raises(DatasetFormatError, match=r"hotpotqa\.json: record 0: missing field 'answers'"):
        load_like_train(["--task", "squad", "--data", HOTPOT_DEV])


def test_a_file_too_small_to_hold_out_from_says_so():
    # squad_v1.json has two articles: one goes to test, one to validation, none is left to train on
    with pytest.raises(DatasetFormatError, match=r"squad_v1\.json: no records for the train split"):
        load_like_train(["--task", "squad", "--data", str(FIXTURES / "squad_v1.json")])
