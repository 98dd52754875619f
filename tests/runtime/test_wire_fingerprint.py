"""translator_fingerprint follows the weights' content, whatever route changed them (issue 20).

torch's version counter misses writes through ``p.data`` and numpy views, so a cache keyed on it
returned the old fingerprint and packets for the old weights were projected with the new ones.
Each route below must give the fingerprint docs/wire.md defines (recomputed here from the spec,
with no cache) and refuse packets made before the edit, in ``decode`` and in a live ``Decoder``.
"""

import hashlib
import json
from dataclasses import asdict

import pytest
import torch

from lw_runtime import wire
from lw_runtime.packets import Decoder, decode, encode_soft_tokens
from lw_runtime.translator import BottleneckedGatedTranslator, TranslatorConfig
from lw_runtime.wire import FingerprintMismatchError, translator_fingerprint

TINY = dict(source_dim=40, target_dim=64, num_soft_tokens=8, depth=1, num_heads=4, bottleneck_dim=32, dropout=0.0)


def make_translator(seed=0):
    torch.manual_seed(seed)
    return BottleneckedGatedTranslator(TranslatorConfig(**TINY)).eval()


def spec_fingerprint(translator) -> bytes:
    """docs/wire.md, "Fingerprint", written out independently of wire.py."""
    h = hashlib.sha256(b"LWIR-fingerprint-v1\0")
    h.update(json.dumps(asdict(translator.config), sort_keys=True, separators=(",", ":")).encode())
    state = translator.state_dict()
    for name in sorted(state):
        t = state[name]
        h.update(f"\0{name}\0{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()[:8]


def _optimizer_step(tr):
    opt = torch.optim.SGD(tr.parameters(), lr=0.1)
    for p in tr.parameters():
        p.grad = torch.ones_like(p)
    opt.step()


def _numpy_view_write(tr):
    tr.out_proj.weight.detach().numpy()[0, 0] += 1.0


def _flip_one_bit(tr):
    tr.out_proj.weight.data.view(torch.int32)[3, 5] ^= 1


EDITS = {
    "p.data.add_": lambda tr: tr.out_proj.weight.data.add_(1e-3),
    "p.data.copy_": lambda tr: tr.out_proj.weight.data.copy_(torch.randn_like(tr.out_proj.weight)),
    "p.data[i] = v": lambda tr: tr.out_proj.weight.data.__setitem__((0, 0), 7.0),
    "no_grad p.add_": lambda tr: torch.no_grad()(lambda: tr.out_proj.weight.add_(1e-3))(),
    "load_state_dict": lambda tr: tr.load_state_dict(make_translator(seed=1).state_dict()),
    "optimizer.step": _optimizer_step,
    "p.data = new tensor": lambda tr: setattr(tr.out_proj.weight, "data", tr.out_proj.weight.data + 1e-3),
    "module.to(float64)": lambda tr: tr.to(torch.float64),
    "module.to(bfloat16)": lambda tr: tr.to(torch.bfloat16),
    "numpy view write": _numpy_view_write,
    "buffer.data.fill_": lambda tr: tr.source_mean.data.fill_(0.5),
    "one bit of one weight": _flip_one_bit,
}


@pytest.mark.parametrize("edit", EDITS)
def test_every_weight_edit_changes_the_fingerprint_to_the_spec_value(edit):
    tr = make_translator()
    before = translator_fingerprint(tr)
    assert before == spec_fingerprint(tr)
    assert translator_fingerprint(tr) == before  # the cached path
    EDITS[edit](tr)
    after = translator_fingerprint(tr)
    assert after != before, f"{edit}: fingerprint unchanged after the weights changed"
    assert after == spec_fingerprint(tr)


@pytest.mark.parametrize("edit", EDITS)
def test_packets_for_the_weights_before_an_edit_are_refused_after_it(edit):
    tr = make_translator()
    fp = translator_fingerprint(tr)
    latents = torch.randn(1, 4, TINY["bottleneck_dim"])
    old_bottleneck = encode_soft_tokens(latents, fp, 8, 16, bottleneck=True)
    old_soft = encode_soft_tokens(torch.randn(1, 4, TINY["target_dim"]), fp, 8, 16)
    decode(old_bottleneck, translator=tr)  # accepted before the edit
    EDITS[edit](tr)
    for packets in (old_bottleneck, old_soft):
        with pytest.raises(FingerprintMismatchError):
            decode(packets, translator=tr)
    decode(encode_soft_tokens(latents, translator_fingerprint(tr), 8, 16, bottleneck=True), translator=tr)


def test_a_live_decoder_checks_each_new_message_against_the_weights_as_they_are_then():
    tr = make_translator()
    decoder = Decoder(translator=tr)
    x = torch.randn(1, 4, TINY["target_dim"])
    for p in encode_soft_tokens(x, translator_fingerprint(tr), 8, 16, chunk_tokens=2):
        decoder.feed(p)
    assert decoder.done
    stale = encode_soft_tokens(x, translator_fingerprint(tr), 8, 16)
    tr.out_proj.weight.data.add_(1e-3)
    with pytest.raises(FingerprintMismatchError):
        decoder.feed(stale[0])
    assert decoder.fingerprint == spec_fingerprint(tr)
    decoder.feed(encode_soft_tokens(x, translator_fingerprint(tr), 8, 16)[0])
    assert decoder.messages_started == 2


def test_editing_back_restores_the_fingerprint():
    tr = make_translator()
    before = translator_fingerprint(tr)
    tr.out_proj.weight.data.add_(1.0)
    assert translator_fingerprint(tr) != before
    tr.out_proj.weight.data.sub_(1.0)
    assert translator_fingerprint(tr) == spec_fingerprint(tr)


def test_unchanged_weights_are_not_rehashed(monkeypatch):
    """The cache saves the sha256 while the weights are unchanged (the CRC32C key is read every call)."""
    if wire._NATIVE_CRC32C is None:
        pytest.skip("without google-crc32c's C library every call hashes in full")
    digests = []
    real = wire._fingerprint_digest
    monkeypatch.setattr(wire, "_fingerprint_digest", lambda *a: digests.append(1) or real(*a))
    tr = make_translator()
    for _ in range(3):
        translator_fingerprint(tr)
    assert len(digests) == 1
    tr.out_proj.weight.data.add_(1e-3)
    translator_fingerprint(tr)
    assert len(digests) == 2


def test_without_the_native_crc_every_call_hashes_and_follows_edits(monkeypatch):
    monkeypatch.setattr(wire, "_NATIVE_CRC32C", None)
    tr = make_translator()
    before = translator_fingerprint(tr)
    assert before == spec_fingerprint(tr)
    tr.out_proj.weight.data.add_(1e-3)
    assert translator_fingerprint(tr) == spec_fingerprint(tr) != before


@pytest.fixture
def device_key_everywhere(monkeypatch):
    """Weights on a GPU are keyed by ``_device_content_key`` where they live; on the CPU here its torch
    ops run unchanged (the sums are exact integers, so the device does not change them)."""
    monkeypatch.setattr(wire, "_keyed_on_device", lambda t: t.element_size() >= 2)
    monkeypatch.setattr(wire, "_KEY_ROW", 64)  # several rows, groups and slices even for TINY
    monkeypatch.setattr(wire, "_KEY_GROUP", 1000)
    monkeypatch.setattr(wire, "_KEY_MULTIPLIERS", {})


@pytest.mark.parametrize("edit", EDITS)
def test_every_weight_edit_changes_the_device_keyed_fingerprint_too(device_key_everywhere, edit):
    tr = make_translator()
    before = translator_fingerprint(tr)
    assert before == spec_fingerprint(tr) == translator_fingerprint(tr)
    EDITS[edit](tr)
    assert translator_fingerprint(tr) == spec_fingerprint(tr) != before, edit


def test_the_device_key_sees_any_one_word_change_and_nothing_else(device_key_everywhere):
    torch.manual_seed(3)
    tensors = [torch.randn(n, dtype=torch.bfloat16) for n in (5, 2500, 640, 1, 4096)]  # rows, tails, groups, slices
    key = wire._device_content_key(tensors)
    assert wire._device_content_key([t.clone() for t in tensors]) == key
    for t in tensors:
        words = t.view(torch.int16)
        for i in {0, len(words) // 2, len(words) - 1}:
            for bit in (0, 7, 15):
                words[i] ^= 1 << bit if bit < 15 else -(1 << 15)
                assert wire._device_content_key(tensors) != key, (t.numel(), i, bit)
                words[i] ^= 1 << bit if bit < 15 else -(1 << 15)
    assert wire._device_content_key(tensors) == key


def test_unchanged_device_weights_are_not_rehashed(device_key_everywhere, monkeypatch):
    digests = []
    real = wire._fingerprint_digest
    monkeypatch.setattr(wire, "_fingerprint_digest", lambda *a: digests.append(1) or real(*a))
    monkeypatch.setattr(wire, "_NATIVE_CRC32C", None)  # every float tensor is device-keyed: no CRC needed
    tr = make_translator()
    for _ in range(3):
        translator_fingerprint(tr)
    assert len(digests) == 1
    tr.out_proj.weight.data.add_(1e-3)
    assert translator_fingerprint(tr) == spec_fingerprint(tr)
    assert len(digests) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_weights_are_keyed_on_the_gpu_and_follow_edits():
    tr = make_translator().cuda()
    before = translator_fingerprint(tr)
    assert before == spec_fingerprint(tr)
    tr.out_proj.weight.data.add_(1e-3)
    assert translator_fingerprint(tr) == spec_fingerprint(tr) != before
