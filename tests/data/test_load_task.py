"""load_task dispatches task names to the generators and loaders."""

from pathlib import Path

import pytest

from train.data import arithmetic, load_gsm8k, load_task, relay_qa
from train.data.tasks import fact_range

FIXTURES = Path(__file__).parent / "fixtures"


def test_relay_names_set_facts_and_kinds():
    assert load_task("relay_qa", "train", 20, seed=2) == relay_qa("train", 20, seed=2)
    assert load_task("relay_qa:4", "test", 20) == relay_qa("test", 20, n_facts=4)
    code = load_task("relay_code", "validation", 20)
    assert code == relay_qa("validation", 20, kinds=("code",))
    assert all(e.meta["kind"] == "code" for e in code)
    assert load_task("relay_code:2", "train", 5) == relay_qa("train", 5, n_facts=2, kinds=("code",))


def test_a_fact_range_mixes_the_counts_in_turn_and_its_prefixes_are_stable():
    mix = load_task("relay_qa:1-4", "train", 10, seed=3, wide=0.5)
    assert [e.n_facts for e in mix] == [1, 2, 3, 4, 1, 2, 3, 4, 1, 2]
    # each count's examples are that count's own generator, in order
    assert [e for e in mix if e.n_facts == 2] == relay_qa("train", 3, n_facts=2, seed=3, wide=0.5)
    assert [e for e in mix if e.n_facts == 4] == relay_qa("train", 2, n_facts=4, seed=3, wide=0.5)
    assert load_task("relay_qa:1-4", "train", 6, seed=3, wide=0.5) == mix[:6]
    assert len({e.id for e in mix}) == 10
    codes = load_task("relay_code:2-3", "test", 4)
    assert [e.n_facts for e in codes] == [2, 3, 2, 3] and all(e.meta["kind"] == "code" for e in codes)


@pytest.mark.parametrize("name, expected", [("relay_qa", (1, 1)), ("relay_qa:4", (4, 4)), ("relay_qa:1-8", (1, 8))])
def test_fact_range(name, expected):
    assert fact_range(name) == expected


@pytest.mark.parametrize("name", ["relay_qa:4-2", "relay_qa:2-2", "relay_qa:0-3", "relay_qa:1-", "relay_qa:-3", "relay_qa:0"])
def test_bad_fact_ranges_name_the_task(name):
    with pytest.raises(ValueError, match="relay_qa"):
        load_task(name, "train", 4)


def test_arithmetic_and_dataset_names():
    assert load_task("arithmetic", "train", 10, seed=1, max_steps=2) == arithmetic("train", 10, seed=1, max_steps=2)
    path = str(FIXTURES / "gsm8k.jsonl")
    assert load_task("gsm8k", "test", 2, path=path) == load_gsm8k(path, limit=2)
    assert len(load_task("hotpotqa", "validation", None, path=str(FIXTURES / "hotpotqa.json"))) == 3
    assert load_task("squad", "validation", 1, path=str(FIXTURES / "squad_v1.json"))[0].answer == "France"


@pytest.mark.parametrize("name, kw", [("relay_qa:x", {}), ("arithmetic:3", {}), ("mmlu", {}), ("gsm8k", {})])
def test_bad_task_names_raise_value_error(name, kw):
    with pytest.raises(ValueError):
        load_task(name, "train", 3, **kw)
