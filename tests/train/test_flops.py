"""The analytic FLOP count (train/flops.py) against torch's FlopCounterMode on CPU.

SDPA runs on its math backend here: on CPU the fused kernel is not counted by FlopCounterMode, and
the math backend's matmuls are exactly the model FLOPs (no recompute in backward). Sizes are odd
and the vocabulary large, so the LM head only at the supervised rows, the attention square and the
backward factors each move the total by far more than the tolerance. torch's convolution_backward
formula ignores ``groups`` in its weight-gradient term (it counts the translator's depthwise conv's
dW once per channel), so the count here uses a grouped one.
"""

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lw_runtime.translator import BottleneckedGatedTranslator, TranslatorConfig
from train.flops import (DecoderShape, StepFlops, achieved, decoder_forward_flops, frozen_decoder_flops,
                         peak_bf16_tflops, translator_flops)

REL = 0.01  # matmuls outside the model FLOPs (InfoNCE similarity, rotary frequencies) are counted by torch


def grouped_conv_backward(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                          _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """dX and dW of a (non-transposed) convolution: each costs its forward, 2 x outputs x C_in/groups x kernel."""
    assert not transposed
    forward = 2 * math.prod(grad_out_shape) * math.prod(w_shape[1:])
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: grouped_conv_backward})


def counted(fn) -> tuple[int, int]:
    """(forward FLOPs, forward + backward FLOPs) FlopCounterMode counts for ``fn`` -> a loss."""
    with sdpa_kernel(SDPBackend.MATH):
        with flop_counter() as fwd_mode:
            loss = fn()
        with flop_counter() as bwd_mode:
            loss.backward()
    return fwd_mode.get_total_flops(), fwd_mode.get_total_flops() + bwd_mode.get_total_flops()


def close(ours: int, torchs: int) -> bool:
    return abs(ours - torchs) <= REL * torchs


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=96, intermediate_size=200, num_hidden_layers=3, num_attention_heads=6,
                      num_key_value_heads=2, vocab_size=3001, max_position_embeddings=256, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    return model


def target_step(model, batch=3, seq=41, supervised=7):
    """answer_logits' shape of work: soft-token-carrying embeddings through the frozen decoder, the
    LM head only at ``supervised`` positions per row, a loss, its gradient to the embeddings."""
    embeds = torch.randn(batch, seq, model.config.hidden_size, requires_grad=True)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, -5:] = 0  # right padding, as student_inputs pads
    select = torch.zeros(batch, seq, dtype=torch.bool)
    select[:, 20 : 20 + supervised] = True

    def loss():
        hidden = model.base_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        return model.get_output_embeddings()(hidden[select]).float().logsumexp(-1).sum()

    return embeds, loss, batch * supervised


def test_frozen_target_forward_and_input_grad_backward_match_flop_counter(tiny_llama):
    embeds, loss, rows = target_step(tiny_llama)
    fwd, step = counted(loss)
    shape = DecoderShape.of(tiny_llama)
    ours_fwd = sum(decoder_forward_flops(shape, 3, 41, rows).values())
    ours_step = frozen_decoder_flops(shape, 3, 41, rows)
    assert close(ours_fwd, fwd), (ours_fwd, fwd)
    assert close(ours_step, step), (ours_step, step)
    assert embeds.grad is not None and all(p.grad is None for p in tiny_llama.parameters())


@pytest.mark.parametrize("position", ["conv", "none"])
def test_translator_forward_and_backward_match_flop_counter(position):
    torch.manual_seed(0)
    cfg = TranslatorConfig(source_dim=72, target_dim=88, num_soft_tokens=9, depth=2, num_heads=4, bottleneck_dim=80,
                           source_position=position, dropout=0.0)
    translator = BottleneckedGatedTranslator(cfg).train()
    hidden = torch.randn(3, 29, 72)
    mask = torch.ones(3, 29, dtype=torch.bool)
    mask[0, :6] = False  # left padding, as the source cache pads
    fwd, step = counted(lambda: translator(hidden, mask).square().sum())
    ours_fwd = translator_flops(cfg, 3, 29, backward=False)
    ours_step = translator_flops(cfg, 3, 29)
    assert close(ours_fwd, fwd), (ours_fwd, fwd)
    assert close(ours_step, step), (ours_step, step)


@pytest.fixture(scope="module")
def wide_vocab_pair(tmp_path_factory):
    """Tiny source and target saved as folders; the target's vocabulary is wide and the translator
    (below) small, so the target's part, LM head included, is most of a step's FLOPs."""
    from train.random_models import save_random
    from train.source_cache import forget_shared_models

    root = tmp_path_factory.mktemp("flops_pair")
    yield save_random(root / "source", "tiny", seed=1), save_random(root / "target", "tiny-wide", seed=2, vocab_size=6007)
    forget_shared_models()


def test_step_recorder_matches_flop_counter_on_a_trainer_step(wide_vocab_pair):
    """StepFlops' hooks see the shapes a real Trainer step runs (translator, target, LM-head rows,
    InfoNCE projection): their count matches FlopCounterMode over the whole step."""
    from train.data import load_task
    from train.config import parse_args
    from train.distributed import DistContext
    from train.loop import SourceCache, Trainer
    from train.source_cache import shared_models

    cfg = parse_args(["--source", wide_vocab_pair[0], "--target", wide_vocab_pair[1], "--preset", "tiny", "--bottleneck", "32",
                      "--heads", "2", "--depth", "1", "--tokens", "4", "--source-layer", "-1", "--max-source-tokens", "24",
                      "--batch-size", "4", "--warmup", "0", "--device", "cpu", "--no-progress", "--threads", "1"])
    source, target = shared_models(cfg, torch.device("cpu"), torch.float32)
    examples = load_task(cfg.task, "train", 8, seed=0)
    cache = SourceCache(source, cfg.source_layer, cfg.max_source_tokens, cfg.protocol)
    cache.fill(examples)
    torch.manual_seed(0)
    trainer = Trainer(cfg, DistContext(device=torch.device("cpu")), source, target, cache, cache.batch(examples, "cpu"))
    recorder = StepFlops(trainer)
    try:
        with sdpa_kernel(SDPBackend.MATH), flop_counter() as mode:
            trainer.step(1, examples[:4])
        parts = recorder.by_part()
    finally:
        recorder.close()
    assert parts["target"] > 2 * parts["translator"] > 0 and parts["other"] > 0  # InfoNCE is on from step 0
    assert close(sum(parts.values()), mode.get_total_flops()), (parts, mode.get_total_flops())


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 SXM5 80GB", 989.4), ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H200", 989.4), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0),
    ("NVIDIA H100 NVL", None), ("NVIDIA GeForce RTX 4090", None), ("cpu (x86_64)", None),
])
def test_peak_table_knows_datasheet_devices_and_omits_the_rest(name, peak):
    assert peak_bf16_tflops(name) == peak


def test_mfu_is_omitted_with_a_note_on_a_device_without_a_peak():
    cpu = achieved(2e12, 1.0, 2, "cpu (x86_64)")
    assert cpu["tflops_per_s_per_gpu"] == 1.0 and cpu["mfu"] is None and "cpu (x86_64)" in cpu["mfu_note"]
    h100 = achieved(2 * 494.7e12, 1.0, 2, "NVIDIA H100 80GB HBM3")
    assert h100["mfu"] == 0.5 and "mfu_note" not in h100
