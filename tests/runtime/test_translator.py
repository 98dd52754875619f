"""BottleneckedGatedTranslator: shapes, zero-initialised gates, RMS matching, source normalisation,
save/load round trip, dimension checks, presets."""

import pytest
import torch

from lw_runtime.translator import PRESETS, BottleneckedGatedTranslator, TranslatorConfig, TranslatorMismatchError


def make(**kw):
    torch.manual_seed(0)
    cfg = TranslatorConfig.preset("tiny", source_dim=40, target_dim=24, dropout=0.0, target_rms=0.37, **kw)
    return BottleneckedGatedTranslator(cfg).eval()


def source_batch(b=3, t=11, d=40):
    h = torch.randn(b, t, d) * 50
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[0, :4] = False  # left padding on row 0
    return h, mask


def open_gates(tr, value=0.7):
    with torch.no_grad():
        for p in tr.gate_parameters():
            p.fill_(value)


def test_output_shape_and_rms_matched():
    tr = make()
    soft = tr(*source_batch())
    assert soft.shape == (3, 8, 24)
    rms = soft.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, 0.37), rtol=1e-3, atol=1e-4)


def test_gates_start_closed_so_output_ignores_source():
    tr = make()
    h, m = source_batch()
    a, b = tr(h, m), tr(torch.randn_like(h), m)
    torch.testing.assert_close(a, b)
    assert all(p.item() == 0.0 for p in tr.gate_parameters())


def test_open_gates_make_output_depend_on_source():
    tr = make()
    open_gates(tr)
    h, m = source_batch()
    assert (tr(h, m) - tr(torch.randn_like(h), m)).abs().max() > 1e-3


def test_per_token_normalisation_tames_massive_activations():
    """Scaling one source token by 1000 (a 'massive activation') leaves the output unchanged."""
    tr = make()
    open_gates(tr)
    h, m = source_batch()
    spiked = h.clone()
    spiked[:, -5] *= 1000.0
    torch.testing.assert_close(tr(h, m), tr(spiked, m), rtol=1e-4, atol=1e-4)


def test_padding_positions_are_ignored():
    tr = make()
    open_gates(tr)
    h, m = source_batch()
    poisoned = h.clone()
    poisoned[0, :4] = torch.randn(4, 40) * 1e4
    torch.testing.assert_close(tr(h, m)[0], tr(poisoned, m)[0], rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_parameter_once_gates_open():
    tr = make()
    tr.train()
    open_gates(tr)
    tr(*source_batch()).pow(2).sum().backward()
    missing = [n for n, p in tr.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_save_and_load_round_trip(tmp_path):
    tr = make()
    open_gates(tr, 0.3)
    tr.save_pretrained(tmp_path)
    back = BottleneckedGatedTranslator.from_pretrained(tmp_path).eval()
    h, m = source_batch()
    torch.testing.assert_close(tr(h, m), back(h, m))
    assert back.config == tr.config


def test_bf16_pack_is_half_the_bytes_and_loads_back_into_fp32_within_bf16_rounding(tmp_path):
    import importlib.util
    import tarfile
    from pathlib import Path

    tr = make()
    open_gates(tr, 0.3)
    tr.save_pretrained(tmp_path / "fp32")
    spec = importlib.util.spec_from_file_location("pack_translator", Path(__file__).resolve().parents[2] / "scripts" / "pack_translator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.pack(tmp_path / "fp32", tmp_path / "t.tgz")
    with tarfile.open(tmp_path / "t.tgz") as tar:
        tar.extractall(tmp_path / "back", filter="data")
    small = (tmp_path / "back" / "translator" / "translator.safetensors").stat().st_size
    assert small < 0.6 * (tmp_path / "fp32" / "translator.safetensors").stat().st_size
    back = BottleneckedGatedTranslator.from_pretrained(tmp_path / "back" / "translator").eval()
    assert back.config == tr.config
    assert all(p.dtype == torch.float32 for p in back.parameters())
    for (name, a), b in zip(tr.state_dict().items(), back.state_dict().values()):
        torch.testing.assert_close(b, a.to(torch.bfloat16).float(), msg=name)  # exactly the bf16 rounding
    h, m = source_batch()
    torch.testing.assert_close(back(h, m), tr(h, m), rtol=0.05, atol=0.05)


def test_the_source_order_of_training_travels_with_the_translator(tmp_path):
    tr = BottleneckedGatedTranslator(TranslatorConfig(source_order="question_first"))
    tr.save_pretrained(tmp_path)
    assert BottleneckedGatedTranslator.from_pretrained(tmp_path).config.source_order == "question_first"
    assert TranslatorConfig().source_order == "passage_first"
    with pytest.raises(ValueError, match="source_order"):
        TranslatorConfig(source_order="sideways")


def test_from_pretrained_rejects_missing_and_unknown_fields(tmp_path):
    with pytest.raises(FileNotFoundError):
        BottleneckedGatedTranslator.from_pretrained(tmp_path)
    make().save_pretrained(tmp_path)
    cfg = tmp_path / "translator_config.json"
    cfg.write_text(cfg.read_text().replace('"depth"', '"depht"'))
    with pytest.raises(ValueError, match="depht"):
        BottleneckedGatedTranslator.from_pretrained(tmp_path)


def test_dimension_mismatch_is_named():
    tr = make()
    with pytest.raises(TranslatorMismatchError, match="40"):
        tr(torch.randn(2, 5, 41))
    with pytest.raises(TranslatorMismatchError, match="hidden size 640"):
        tr.check_compatible(640, 24)


def test_presets_from_the_original_sweep():
    assert PRESETS["efficient"] == dict(num_soft_tokens=32, depth=4, num_heads=12, bottleneck_dim=768)
    assert PRESETS["high_capacity"] == dict(num_soft_tokens=64, depth=8, num_heads=16, bottleneck_dim=1024)
    cfg = TranslatorConfig.preset("conservative", num_soft_tokens=64)
    assert (cfg.num_soft_tokens, cfg.depth, cfg.num_heads) == (64, 6, 16)
    with pytest.raises(ValueError, match="unknown translator preset"):
        TranslatorConfig.preset("huge")
    with pytest.raises(ValueError, match="divisible"):
        TranslatorConfig(bottleneck_dim=100, num_heads=8)


def test_calibration_removes_a_channel_shared_by_every_token(tmp_path):
    """A massive channel present in every token makes all tokens look alike after per-token
    normalisation; per-channel standardisation from calibration data removes it, and is saved."""
    tr = make()
    h, m = source_batch()
    h[..., 3] += 5000.0  # one huge channel in every token
    before = tr.source_norm((h - tr.source_mean) / tr.source_std)
    tr.calibrate_source(h, m)
    after = tr.source_norm((h - tr.source_mean) / tr.source_std)
    cos = lambda x: torch.nn.functional.cosine_similarity(x[m], x[m].mean(0, keepdim=True)).mean()
    assert cos(before) > 0.99 and cos(after) < 0.5
    tr.save_pretrained(tmp_path)
    back = BottleneckedGatedTranslator.from_pretrained(tmp_path)
    torch.testing.assert_close(back.source_mean, tr.source_mean)
    torch.testing.assert_close(back.source_std, tr.source_std)
