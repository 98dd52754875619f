"""The captured training step (train/captured.py) against the eager one, on the CPU in fp32.

Compiled with ``backend="aot_eager"``: dynamo traces the step and AOTAutograd captures its backward
as on a GPU, without inductor's minute of C++ compilation per shape. Relay-QA in ``context`` gives
prompts and answers of different lengths, so rows are padded inside a batch; the batch (5), the
soft tokens (3) and every length are odd. Dropout is off (compiled and eager dropout masks differ)
and the gates start open, so every parameter has a gradient to compare.
"""

import pytest
import torch

from lw_runtime.generate import bos_prefix
from lw_runtime.models import LoadedModel, fix_tokenizer
from train.captured import CapturedStep, bucket, captured_on, host_floats
from train.config import check_config, parse_args
from train.data import load_task
from train.distributed import DistContext, apply_activation_checkpointing
from train.flops import StepFlops
from train.loop import SourceCache, Trainer, flush_denormal_is_on
from train.random_models import byte_tokenizer
from train.source_cache import shared_models

CPU = DistContext(device=torch.device("cpu"))
AOT = {"backend": "aot_eager"}


@pytest.fixture(autouse=True)
def fresh_dynamo_and_no_denormals():
    """Compiled code is cached per code object across trainers: each test starts and ends clean.
    Subnormals are flushed as ``train.loop.train`` flushes them (the target's backward is 10x slower without)."""
    flush, threads = flush_denormal_is_on(), torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)  # tiny shapes: a second thread only waits (the tiny runs use --threads 1 too)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
    torch.set_flush_denormal(flush)
    torch.set_num_threads(threads)


def flags(models, *extra):
    return ["--source", models[0], "--target", models[1], "--preset", "tiny", "--tokens", "3", "--source-layer", "-1",
            "--task", "relay_qa:2", "--protocol", "context", "--batch-size", "5", "--warmup", "0", "--dropout", "0",
            "--gate-init", "0.5",
            "--device", "cpu", "--no-progress", *extra]


@pytest.fixture(scope="module")
def pair(tiny_models):
    """(cfg, source, target, cache, examples) of the tiny pair, source states of 24 examples cached."""
    cfg = parse_args(flags(tiny_models))
    source, target = shared_models(cfg, torch.device("cpu"), torch.float32)
    examples = load_task(cfg.task, "train", 24, seed=0)
    cache = SourceCache(source, cfg.source_layer, cfg.max_source_tokens, cfg.protocol)
    cache.fill(examples)
    return cfg, source, target, cache, examples


def tiny_gemma() -> LoadedModel:
    """A random Gemma-3 text model (scaled embeddings, logit softcapping, a sliding-window layer) whose
    tokenizer puts BOS first, as Gemma's does, so rows are [BOS][soft tokens][text]."""
    from tokenizers import processors
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(3)
    config = Gemma3TextConfig(hidden_size=80, intermediate_size=136, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=20, vocab_size=260, max_position_embeddings=512,
                              sliding_window=16, final_logit_softcapping=30.0,
                              layer_types=["sliding_attention", "full_attention"],
                              pad_token_id=256, eos_token_id=257, bos_token_id=258)
    model = Gemma3ForCausalLM(config).eval().requires_grad_(False)
    tokenizer = byte_tokenizer()
    bos = processors.TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", 258)])
    tokenizer._tokenizer.post_processor = bos
    return LoadedModel(model=model, tokenizer=fix_tokenizer(tokenizer), name="random:gemma3")


def trainer(cfg, source, target, cache, examples, **kw) -> Trainer:
    torch.manual_seed(0)  # every trainer starts from the same translator and projection
    return Trainer(cfg, CPU, source, target, cache, cache.batch(examples, "cpu"), **kw)


def micro_step(t: Trainer, batch, qa_on=True, recon_w=0.5, infonce=True):
    """(loss, sums as floats, gradients by name) of one micro-batch, loss scaled as Trainer.step scales it."""
    t.optimizer.zero_grad(set_to_none=True)
    loss, sums = t._micro_loss(batch, 1 / 37, infonce, qa_on, recon_w, 1 / 211)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}
    return float(loss.detach()), host_floats(sums), grads


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp(min=1e-30))


def assert_same_step(got, want, tol=1e-5, grad_tol=1e-4):
    """Losses within ``tol``; every gradient within ``grad_tol`` relative RMS (a gate's gradient is one
    sum of cancelling terms, where another summation order moves the last digits most)."""
    (loss, sums, grads), (loss0, sums0, grads0) = got, want
    assert loss == pytest.approx(loss0, rel=tol)
    for key in ("ce", "recon", "infonce", "target_tokens"):
        assert sums[key] == pytest.approx(sums0[key], rel=tol), key
    assert grads.keys() == grads0.keys() and len(grads0) > 10
    for name, grad in grads0.items():
        assert grad.abs().max() > 0, name
        assert rel_rms(grads[name], grad) < grad_tol, (name, rel_rms(grads[name], grad))


@pytest.mark.parametrize("target_kind", ["llama", "gemma"])
def test_captured_loss_and_gradients_equal_the_eager_step(pair, target_kind):
    cfg, source, target, cache, examples = pair
    if target_kind == "gemma":
        target = tiny_gemma()
        assert bos_prefix(target.tokenizer) == [258]
    batch = examples[3:8]
    eager = trainer(cfg, source, target, cache, examples)
    captured = trainer(cfg, source, target, cache, examples)
    captured.captured = CapturedStep(captured, compile=AOT)
    want = micro_step(eager, batch)
    got = micro_step(captured, batch)
    assert_same_step(got, want)
    assert torch.equal(captured.last_soft, eager.last_soft) or rel_rms(captured.last_soft, eager.last_soft) < 1e-6


def test_padding_to_buckets_changes_neither_loss_nor_gradients(pair):
    cfg, source, target, cache, examples = pair
    batch = examples[10:15]
    padded, exact = (trainer(cfg, source, target, cache, examples) for _ in range(2))
    padded.captured = CapturedStep(padded, pad=True, compile=False)
    exact.captured = CapturedStep(exact, pad=False, compile=False)
    want = micro_step(exact, batch)
    got = micro_step(padded, batch)
    (big,), (small,) = padded.captured.calls, exact.captured.calls
    assert big["source"] > small["source"]  # the bucket really padded every dimension
    assert all(b[0] > s[0] and b[1] > s[1] for b, s in zip(big["targets"], small["targets"]))
    assert_same_step(got, want)


def test_the_fixed_shape_inputs_are_what_eager_builds_without_padding(pair):
    """The fixed-shape function uncompiled, at the batch's own sizes: the eager step's numbers exactly."""
    cfg, source, target, cache, examples = pair
    batch = examples[5:10]
    eager, exact = (trainer(cfg, source, target, cache, examples) for _ in range(2))
    exact.captured = CapturedStep(exact, pad=False, compile=False)
    assert_same_step(micro_step(exact, batch), micro_step(eager, batch), tol=1e-6, grad_tol=1e-6)


@pytest.mark.parametrize("protocol", ["context", "soft_only"])
def test_all_questions_padded_and_compiled_equal_the_eager_step(tiny_models, protocol):
    """--all-questions: 5 passages of 2 facts give up to 10 rows, padded to a bucket of 16 with
    label-free copies; in context the 5 passage reads serve their rows by the owner index, in
    soft_only each row is its own read and InfoNCE sees one per passage."""
    cfg = parse_args(flags(tiny_models, "--all-questions", "--protocol", protocol))
    source, target = shared_models(cfg, torch.device("cpu"), torch.float32)
    examples = load_task(cfg.task, "train", 24, seed=0)
    cache = SourceCache(source, cfg.source_layer, cfg.max_source_tokens, cfg.protocol)
    cache.fill(examples)
    batch = examples[3:8]
    eager, captured = (trainer(cfg, source, target, cache, examples) for _ in range(2))
    captured.captured = CapturedStep(captured, compile=AOT)
    want = micro_step(eager, batch)
    got = micro_step(captured, batch)
    (call,) = captured.captured.calls
    rows = len(captured.captured.rows(batch)[0])
    assert rows == 16 and call["targets"][0][1] > 0
    assert call["batch"] == (5 if protocol == "context" else 16)
    assert want[1]["target_tokens"] > 0 and got[1]["target_tokens"] == want[1]["target_tokens"]
    assert_same_step(got, want)
    assert captured.last_soft.shape == eager.last_soft.shape


def test_a_batch_of_new_lengths_reuses_its_bucket(pair):
    """Once a run's buckets hold its batches, batches of other lengths run the same graph; at their
    own sizes every new length would compile again."""
    from torch._dynamo.testing import CompileCounterWithBackend

    cfg, source, target, cache, examples = pair
    batches = [examples[i : i + 5] for i in range(0, 20, 5)]
    lengths = {max(len(cache.store[e.id]) for e in b) for b in batches}
    assert len(lengths) > 1  # the batches need different source lengths
    t = trainer(cfg, source, target, cache, examples)
    sizing = CapturedStep(t, compile=False)  # the run's high-water marks after these batches
    for b in batches:
        sizing.micro_loss(b, 1.0, True, True, 0.0, 0.0)
    counts = {}
    for pad in (True, False):
        counter = CompileCounterWithBackend("eager")
        t.captured = CapturedStep(t, pad=pad, compile={"backend": counter})
        t.captured.high = dict(sizing.high)
        for b in batches:
            t._micro_loss(b, 1.0, True, True, 0.0, 0.0)[0].backward()
        counts[pad] = counter.frame_count
        torch._dynamo.reset()
    assert counts[True] == 1
    assert counts[False] >= len(lengths)


@pytest.mark.parametrize("extra", [(), ("--all-questions", "--recon-weight", "0.5"),
                                   ("--all-questions", "--protocol", "soft_only")])
def test_presize_from_the_pool_gives_every_batch_one_shape(tiny_models, extra):
    """After ``presize`` over the training pool no batch of it grows a shape (each growth would be a
    compile); without it, these batches of different lengths need more than one."""
    cfg = parse_args(flags(tiny_models, *extra))
    source, target = shared_models(cfg, torch.device("cpu"), torch.float32)
    examples = load_task(cfg.task, "train", 20, seed=0)
    cache = SourceCache(source, cfg.source_layer, cfg.max_source_tokens, cfg.protocol)
    cache.fill(examples)
    batches = [examples[i : i + 5] for i in range(0, 20, 5)]
    t = trainer(cfg, source, target, cache, examples)
    seen = {}
    for presized in (False, True):
        step = CapturedStep(t, compile=False)
        if presized:
            step.presize(examples)
        for b in batches:
            step.micro_loss(b, 1.0, True, True, cfg.recon_weight, 1.0)
        seen[presized] = len(step.shapes_seen)
    assert seen[True] == 1 and seen[False] > 1, seen


def test_a_bucket_never_shrinks_within_a_run(pair):
    cfg, source, target, cache, examples = pair
    t = trainer(cfg, source, target, cache, examples)
    step = CapturedStep(t, compile=False)
    assert [step.size("x", n) for n in (33, 20, 41, 9)] == [40, 40, 48, 48]
    assert [bucket(n) for n in (1, 9, 64, 65, 129, 513)] == [8, 16, 64, 72, 144, 576]


def test_trainer_steps_with_compile_on_match_eager_ones_with_activation_checkpointing(pair, tiny_models):
    """Whole optimizer steps (2 micro-batches each; InfoNCE from the second step) through
    Trainer.step, with the target's blocks checkpointed: the same losses, norms and parameters."""
    _, source, target, cache, examples = pair
    undo = apply_activation_checkpointing(target)
    try:
        runs = {}
        for mode in ("off", "on"):
            cfg = parse_args(flags(tiny_models, "--compile", mode, "--batch-size", "6", "--grad-accum", "2", "--warmup", "2",
                                   "--recon-weight", "0.3"))
            graphs = []

            def backend(gm, inputs):  # aot_eager, counting the graphs dynamo hands it
                graphs.append(gm)
                return torch._dynamo.backends.debugging.aot_eager(gm, inputs)

            t = trainer(cfg, source, target, cache, examples, compile_options={"backend": backend})
            assert (t.captured is not None) == (mode == "on")
            if t.captured is not None:
                t.captured.presize(examples[:12])  # both steps' shapes known: only InfoNCE's start could recompile
            records = [t.step(0, examples[:6])]
            compiled_in_step_0 = len(graphs)
            records.append(t.step(1, examples[6:12]))
            params = [p.detach().clone() for p in [*t.translator.parameters(), *t.projection.parameters()]]
            runs[mode] = records, params, [int(t.optimizer.state[p]["step"]) for p in t.projection.parameters()]
            if mode == "on":  # InfoNCE at weight 0 in step 0, then on in step 1: nothing compiles again
                assert compiled_in_step_0 > 0 and len(graphs) == compiled_in_step_0
                assert [c["infonce"] for c in t.captured.calls] == [False, False, True, True]  # FLOPs as eager counts
    finally:
        undo()
    (eager, eager_params, eager_counts), (captured, captured_params, captured_counts) = runs["off"], runs["on"]
    for r0, r in zip(eager, captured):
        for key in ("loss", "ce", "recon", "grad_norm"):
            assert r[key] == pytest.approx(r0[key], rel=1e-5), key
        assert ("infonce" in r) == ("infonce" in r0)
    assert "infonce" not in captured[0] and "infonce" in captured[1]
    assert captured[1]["infonce"] == pytest.approx(eager[1]["infonce"], rel=1e-5)
    # the projection is updated from the step InfoNCE starts, not before (no weight decay, no AdamW count)
    assert captured_counts == eager_counts == [1] * len(eager_counts)
    for p0, p in zip(eager_params, captured_params):  # AdamW's normalised updates magnify last-bit differences
        assert rel_rms(p, p0) < 1e-4


def test_pipelined_steps_equal_the_captured_ones_a_step_later(pair, tiny_models):
    """The pipelined step (what CUDA runs: device-side skip, values read a step later) gives the same
    records and parameters as the captured step that waits for its values; its records come one call
    late and ``flush`` returns the last."""
    _, source, target, cache, examples = pair
    runs = {}
    for pipelined in (False, True):
        cfg = parse_args(flags(tiny_models, "--compile", "on", "--batch-size", "6", "--warmup", "2"))
        t = trainer(cfg, source, target, cache, examples, compile_options=AOT, pipelined=pipelined)
        assert t.pipelined == pipelined
        returned = [t.step(s, examples[6 * s : 6 * s + 6]) for s in range(3)]
        runs[pipelined] = returned, t.flush(), [p.detach().clone() for p in t.translator.parameters()]
    (waited, none, params0), (late, last, params) = runs[False], runs[True]
    assert none is None and late[0] is None
    records = late[1:] + [last]
    assert [r["step"] for r in records] == [r["step"] for r in waited] == [1, 2, 3]
    for r0, r in zip(waited, records):
        for key in ("loss", "ce", "grad_norm", "lr"):
            assert r[key] == pytest.approx(r0[key], rel=1e-5), key
        assert ("infonce" in r) == ("infonce" in r0) and "skipped" not in r
    for p0, p in zip(params0, params):  # fused (pipelined) and foreach AdamW differ in the last bits
        assert rel_rms(p, p0) < 1e-4


def test_a_pipelined_step_with_a_non_finite_norm_changes_nothing_and_is_reported(pair, tiny_models, monkeypatch):
    _, source, target, cache, examples = pair
    cfg = parse_args(flags(tiny_models, "--compile", "on", "--batch-size", "6"))
    t = trainer(cfg, source, target, cache, examples, compile_options=AOT, pipelined=True)
    assert t.step(0, examples[:6]) is None
    before = [p.detach().clone() for p in t.translator.parameters()]
    steps_before = [t.optimizer.state[p]["step"].clone() for p in t.translator.parameters()]
    import train.loop as loop
    real = loop.distributed.total_grad_norm
    monkeypatch.setattr(loop.distributed, "total_grad_norm", lambda params: real(params) * float("inf"))
    first = t.step(1, examples[6:12])
    monkeypatch.setattr(loop.distributed, "total_grad_norm", real)
    assert first["step"] == 1 and "skipped" not in first
    for p0, p in zip(before, t.translator.parameters()):
        assert torch.equal(p0, p)  # the update was skipped on the device (fused AdamW's found_inf)
    assert [t.optimizer.state[p]["step"] for p in t.translator.parameters()] == steps_before
    skipped = t.flush()
    assert skipped["step"] == 2 and skipped["skipped"] is True
    assert t.step(2, examples[12:18]) is None  # and the run goes on: the next step updates again
    assert t.flush()["step"] == 3
    assert any(not torch.equal(p0, p) for p0, p in zip(before, t.translator.parameters()))


def test_a_pipelined_run_logs_every_step_once_in_order_with_validation_where_it_was_taken(tiny_models, tmp_path,
                                                                                          monkeypatch):
    """train() with the pipelined step (forced on the CPU) against the same run waiting for each step:
    one record per step in order, validation on the steps it ran after, the same losses."""
    import json

    import train.loop as loop

    logs = {}
    for pipelined in (False, True):
        class Forced(loop.Trainer):
            def __init__(self, *args, **kw):
                super().__init__(*args, **{**kw, "compile_options": AOT, "pipelined": pipelined})

        monkeypatch.setattr(loop, "Trainer", Forced)
        out = tmp_path / f"p{pipelined}"
        loop.train(parse_args(flags(tiny_models, "--compile", "on", "--steps", "7", "--eval-every", "3", "--batch-size", "6",
                                    "--train-examples", "24", "--val-examples", "3", "--test-examples", "3",
                                    "--max-new-tokens", "2", "--no-baselines", "--no-tensorboard", "--checkpoint-every", "4",
                                    "--threads", "1", "--out-dir", str(out))))
        logs[pipelined] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    waited, piped = logs[False], logs[True]
    assert [r["step"] for r in piped] == [r["step"] for r in waited] == list(range(1, 8))
    assert [r["step"] for r in piped if "val_acc" in r] == [3, 6, 7]
    for r0, r in zip(waited, piped):
        assert r["loss"] == pytest.approx(r0["loss"], rel=1e-4)


def test_captured_flops_are_the_step_recorders_at_the_same_shapes(pair):
    cfg, source, target, cache, examples = pair
    batch = examples[:5]
    eager, exact = (trainer(cfg, source, target, cache, examples) for _ in range(2))
    recorder = StepFlops(eager)
    try:
        micro_step(eager, batch)
        want = recorder.by_part()
    finally:
        recorder.close()
    exact.captured = CapturedStep(exact, pad=False, compile=False)
    micro_step(exact, batch)
    assert exact.captured.flops_by_part() == want and min(want.values()) > 0


def test_compile_regions_refuse_what_the_captured_step_does_not_compile():
    with pytest.raises(ValueError, match="--compile-regions does not reach blocks under --activation-checkpointing"):
        check_config(parse_args(["--compile-regions", "--activation-checkpointing"]))
    for flags, named in ((["--compile", "off"], "--compile off"), (["--shard-target"], "--shard-target")):
        with pytest.raises(ValueError, match=f"with {named} the step runs eagerly"):
            check_config(parse_args(["--compile-regions", *flags]))
    check_config(parse_args(["--compile-regions"]))


def test_compile_flag_values_and_what_falls_back(capsys):
    with pytest.raises(ValueError, match="--compile is off, on, waited or auto"):
        check_config(parse_args(["--compile", "yes"]))
    for mode in ("on", "waited"):
        with pytest.raises(ValueError, match=f"--compile {mode}: .*--kl-teacher"):
            check_config(parse_args(["--compile", mode, "--kl-teacher"]))
    assert captured_on(parse_args(flags(("s", "t"), "--compile", "waited")), CPU)
    check_config(parse_args(["--compile", "auto", "--kl-teacher"]))  # auto runs it eagerly instead
    cuda = DistContext(device=torch.device("cuda"))
    on, auto = (parse_args(flags(("s", "t"), "--compile", m)) for m in ("on", "auto"))
    assert captured_on(on, CPU) and captured_on(auto, cuda) and not captured_on(auto, CPU)
    default = parse_args(flags(("s", "t")))  # auto by default: captured on CUDA, eager on the CPU
    assert default.compile == "auto" and captured_on(default, cuda) and not captured_on(default, CPU)
    assert not captured_on(parse_args(flags(("s", "t"), "--compile", "off")), cuda)
    assert not captured_on(parse_args(flags(("s", "t"), "--compile", "auto", "--spell-weight", "0.1")), cuda)
    assert captured_on(parse_args(flags(("s", "t"), "--compile", "auto", "--all-questions")), cuda)
    assert "--spell-weight not captured" in capsys.readouterr().out
    with pytest.raises(ValueError, match="process group"):
        captured_on(on, DistContext(device=torch.device("cpu"), distributed=True))


def test_the_benchmark_times_eager_and_captured_steps_on_the_same_batches(tmp_path):
    """benchmarks/gpu_train.py --compile (what a GPU run measures) on the tiny pair: both rows, the
    same first loss, the speed-up and the compile record (dynamo's eager backend: seconds on a CPU)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # the script starts its own group
    env = {k: v for k, v in os.environ.items() if k not in launcher}
    run = subprocess.run([sys.executable, "benchmarks/gpu_train.py", "--quick", "--device", "cpu", "--no-shapes",
                          "--compile", "off,backend:eager", "--out", str(tmp_path)], cwd=root,
                         env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    eager, captured = json.loads((tmp_path / "gpu_train.json").read_text())["results"]
    assert eager["compile"] == "off" and captured["compile"] == "backend:eager", (eager, captured)
    assert captured["loss_first_last"][0] == pytest.approx(eager["loss_first_last"][0], rel=1e-4)
    assert captured["speedup_vs_off"] == pytest.approx(captured["samples_per_s"] / eager["samples_per_s"], rel=0.01)
    assert captured["graph_breaks"] == 0 and captured["compiled_shapes"] >= 1 and captured["tflop_per_step"] > 0
    assert "**" in (tmp_path / "gpu_train.md").read_text().split("Captured step")[1]


def test_compile_waited_runs_the_captured_step_without_pipelining(tiny_models, tmp_path, monkeypatch):
    """--compile waited: train() builds a captured Trainer told not to pipeline (on CUDA it would by default)."""
    import train.loop as loop

    seen = []

    class Spy(loop.Trainer):
        def __init__(self, *args, **kw):
            seen.append(kw.get("pipelined"))
            super().__init__(*args, **{**kw, "compile_options": AOT})

    monkeypatch.setattr(loop, "Trainer", Spy)
    for mode in ("waited", "on"):
        loop.train(parse_args(flags(tiny_models, "--compile", mode, "--steps", "2", "--eval-every", "2", "--batch-size", "4",
                                    "--train-examples", "8", "--val-examples", "2", "--test-examples", "2",
                                    "--max-new-tokens", "1", "--no-baselines", "--no-tensorboard", "--checkpoint-every", "0",
                                    "--threads", "1", "--out-dir", str(tmp_path / mode))))
    assert seen == [False, None]


def test_block_regions_compile_one_block_for_all_and_change_no_loss_or_gradient(pair):
    """--compile-regions: the target's blocks are one nested compile region while the run lasts (their
    classes put back after), traced once per input shape and called by every block, and the captured
    step's loss and gradients stay the eager step's."""
    from train.captured import block_regions

    cfg, source, target, cache, examples = pair
    batch = examples[3:8]
    try:
        blocks = [getattr(b, "_checkpoint_wrapped_module", b) for b in target.model.base_model.layers]
        classes = [b.__class__ for b in blocks]
        eager = trainer(cfg, source, target, cache, examples)
        want = micro_step(eager, batch)
        with block_regions(target):
            assert len({b.__class__ for b in blocks}) == 1 and all(b.__class__.__name__.endswith("Region") for b in blocks)
            assert all(isinstance(b, c) for b, c in zip(blocks, classes))
            captured = trainer(cfg, source, target, cache, examples)
            graphs = []

            def backend(gm, inputs):  # dynamo's graph, then aot_eager as in the other tests
                graphs.append(gm)
                return torch._dynamo.backends.debugging.aot_eager(gm, inputs)

            captured.captured = CapturedStep(captured, compile={"backend": backend})
            got = micro_step(captured, batch)
        assert [b.__class__ for b in blocks] == classes
        calls = [n for gm in graphs for n in gm.graph.nodes if n.target is torch.ops.higher_order.invoke_subgraph]
        subgraphs = {n.args[0].target for n in calls}
        # one traced subgraph per target input shape (the QA rows, the reconstruction rows), called by every block
        assert len(graphs) == 1 and len(subgraphs) == 2
        assert sorted(n.args[0].target for n in calls) == sorted(list(subgraphs) * len(blocks))
    finally:
        torch._dynamo.reset()
    assert_same_step(got, want)
