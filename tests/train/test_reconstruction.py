"""The reconstruction objective and every-question-per-passage training (train/reconstruction.py,
train/questions.py), on tiny random Llamas and the synthetic relay-QA data.

Properties: each fact of a passage is asked once, with an answer that occurs once in the passage;
the reconstruction labels are exactly the tokens the source read (plus EOS) and nothing else; the
reconstruction stage trains reconstruction alone and the QA stage adds the answer loss; in
``context`` the translator reads each passage once however many questions it serves; fact recall
counts delimited values only.
"""

import json

import pytest
import torch

from train.data import load_task
from train.data.templates import RELAY_QUESTIONS
from lw_runtime.protocols import source_text
from train import losses, questions, reconstruction
from train.config import parse_args
from train.loop import train
from train.random_models import save_random


def test_every_fact_is_asked_once_with_an_unambiguous_answer():
    for example in load_task("relay_qa:4", "train", 40, seed=3):
        rows = questions.fact_questions(example)
        assert rows[0] == example  # the drawn question first, unchanged
        values = [value for _, _, value in example.meta["facts"]]
        unambiguous = [v for v in values if example.passage.count(v) == 1]
        assert sorted(r.answer for r in rows) == sorted(unambiguous)
        assert len({r.id for r in rows}) == len(rows)
        for row in rows[1:]:
            person, kind = row.meta["entity"], row.meta["kind"]
            assert row.question in [t.format(name=person) for t in RELAY_QUESTIONS[kind]["train"]]
            assert row.passage == example.passage and row.passage.count(row.answer) == 1
        assert [r.question for r in questions.fact_questions(example)] == [r.question for r in rows]  # deterministic


def test_single_fact_examples_are_not_expanded():
    batch = load_task("relay_code2", "train", 5, seed=0)
    rows, owner = questions.expand(batch, all_questions=True)
    assert rows == batch and owner == list(range(5))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return save_random(root / "source", "tiny", seed=1), save_random(root / "target", "tiny-wide", seed=2)


@pytest.mark.parametrize("protocol, order", [("soft_only", "question_first"), ("context", "passage_first")])
def test_reconstruction_labels_are_exactly_the_source_text(models, protocol, order):
    from lw_runtime.models import load_model

    target = load_model(models[1], dtype=torch.float32, device="cpu")
    examples = load_task("relay_qa:2", "validation", 3, seed=0)
    soft = torch.randn(3, 4, target.hidden_size)
    logits, labels = reconstruction.reconstruction_logits(target, soft, examples, protocol, order)
    tok = target.tokenizer
    want = []
    for e in examples:
        want += tok(" " + source_text(e, protocol, order), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert labels.tolist() == want
    assert logits.shape == (len(want), target.model.config.vocab_size)
    assert losses.labelled_token_count(tok, reconstruction.reconstruction_targets(examples, protocol, order)) == len(want)


def test_fact_recall_counts_delimited_values_only():
    assert reconstruction.appears("48", "Ava's code is 48.")
    assert not reconstruction.appears("48", "Ava's code is 4821.")
    assert not reconstruction.appears("Bern", "Bernard lives here")
    assert reconstruction.appears("New York", "lives in New York, sadly")


def _run(models, out, *extra):
    args = ["--source", models[0], "--target", models[1], "--preset", "tiny", "--source-layer", "-1", "--steps", "6",
            "--batch-size", "4", "--warmup", "2", "--eval-every", "3", "--checkpoint-every", "0", "--train-examples", "32",
            "--val-examples", "4", "--test-examples", "4", "--max-new-tokens", "3", "--recon-eval", "2", "--no-baselines",
            "--no-progress", "--no-tensorboard", "--threads", "1", "--out-dir", str(out), *extra]
    return train(parse_args(args), return_models=True)


def test_stages_reconstruction_then_qa(models, tmp_path):
    summary = _run(models, tmp_path, "--task", "relay_qa:2", "--recon-steps", "3", "--recon-weight", "0.5")[0]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for r in rows[:3]:
        assert "recon" in r and "ce" not in r and r["loss"] == pytest.approx(r["recon"] + 0.05 * r.get("infonce", 0.0))
    for r in rows[3:]:
        assert "recon" in r and "ce" in r
        assert r["loss"] == pytest.approx(r["ce"] + 0.5 * r["recon"] + 0.05 * r.get("infonce", 0.0))
    assert {"recon_token_acc", "recon_exact", "fact_recall"} <= set(rows[2])
    assert summary["best_step"] > 3  # the reconstruction stage never sets the best QA translator
    assert 0.0 <= summary["test_reconstruction"]["fact_recall"] <= 1.0


@pytest.mark.parametrize("protocol", ["context", "soft_only"])
def test_translator_reads_each_passage_once_in_context_and_each_question_in_soft_only(models, tmp_path, monkeypatch, protocol):
    from train import loop

    widths = []  # (passages in the micro-batch, questions trained on them, rows the translator read)
    original = loop.Trainer._micro_loss

    def spy(self, examples, *args, **kwargs):
        rows = len(questions.expand(examples, True)[0])
        handle = self.translator.register_forward_hook(lambda m, a, out: widths.append((len(examples), rows, out.shape[0])))
        try:
            return original(self, examples, *args, **kwargs)
        finally:
            handle.remove()

    monkeypatch.setattr(loop.Trainer, "_micro_loss", spy)
    _run(models, tmp_path, "--task", "relay_qa:3", "--protocol", protocol, "--all-questions", "--steps", "2",
         "--eval-every", "2")
    assert widths and all(rows > passages for passages, rows, _ in widths)  # several questions per passage
    read = [passages if protocol == "context" else rows for passages, rows, _ in widths]
    assert [w for _, _, w in widths] == read


def test_prompt_tuning_baseline_trains_the_prompt_and_scores_like_the_bridge(models, tmp_path):
    from lw_runtime.protocols import exact_match
    from train.prompt_tuning import train_prompt

    args = ["--source", models[0], "--target", models[1], "--preset", "tiny", "--task", "relay_code2", "--steps", "3",
            "--batch-size", "4", "--warmup", "1", "--eval-every", "1", "--train-examples", "16", "--test-examples", "5",
            "--max-new-tokens", "3", "--threads", "1", "--out-dir", str(tmp_path)]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        summary = train_prompt(parse_args(args))
        assert torch.get_num_threads() == 2  # --threads holds for the run only
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "prompt_tuning.json").read_text())
    assert saved["soft_prompt_tokens"] == 8 and saved["test_examples"] == 5
    assert len(saved["loss_curve"]) == 3 and all(loss > 0 for _, loss in saved["loss_curve"])
    test = load_task("relay_code2", "test", 5, seed=0)
    assert saved["correct"] == [exact_match(o, e.answer) for o, e in zip(saved["samples"]["outputs"], test)]
    assert summary["test_acc"] == sum(saved["correct"]) / 5


def test_infonce_gathers_one_row_per_passage_with_all_questions(models, tmp_path, monkeypatch):
    """Ranks gather equal-sized InfoNCE batches: one row per passage, however many questions each has."""
    from train import distributed

    widths = []
    original = distributed.all_gather_with_grad

    def spy(tensor, ctx):
        widths.append(tensor.shape[0])
        return original(tensor, ctx)

    monkeypatch.setattr(distributed, "all_gather_with_grad", spy)
    _run(models, tmp_path, "--task", "relay_qa:3", "--protocol", "soft_only", "--all-questions", "--steps", "3",
         "--warmup", "2", "--eval-every", "3")
    assert widths and all(w == 4 for w in widths)  # --batch-size 4 passages, never their question rows


def test_spelling_loss_is_refused_where_one_passage_serves_several_answers():
    from train.config import check_config

    with pytest.raises(ValueError, match="spell-weight"):
        check_config(parse_args(["--task", "relay_qa:4", "--protocol", "context", "--all-questions", "--spell-weight", "1"]))
    check_config(parse_args(["--task", "relay_qa:4", "--protocol", "soft_only", "--all-questions", "--spell-weight", "1"]))
