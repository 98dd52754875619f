"""Metrics: bootstrap intervals, F1, degenerate-output detection."""

from train.metrics import bootstrap_ci, f1_score, is_repetition_loop, summarize


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_n():
    small = bootstrap_ci([1.0, 0.0] * 10)
    large = bootstrap_ci([1.0, 0.0] * 500)
    assert small[1] < 0.5 < small[2] and large[1] < 0.5 < large[2]
    assert (large[2] - large[1]) < (small[2] - small[1])
    assert bootstrap_ci([1.0] * 30) == (1.0, 1.0, 1.0)


def test_cluster_bootstrap_counts_a_repeated_value_once():
    # 100 examples, 10 answer values asked 10 times each; 5 values always right, 5 always wrong.
    values = [1.0] * 50 + [0.0] * 50
    groups = [i // 10 for i in range(100)]
    mean, lo, hi = bootstrap_ci(values, groups=groups)
    _, lo_ex, hi_ex = bootstrap_ci(values)
    assert mean == 0.5 and lo < 0.5 < hi
    # ten independent draws, not a hundred: the interval is much wider than the per-example one
    assert (hi - lo) > 2 * (hi_ex - lo_ex)
    # one group per example is the per-example bootstrap's distribution (same width within noise)
    _, lo_1, hi_1 = bootstrap_ci(values, groups=list(range(100)))
    assert abs((hi_1 - lo_1) - (hi_ex - lo_ex)) < 0.05
    # groups of unequal size: the mean stays the per-example mean
    assert bootstrap_ci([1.0, 1.0, 1.0, 0.0], groups=["a", "a", "a", "b"])[0] == 0.75


def test_cluster_bootstrap_weights_each_resample_by_group_size():
    # group a: 8 examples all right; b and c: one wrong example each. A resample of three groups with
    # one a has mean 8/10 = 0.8 when pooled over examples (right), 1/3 as a mean of group means (wrong).
    # P(no a) = 0.296 and P(one a) = 0.444, so the 40th and 60th percentiles (level 0.2) fall on one-a draws.
    values = [1.0] * 8 + [0.0, 0.0]
    groups = ["a"] * 8 + ["b", "c"]
    _, lo, hi = bootstrap_ci(values, groups=groups, level=0.2)
    assert lo == hi == 0.8


def test_cluster_bootstrap_rejects_mismatched_labels():
    import pytest

    with pytest.raises(ValueError, match="2 group labels for 3 values"):
        bootstrap_ci([1.0, 0.0, 1.0], groups=["a", "b"])


def test_f1_and_exact_match_use_the_first_line_only():
    assert f1_score(" train driver\nmore", "train driver") == 1.0
    assert 0 < f1_score(" driver", "train driver") < 1
    s = summarize([" 4821", " 3=3=3=3=3=3=3=3 4821", ""], ["4821", "4821", "4821"])
    assert s["accuracy"] == 1 / 3 and s["empty"] == 1 and s["repetition_loops"] == 1


def test_repetition_loops():
    assert is_repetition_loop("3=3=3=3=3=3=3=3=")
    assert is_repetition_loop("the the the the the the")
    assert not is_repetition_loop("4821")
    assert not is_repetition_loop("Paris is the capital of France")


def test_breakdown_slices_by_kind_and_wording_and_keeps_every_prediction():
    from train.data.synthetic import relay_qa
    from train.metrics import breakdown

    examples = relay_qa("test", 40, n_facts=2)
    # right on every code question, wrong everywhere else
    outputs = [f" {e.answer}" if e.meta["kind"] == "code" else " wrong" for e in examples]
    b = breakdown(examples, outputs)
    n_code = sum(e.meta["kind"] == "code" for e in examples)
    assert 0 < n_code < len(examples)
    assert b["kind"]["code"] == {"n": n_code, "accuracy": 1.0}
    assert all(s["accuracy"] == 0.0 for kind, s in b["kind"].items() if kind != "code")
    for name in ("fact_template", "question_template"):
        assert sum(s["n"] for s in b[name].values()) == len(examples)
    asked = examples[0].meta["templates"][examples[0].meta["asked"]]
    assert asked in b["fact_template"] and examples[0].meta["templates"][-1] in b["question_template"]
    assert [p["correct"] for p in b["predictions"]] == [e.meta["kind"] == "code" for e in examples]
    assert b["predictions"][0]["gold"] == examples[0].answer
    # the fact wording is the asked fact's, not the first sentence's
    for e, p in zip(examples, b["predictions"]):
        assert p["fact_template"] == e.meta["templates"][e.meta["asked"]]
        assert p["question_template"] == e.meta["templates"][-1] and p["kind"] == e.meta["kind"]
    assert any(e.meta["asked"] != 0 and e.meta["templates"][0] != e.meta["templates"][e.meta["asked"]] for e in examples)


def test_breakdown_puts_examples_without_metadata_in_one_slice():
    from train.data.example import Example
    from train.metrics import breakdown

    examples = [Example(id=str(i), task="t", passage="p", question="q", answer="7", split="test") for i in range(3)]
    b = breakdown(examples, [" 7", " 8", " 7"])
    assert b["kind"] == {"-": {"n": 3, "accuracy": 2 / 3}}
