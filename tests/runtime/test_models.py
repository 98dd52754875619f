"""Model loading: the embedded GGUF pair, the conversion cache, and clear errors for bad ids."""

import pytest
import torch

from lw_runtime.models import ModelLoadError, converted_gguf_dir, embedded_gguf_path, load_model, EMBEDDED_SOURCE

PARIS_IDS = [2, 50429, 563, 506, 5279, 529, 7001, 532, 15687, 563, 506, 5279, 529]


def test_gemma_weights_predict_germany(source):
    with torch.no_grad():
        logits = source.model(torch.tensor([PARIS_IDS])).logits[0, -1]
    top = int(logits.argmax())
    assert source.tokenizer.convert_ids_to_tokens(top) == "▁Germany"
    assert abs(float(logits[top]) - 21.24) < 0.05  # matches an independent numpy forward of the GGUF


def test_models_are_frozen(source, target):
    for loaded in (source, target):
        assert not loaded.model.training
        assert not any(p.requires_grad for p in loaded.model.parameters())


def test_embedded_dims(source, target):
    assert (source.hidden_size, source.num_layers) == (640, 18)
    assert (target.hidden_size, target.num_layers) == (576, 30)
    assert 0.05 < target.embedding_rms() < 1.0


def test_conversion_is_cached(source):
    folder = converted_gguf_dir(embedded_gguf_path(EMBEDDED_SOURCE))
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert converted_gguf_dir(embedded_gguf_path(EMBEDDED_SOURCE)) == folder
    assert (folder / "config.json").stat().st_mtime_ns == stamp
    assert list(folder.glob("*.safetensors"))


@pytest.mark.parametrize("name", ["", "embedded:no-such-model", "/nonexistent/model.gguf", "/nonexistent/folder"])
def test_unknown_model_raises_named_error(name):
    with pytest.raises(ModelLoadError) as err:
        load_model(name)
    assert (name or "non-empty") in str(err.value)


def test_special_tokens_follow_the_gguf(target, source):
    """SmolLM2's GGUF declares bos <|im_start|> (1) and eos <|im_end|> (2); the pad is distinct from EOS."""
    tok = target.tokenizer
    assert (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert tok.pad_token_id != tok.eos_token_id
    assert target.model.generation_config.eos_token_id == 2
    assert (source.tokenizer.bos_token_id, source.tokenizer.eos_token_id, source.tokenizer.pad_token_id) == (2, 1, 0)


def test_a_late_conversion_never_replaces_a_complete_folder(tmp_path):
    """Concurrent first loads (a GPU sweep of 8-12 processes): a reader of the first complete
    folder must not see it deleted by a process that finished converting later."""
    from lw_runtime.models import _publish

    out = tmp_path / "converted" / "model-abc"
    first, late = tmp_path / "first.tmp", tmp_path / "late.tmp"
    for folder, tag in ((first, "first"), (late, "late")):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(tag)
        (folder / "model.safetensors").write_text(tag)
    out.parent.mkdir()
    _publish(first, out)
    _publish(late, out)
    assert (out / "config.json").read_text() == "first" and (out / "model.safetensors").read_text() == "first"
    broken = tmp_path / "converted" / "model-broken"
    broken.mkdir()
    (broken / "model.safetensors").write_text("half")  # an incomplete leftover is replaced
    _publish(late, broken)
    assert (broken / "config.json").read_text() == "late"
