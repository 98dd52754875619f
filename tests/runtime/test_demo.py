"""``python -m lw_runtime.demo``: a missing or malformed asset fails with a typed error before any
model loads; bf16 weights load into fp32 unchanged; ``--package`` writes an asset the demo reads;
and on the embedded pair the answers and accuracies it prints are the exact-match figures
recomputed here with the public API on the same held-out examples (one right answer planted on the
bridged side, so that a random translator's 0 = 0 cannot hide a miscount)."""

import json
import re
from dataclasses import asdict

import pytest
import torch
from safetensors import safe_open

from lw_runtime import demo
from train.data import load_task
from lw_runtime.generate import generate
from lw_runtime.packets import encode
from lw_runtime.protocols import exact_match, extract_answer, source_text, target_alone_prompt, target_prompt
from lw_runtime.translator import CONFIG_NAME, WEIGHTS_NAME, BottleneckedGatedTranslator, TranslatorConfig

PROVENANCE = dict(task="relay_code", protocol="soft_only", source_order="passage_first", seed=3, steps=0,
                  max_new_tokens=6, max_source_tokens=256, target_layers=0, test_examples=200,
                  test_bridged_acc=0.5, test_target_alone_acc=0.0, commit="abc1234", date="2025-01-01",
                  device="cpu", command="random initialisation (tests/runtime/test_demo.py)")


def tiny_translator(**kw) -> BottleneckedGatedTranslator:
    torch.manual_seed(0)
    cfg = TranslatorConfig.preset("tiny", source_dim=40, target_dim=24, source_position="conv", gate_init=0.5, **kw)
    return BottleneckedGatedTranslator(cfg).eval()


def write_asset(directory, translator, **provenance):
    translator.save_pretrained(directory, dtype=torch.bfloat16)
    (directory / demo.PROVENANCE_NAME).write_text(json.dumps({**PROVENANCE, **provenance}))
    return directory


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(name, *args, **kwargs):
        raise AssertionError(f"the demo loaded {name} before checking its translator")

    monkeypatch.setattr(demo, "load_model", refuse)


@pytest.mark.parametrize("missing", [CONFIG_NAME, WEIGHTS_NAME, demo.PROVENANCE_NAME])
def test_missing_asset_file_raises_typed_error_naming_it_and_how_to_make_one(tmp_path, missing, no_model_loads):
    write_asset(tmp_path, tiny_translator())
    (tmp_path / missing).unlink()
    with pytest.raises(demo.MissingTranslatorError) as info:
        demo.main(["--translator", str(tmp_path)])
    message = str(info.value)
    assert str(tmp_path / missing) in message
    assert "python -m train.fsdp" in message and "--package" in message
    assert isinstance(info.value, FileNotFoundError)


def test_bf16_asset_loads_into_fp32_with_the_saved_values(tmp_path):
    translator = tiny_translator()
    write_asset(tmp_path, translator)
    with safe_open(str(tmp_path / WEIGHTS_NAME), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    loaded, provenance = demo.load_translator(tmp_path)
    assert provenance == demo.Provenance(**PROVENANCE)
    saved = translator.state_dict()
    for name, value in loaded.state_dict().items():
        assert value.dtype == torch.float32, name
        assert torch.equal(value, saved[name].to(torch.bfloat16).float()), name
    assert not loaded.training


@pytest.mark.parametrize("provenance, needle", [
    ({"seed": None}, "seed must be of type int"),
    ({"task": "squad"}, "reads a dataset"),
    ({"task": "relay_cod"}, "unknown task"),
    ({"protocol": "telepathy"}, "protocol"),
    ({"source_order": "question_first"}, "source_order"),  # disagrees with the translator's config
])
def test_malformed_or_inconsistent_provenance_is_refused_before_models_load(tmp_path, provenance, needle, no_model_loads):
    write_asset(tmp_path, tiny_translator(), **provenance)
    with pytest.raises(demo.ProvenanceError, match=needle):
        demo.main(["--translator", str(tmp_path)])


def test_provenance_with_a_missing_or_unknown_field_is_refused(tmp_path, no_model_loads):
    write_asset(tmp_path, tiny_translator())
    fields = {k: v for k, v in PROVENANCE.items() if k != "steps"}
    (tmp_path / demo.PROVENANCE_NAME).write_text(json.dumps({**fields, "stepz": 5}))
    with pytest.raises(demo.ProvenanceError, match=r"missing fields \['steps'\], unknown fields \['stepz'\]"):
        demo.main(["--translator", str(tmp_path)])


def test_package_writes_a_bf16_asset_with_the_runs_provenance(tmp_path):
    from train.config import TrainConfig

    run = tmp_path / "run"
    translator = tiny_translator()
    translator.save_pretrained(run / "translator")  # fp32, as train.fsdp writes it
    cfg = asdict(TrainConfig(task="relay_code2", seed=7, max_new_tokens=5, target_layers=12))
    (run / "summary.json").write_text(json.dumps({
        "config": cfg, "steps_run": 600, "test_examples": 100, "test_bridged_acc": 0.61,
        "test_target_alone_acc": 0.02, "device": "NVIDIA H100 80GB HBM3"}))
    asset = tmp_path / "asset"
    assert demo.main(["--package", str(run), "--translator", str(asset), "--command", "python -m train.fsdp --seed 7",
                      "--commit", "deadbee"]) == 0
    loaded, provenance = demo.load_translator(asset)
    assert (provenance.task, provenance.seed, provenance.steps, provenance.max_new_tokens, provenance.target_layers,
            provenance.test_bridged_acc, provenance.device, provenance.command, provenance.commit) == (
        "relay_code2", 7, 600, 5, 12, 0.61, "NVIDIA H100 80GB HBM3", "python -m train.fsdp --seed 7", "deadbee")
    with safe_open(str(asset / WEIGHTS_NAME), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, translator.state_dict()[name].to(torch.bfloat16).float()), name


ACCURACY = re.compile(r"^  (bridged|target alone)\s*:\s*([\d.]+)% \((\d+)/(\d+)\)$", re.M)
QUOTED = r'("(?:[^"\\]|\\.)*")'  # a JSON string, as the demo prints answers
SHOWN = re.compile(rf"^    gold: {QUOTED} \| bridged: {QUOTED} (right|wrong) \| target alone: {QUOTED} (right|wrong)$", re.M)


@pytest.mark.models
def test_demo_prints_the_exact_match_accuracies_recomputed_on_the_same_examples(tmp_path, source, target, capsys,
                                                                                 monkeypatch):
    cfg = TranslatorConfig.preset("embedded", source_dim=source.hidden_size, target_dim=target.hidden_size,
                                  source_layer=9, source_position="conv", gate_init=0.5,
                                  target_rms=target.embedding_rms())
    torch.manual_seed(0)
    write_asset(tmp_path, BottleneckedGatedTranslator(cfg))
    translator, prov = demo.load_translator(tmp_path)
    test = load_task(prov.task, "test", 4, seed=prov.seed)

    def one_planted_right_answer(*args, **kwargs):  # a random translator scores 0, and 0 = 0 proves little
        out = generate(*args, **kwargs)
        if kwargs.get("packets") is not None:
            out[0] = " " + test[0].answer
        return out

    monkeypatch.setattr(demo, "generate", one_planted_right_answer)
    assert demo.main(["--translator", str(tmp_path), "--examples", "4", "--show", "2"]) == 0
    out = capsys.readouterr().out

    # the same four held-out examples, answered here through the public API with the loaded translator
    packets = encode(source, translator, [source_text(e, prov.protocol, prov.source_order) for e in test])
    bridged = generate(target, packets=packets, translator=translator,
                       texts=[target_prompt(e, prov.protocol) for e in test], max_new_tokens=prov.max_new_tokens)
    alone = generate(target, texts=[target_alone_prompt(e, prov.protocol) for e in test], max_new_tokens=prov.max_new_tokens)
    bridged[0] = " " + test[0].answer
    bridged_right = sum(exact_match(b, e.answer) for b, e in zip(bridged, test))
    alone_right = sum(exact_match(a, e.answer) for a, e in zip(alone, test))

    accuracy = {name: (float(pct), int(right), int(n)) for name, pct, right, n in ACCURACY.findall(out)}
    assert bridged_right >= 1
    assert accuracy == {"bridged": (round(100 * bridged_right / 4, 1), bridged_right, 4),
                        "target alone": (round(100 * alone_right / 4, 1), alone_right, 4)}, out
    shown = SHOWN.findall(out)
    assert len(shown) == 2 and "[3]" not in out, out
    for (gold, b, b_mark, a, a_mark), e, b_out, a_out in zip(shown, test, bridged, alone):
        assert tuple(map(json.loads, (gold, b, a))) == (e.answer, extract_answer(b_out), extract_answer(a_out)), out
        assert (b_mark == "right", a_mark == "right") == (exact_match(b_out, e.answer), exact_match(a_out, e.answer))
    assert f"seed {prov.seed}" in out and "4 held-out test examples" in out
    assert re.search(r"sender: 4 examples -> 1 packet\(s\), \d+ bytes \(8-bit\) in [\d.]+s", out), out
