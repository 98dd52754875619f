"""The bridge learns: a training run on the embedded default pair (Gemma-3-270M ->
SmolLM2-135M-Instruct, 1-fact code relay, soft_only) must beat target-alone by >= 20 points on the
held-out split (unseen names, templates and codes), and the gain must vanish when the translator's
output is replaced by noise or by another example's soft tokens.

Budget: LEARNING_ARGS are the main job's defaults (1,200 steps of batch 32), the run that reached
100% held-out vs 0% target-alone on an H100 in ~3 minutes. On 2 CPU cores that is about an hour,
so these tests are marked ``slow`` and CI deselects them (``-m "not slow"``): no CPU-sized budget
found so far learns (900 steps of batch 16 with K = 4 stayed at 0%; see the issue's closing note).
``LW_LEARNING_ARGS`` replaces the flags, e.g. to try a smaller budget.
"""

import os
import shlex

import pytest
import torch

from lw_runtime.data import load_task
from lw_runtime.protocols import exact_match, target_prompt
from lw_runtime.generate import generate
from lw_runtime.translator import BottleneckedGatedTranslator
from train.config import parse_args
from train.loop import SourceCache, train

LEARNING_ARGS = shlex.split(os.environ.get("LW_LEARNING_ARGS", "--test-examples 100 --no-baselines"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("learning")
    cfg = parse_args(LEARNING_ARGS + ["--out-dir", str(out), "--no-progress"])
    summary, translator, source, target = train(cfg, return_models=True)
    return cfg, summary, translator.eval(), source, target


@pytest.mark.slow
def test_bridge_beats_target_alone_by_20_points(trained):
    summary = trained[1]
    assert summary["test_bridged_acc"] >= summary["test_target_alone_acc"] + 0.20, summary


@pytest.mark.slow
def test_gain_vanishes_with_noise_or_shuffled_soft_tokens(trained):
    cfg, summary, translator, source, target = trained  # the very models training used
    test = load_task(cfg.task, "test", cfg.test_examples, seed=cfg.seed)
    cache = SourceCache(source, cfg.source_layer, cfg.max_source_tokens, cfg.protocol)
    device = next(translator.parameters()).device
    hidden, mask = cache.batch(test, device)
    with torch.no_grad():
        soft = translator(hidden, mask)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(soft.shape, generator=gen).to(soft)
    noise = noise / noise.pow(2).mean(-1, keepdim=True).sqrt() * translator.config.target_rms
    shuffled = soft.roll(1, dims=0)  # each example gets its neighbour's soft tokens

    def accuracy(tokens):
        out = []
        for i in range(0, len(test), 50):
            out += generate(target, tokens[i : i + 50], texts=[target_prompt(e, cfg.protocol) for e in test[i : i + 50]], max_new_tokens=cfg.max_new_tokens)
        return sum(exact_match(o, e.answer) for o, e in zip(out, test)) / len(test)

    real = accuracy(soft)
    assert abs(real - summary["test_bridged_acc"]) < 1e-9  # the summary's figure is reproducible
    assert accuracy(noise) <= summary["test_target_alone_acc"] + 0.05
    assert accuracy(shuffled) <= summary["test_target_alone_acc"] + 0.05
