"""load_task dispatches task names to the generators and loaders."""

from pathlib import Path

import pytest

from train.data import arithmetic, load_gsm8k, load_task, relay_qa

FIXTURES = Path(__file__).parent / "fixtures"


def test_relay_names_set_facts_and_kinds():
    assert load_task("relay_qa", "train", 20, seed=2) == relay_qa("train", 20, seed=2)
    assert load_task("relay_qa:4", "test", 20) == relay_qa("test", 20, n_facts=4)
    code = load_task("relay_code", "validation", 20)
    assert code == relay_qa("validation", 20, kinds=("code",))
    assert all(e.meta["kind"] == "code" for e in code)
    assert load_task("relay_code:2", "train", 5) == relay_qa("train", 5, n_facts=2, kinds=("code",))


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
