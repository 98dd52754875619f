"""scripts/quality_report.py on summaries in the layout a GPU run copies back."""

import importlib.util
import json
from pathlib import Path

import pytest

from train.data.synthetic import relay_qa
from train.metrics import bootstrap_ci, breakdown

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "quality_report.py"


def _report():
    spec = importlib.util.spec_from_file_location("quality_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _root(tmp_path, acc_override=None):
    root = tmp_path / "chain"
    run = root / "stage1_relay_qa_f1"
    run.mkdir(parents=True)
    examples = relay_qa("test", 20, n_facts=1)
    outputs = [f" {e.answer}" if i % 4 else " nope" for i, e in enumerate(examples)]  # 15 of 20 right
    summary = {"test_examples": 20, "best_val_acc": 0.5, "best_step": 250, "final_val_acc": 0.5,
               "test_bridged_acc": 0.75 if acc_override is None else acc_override, "device": "cpu",
               "history": [[250, 0.5]], "test_breakdown": breakdown(examples, outputs)}
    (run / "summary.json").write_text(json.dumps(summary))
    (root / "provenance.json").write_text(json.dumps({"command": "python -m train.curriculum X", "commit": "abc",
                                                       "date": "today", "device": "cpu", "provenance": "typed from the call"}))
    return root


def test_report_reads_hand_written_provenance_and_adds_intervals_and_breakdown(tmp_path):
    out = tmp_path / "out"
    assert _report().main(["r", str(out), str(_root(tmp_path))]) == 0
    text = (out / "r.md").read_text()
    assert "| chain/stage1_relay_qa_f1 | 20 | 50.0 (250) | 50.0 | 75.0 [" in text
    assert "[typed from the call]" in text  # the report says the provenance was written by hand
    assert "test accuracy % by kind" in text and "test accuracy % by question template" in text
    # one breakdown row per attribute, with this run's accuracy and count
    rows = json.loads((out / "r.json").read_text())["runs"][0]["test_breakdown"]["kind"]
    for kind, cell in rows.items():
        assert f"| {kind} | {100 * cell['accuracy']:.0f} ({cell['n']}) |" in text
    assert sum(cell["n"] for cell in rows.values()) == 20


def test_report_refuses_predictions_that_disagree_with_the_summary(tmp_path):
    with pytest.raises(SystemExit, match="disagrees"):
        _report().main(["r", str(tmp_path / "out"), str(_root(tmp_path, acc_override=0.8))])


def test_report_gives_a_value_clustered_interval_and_the_most_missed_values(tmp_path):
    out = tmp_path / "out"
    assert _report().main(["r", str(out), str(_root(tmp_path))]) == 0
    report = json.loads((out / "r.json").read_text())
    fig = report["by_value"]["chain/stage1_relay_qa_f1"]
    preds = report["runs"][0]["test_breakdown"]["predictions"]
    assert fig["accuracy"] == 0.75 and fig["values"] == len({(p["kind"], p["gold"]) for p in preds})
    correct = [float(p["correct"]) for p in preds]
    assert tuple(fig["ci_values"]) == bootstrap_ci(correct, groups=[(p["kind"], p["gold"]) for p in preds])[1:]
    # the most-missed values are exactly the golds of the wrong predictions, with their wrong output
    wrong = {p["gold"] for p in preds if not p["correct"]}
    assert {w["gold"] for w in fig["most_missed"]} == wrong and all(w["wrong"] == "nope" for w in fig["most_missed"])
    assert all(w["misses"] <= w["asked"] for w in fig["most_missed"])
    text = (out / "r.md").read_text()
    assert "over answer values" in text and "('nope')" in text


def test_value_interval_is_wider_when_values_repeat(tmp_path):
    # 24 examples over 4 pets asked 6 times each; two pets always right, two always wrong
    root = tmp_path / "chain"
    run = root / "stage1_relay_qa_f1"
    run.mkdir(parents=True)
    examples = relay_qa("test", 24, n_facts=1)
    golds = ["ferret", "collie", "canary", "budgie"]
    preds = [{"id": f"x{i}", "gold": golds[i % 4], "output": f" {golds[i % 4]}" if i % 4 < 2 else " fox",
              "correct": i % 4 < 2, "kind": "pet", "fact_template": "-", "question_template": "-"} for i in range(24)]
    table = breakdown(examples, [" x"] * 24)
    table["predictions"] = preds
    (run / "summary.json").write_text(json.dumps({"test_examples": 24, "best_val_acc": 0.5, "best_step": 250,
                                                  "final_val_acc": 0.5, "test_bridged_acc": 0.5, "device": "cpu",
                                                  "history": [[250, 0.5]], "test_breakdown": table}))
    (root / "provenance.json").write_text(json.dumps({"command": "x", "commit": "abc", "date": "today", "device": "cpu"}))
    out = tmp_path / "out"
    assert _report().main(["r", str(out), str(root)]) == 0
    fig = json.loads((out / "r.json").read_text())["by_value"]["chain/stage1_relay_qa_f1"]
    assert fig["values"] == 4
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(fig["ci_values"]) > 1.5 * width(fig["ci_examples"])
    assert [w["gold"] for w in fig["most_missed"]] == ["budgie", "canary"] and fig["most_missed"][0]["misses"] == 6


class _PieceTokenizer:
    """Stand-in target tokenizer: one token per 3 characters of the text as given (the leading space
    counts), and a BOS token unless add_special_tokens=False, so a report that drops the space or
    keeps special tokens gets other counts."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [0] * (-(-len(text) // 3) + (1 if add_special_tokens else 0))}


def test_pieces_table_counts_each_answer_by_its_target_tokens():
    """" cat" is 2 tokens, " ab" 1, " ferret" 3+; digits are "number", two words "words"; the pooled
    row adds the runs."""
    report = _report()
    preds = [{"gold": "4321", "correct": True}, {"gold": "ab", "correct": True}, {"gold": "cat", "correct": False},
             {"gold": "cat", "correct": True}, {"gold": "ferret", "correct": False},
             {"gold": "web designer", "correct": True}]
    rows = [{"name": "a", "test_breakdown": {"predictions": preds}},
            {"name": "b", "test_breakdown": {"predictions": preds[:2]}}]
    text, figures = report.pieces_table(rows, _PieceTokenizer())
    assert figures["a"] == {"number": {"correct": 1, "n": 1}, "1": {"correct": 1, "n": 1},
                            "2": {"correct": 1, "n": 2}, "3+": {"correct": 0, "n": 1}, "words": {"correct": 1, "n": 1}}
    assert figures["pooled"]["number"] == {"correct": 2, "n": 2} and figures["pooled"]["3+"] == {"correct": 0, "n": 1}
    assert "| a | 100 (1) | 100 (1) | 50 (2) | 0 (1) | 100 (1) |" in text
    assert "| b | 100 (1) | 100 (1) |  |  |  |" in text


def test_report_with_pieces_loads_the_target_and_writes_the_table(tmp_path, monkeypatch):
    import lw_runtime.models

    loaded = []

    def fake_load(name):
        loaded.append(name)
        return type("Loaded", (), {"tokenizer": _PieceTokenizer()})()

    monkeypatch.setattr(lw_runtime.models, "load_model", fake_load)
    out = tmp_path / "out"
    assert _report().main(["--pieces", "some-target", "r", str(out), str(_root(tmp_path))]) == 0
    assert loaded == ["some-target"]
    report = json.loads((out / "r.json").read_text())
    pooled = report["by_pieces"]["pooled"]
    assert sum(c["n"] for c in pooled.values()) == 20
    assert "by the gold answer's length in target tokens" in (out / "r.md").read_text()
    with pytest.raises(SystemExit, match="goes first"):
        _report().main(["r", str(out), str(tmp_path / "chain"), "--pieces", "x"])


def _four_fact_root(tmp_path, seed_saved=3):
    """A 4-fact run of 12 test examples: 3 right, 3 another fact's value, 3 not in the passage, 3 empty,
    saved with config seed ``seed_saved`` (the examples are always seed 3's)."""
    root = tmp_path / "f4"
    run = root / "r"
    run.mkdir(parents=True)
    examples = relay_qa("test", 12, n_facts=4, seed=3)
    outputs = []
    for i, e in enumerate(examples):
        other = next(v for j, (_, _, v) in enumerate(e.meta["facts"]) if j != e.meta["asked"])
        outputs.append([f" {e.answer}", f" {other}.", " Zanzibarish", "  "][i % 4])
    summary = {"test_examples": 12, "best_val_acc": 0.5, "best_step": 1, "final_val_acc": 0.5, "test_bridged_acc": 0.25,
               "device": "cpu", "history": [], "test_breakdown": breakdown(examples, outputs),
               "config": {"task": "relay_qa:4", "seed": seed_saved, "test_examples": 12}}
    (run / "summary.json").write_text(json.dumps(summary))
    (root / "provenance.json").write_text(json.dumps({"command": "x", "commit": "abc", "date": "today", "device": "cpu"}))
    return root


def test_misses_by_cause_regenerates_the_split_and_counts_each_cause(tmp_path):
    out = tmp_path / "out"
    assert _report().main(["r", str(out), str(_four_fact_root(tmp_path))]) == 0
    assert json.loads((out / "r.json").read_text())["misses_by_cause"] == {
        "f4/r": {"examples": 12, "misses": 9, "another fact's value": 3, "not in the passage": 3, "empty": 3}}
    assert "| f4/r | 12 | 9 | 3 | 3 | 3 |" in (out / "r.md").read_text()


def test_misses_by_cause_leaves_out_a_run_whose_split_it_cannot_regenerate(tmp_path):
    out = tmp_path / "out"
    assert _report().main(["r", str(out), str(_four_fact_root(tmp_path, seed_saved=4))]) == 0
    assert json.loads((out / "r.json").read_text())["misses_by_cause"] == {}
    assert "does not regenerate the run's test split" in (out / "r.md").read_text()


def test_a_miss_that_names_another_fact_is_told_apart_from_a_garbled_value():
    facts = (("Ann Lee", "pet", "ferret"), ("Bo Ray", "city", "Lima"), ("Ann Lee", "age", "42"))
    cause = _report().miss_cause
    assert cause(" Lima.\nmore", facts, asked=0) == "another fact's value"
    assert cause(" the ferret", facts, asked=1) == "another fact's value"  # normalised as the scorer does
    assert cause(" Limassol", facts, asked=0) == "not in the passage"
    assert cause(" ...", facts, asked=0) == "empty"
