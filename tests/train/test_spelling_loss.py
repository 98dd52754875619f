"""The spelling loss (--spell-weight): soft token i pulled toward the target's input embedding of the
answer's i-th token. Properties: zero when the soft tokens are those embeddings (at any scale), one per
pair when orthogonal, only the first min(answer tokens, K) soft tokens take part, the embeddings get no
gradient; in training it is off by default, logged when on, changes the updates, and a negative weight
is refused."""

import json

import pytest
import torch

from train import losses
from train.config import check_config, parse_args
from train.loop import train


class _Tok:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) % 16 for c in text]}


class _Target:
    def __init__(self):
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(16, 8)
        self.tokenizer = _Tok()

    def embed(self, ids):
        return self.table(ids)


def test_zero_when_soft_tokens_spell_the_answer_and_one_per_pair_when_orthogonal():
    target = _Target()
    answers = [" ab", " c"]  # 3 and 2 tokens
    soft = torch.randn(2, 4, 8)
    for b, a in enumerate(answers):
        ids = torch.tensor(target.tokenizer(a)["input_ids"])
        soft[b, : len(ids)] = 3.0 * target.embed(ids).detach()  # scale does not matter: cosine
    total, pairs = losses.spelling_loss(target, soft, answers)
    assert pairs == 5 and abs(float(total)) < 1e-5
    # orthogonal soft tokens: 1 - cos = 1 for every pair
    e = target.embed(torch.tensor([ord(" ") % 16])).detach()[0]
    ortho = torch.randn(8)
    ortho -= (ortho @ e) / (e @ e) * e
    total, pairs = losses.spelling_loss(target, ortho.expand(1, 4, 8).clone(), [" "])
    assert pairs == 1 and abs(float(total) - 1.0) < 1e-5
    # a sum over pairs, not a mean: three orthogonal pairs (" " three times) give 3
    total, pairs = losses.spelling_loss(target, ortho.expand(1, 4, 8).clone(), ["   "])
    assert pairs == 3 and abs(float(total) - 3.0) < 1e-5


def test_only_the_first_k_soft_tokens_take_part_and_the_embeddings_get_no_gradient():
    target = _Target()
    soft = torch.randn(1, 2, 8, requires_grad=True)
    total, pairs = losses.spelling_loss(target, soft, [" long answer"])
    assert pairs == 2  # 12 answer tokens, K = 2
    total.backward()
    assert soft.grad.abs().sum() > 0 and target.table.weight.grad is None
    empty, none = losses.spelling_loss(target, soft, [""])
    assert none == 0 and float(empty.detach()) == 0.0


def test_it_pulls_toward_exactly_the_tokens_the_target_is_trained_to_answer(tiny_models):
    """The ids the loss pulls toward are the labelled answer tokens ``build_inputs`` makes (minus EOS),
    in the soft-token slots the target reads first; soft tokens set to their embeddings give zero."""
    from lw_runtime.models import load_model
    from lw_runtime.protocols import answer_continuation

    target = load_model(tiny_models[1])
    answers = [answer_continuation(a) for a in ("4821", "train driver")]
    k = 6
    soft = torch.randn(2, k, target.model.config.hidden_size)
    inputs = losses.student_inputs(target, soft, ["Question: x\nAnswer:", "Answer:"], answers)
    for b, answer in enumerate(answers):
        labelled = [int(t) for t in inputs["labels"][b] if t != -100][:-1]  # the answer's ids, EOS dropped
        assert labelled == target.tokenizer(answer, add_special_tokens=False)["input_ids"]
        n = min(len(labelled), k)
        soft[b, :n] = target.embed(torch.tensor(labelled[:n])).detach()
    total, pairs = losses.spelling_loss(target, soft, answers)
    assert pairs == sum(min(len(target.tokenizer(a, add_special_tokens=False)["input_ids"]), k) for a in answers)
    assert abs(float(total)) < 1e-4


def test_the_added_term_is_linear_in_the_weight(tiny_run, tmp_path):
    """At step 1 (same seed, same soft tokens) the spelling term added to the logged loss doubles with
    the weight, and the logged per-pair mean does not depend on it."""
    first = {}
    for w in ("0", "1.0", "2.0"):
        train(parse_args(tiny_run(tmp_path / w, "--steps", "1", "--eval-every", "1", "--spell-weight", w)))
        first[w] = next(json.loads(line) for line in (tmp_path / w / "metrics.jsonl").read_text().splitlines() if '"loss"' in line)
    added = {w: first[w]["loss"] - first["0"]["loss"] for w in ("1.0", "2.0")}
    assert added["1.0"] > 0 and added["2.0"] == pytest.approx(2 * added["1.0"], rel=1e-4)
    assert first["1.0"]["spell"] == pytest.approx(first["2.0"]["spell"], rel=1e-6)


def test_training_logs_it_when_on_and_it_changes_the_updates(tiny_run, tmp_path):
    off = train(parse_args(tiny_run(tmp_path / "off", "--steps", "3", "--eval-every", "3")))
    on = train(parse_args(tiny_run(tmp_path / "on", "--steps", "3", "--eval-every", "3", "--spell-weight", "1.0")))
    rows = lambda out: [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]  # noqa: E731
    off_rows, on_rows = rows(tmp_path / "off"), rows(tmp_path / "on")
    assert all("spell" not in r for r in off_rows)
    assert all(0.0 <= r["spell"] <= 2.0 for r in on_rows)
    # the first step's cross-entropy is the same (same seed, same batch); the loss adds the spelling term
    assert on_rows[0]["ce"] == pytest.approx(off_rows[0]["ce"], rel=1e-5) and on_rows[0]["loss"] > off_rows[0]["loss"]
    # and the updates differ: the later cross-entropies part
    assert on_rows[-1]["ce"] != pytest.approx(off_rows[-1]["ce"], rel=1e-6)
    assert off["config"]["spell_weight"] == 0.0 and on["config"]["spell_weight"] == 1.0


def test_negative_weight_is_refused():
    with pytest.raises(ValueError, match="spell-weight"):
        check_config(parse_args(["--spell-weight", "-0.5"]))


def test_spelled_fraction_counts_slots_whose_nearest_embedding_is_the_answer_token(tiny_models):
    from lw_runtime.models import load_model
    from lw_runtime.protocols import answer_continuation

    target = load_model(tiny_models[1])
    answers = [answer_continuation(a) for a in ("4821", "cat")]
    ids = [target.tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
    k = 8
    soft = torch.zeros(2, k, target.model.config.hidden_size)
    for b, row in enumerate(ids):
        soft[b, : len(row)] = 2.0 * target.embed(torch.tensor(row)).detach()
    pairs = sum(min(len(r), k) for r in ids)
    assert losses.spelled_fraction(target, soft, answers) == 1.0
    # spoil one pair: its slot now holds another token's embedding
    other = (ids[0][0] + 1) % target.model.get_input_embeddings().num_embeddings
    soft[0, 0] = target.embed(torch.tensor([other])).detach()[0]
    assert losses.spelled_fraction(target, soft, answers) == pytest.approx((pairs - 1) / pairs)
    # the vocabulary scanned in small chunks gives the same nearest tokens as one pass
    assert losses.spelled_fraction(target, soft, answers, chunk=7) == pytest.approx((pairs - 1) / pairs)


def test_every_baseline_run_reports_the_spelled_fraction(tiny_run, tmp_path):
    """train.evaluate's diagnostics carry it (every run with baselines), and train.ablations' table shows it."""
    from train.ablations import markdown

    summary = train(parse_args(tiny_run(tmp_path / "b", "--steps", "2", "--eval-every", "2", "--baselines",
                                        "--spell-weight", "1.0")))
    fraction = summary["evaluation"]["diagnostics"]["spelled_fraction"]
    assert 0.0 <= fraction <= 1.0
    text = markdown("t", [{"name": "run", **summary}], {"device": "cpu", "date": "d", "commit": "c", "command": "x"})
    assert "spelled slots %" in text and f"| {100 * fraction:.1f} |" in text
