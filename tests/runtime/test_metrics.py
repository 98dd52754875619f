"""Metrics: bootstrap intervals, F1, degenerate-output detection."""

from lw_runtime.metrics import bootstrap_ci, f1_score, is_repetition_loop, summarize


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_n():
    small = bootstrap_ci([1.0, 0.0] * 10)
    large = bootstrap_ci([1.0, 0.0] * 500)
    assert small[1] < 0.5 < small[2] and large[1] < 0.5 < large[2]
    assert (large[2] - large[1]) < (small[2] - small[1])
    assert bootstrap_ci([1.0] * 30) == (1.0, 1.0, 1.0)


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
