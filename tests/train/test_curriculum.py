"""train.curriculum: stages run in order, each from the last one's translator, and are reused."""

import json

import pytest

from lw_runtime.translator import BottleneckedGatedTranslator
from train import curriculum
from train.random_models import save_random
from train.source_cache import forget_shared_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("curriculum_models")
    yield save_random(root / "source", "tiny", seed=1), save_random(root / "target", "tiny-wide", seed=2)
    forget_shared_models()


def _common(models, out):
    return ["--source", models[0], "--target", models[1], "--preset", "tiny", "--source-layer", "-1",
            "--batch-size", "8", "--warmup", "1", "--eval-every", "2", "--checkpoint-every", "0",
            "--train-examples", "32", "--val-examples", "4", "--test-examples", "4", "--max-new-tokens", "2",
            "--no-baselines", "--no-progress", "--no-tensorboard", "--no-early-stopping", "--threads", "1",
            "--out-dir", str(out)]


def test_stages_chain_their_translators_and_finished_stages_are_reused(models, tmp_path, capsys, monkeypatch):
    import train.loop

    loaded = []
    real = train.loop.init_from_saved

    def spy(translator, directory):
        real(translator, directory)
        loaded.append((directory, {k: v.clone() for k, v in translator.state_dict().items()}))

    monkeypatch.setattr(train.loop, "init_from_saved", spy)
    out = tmp_path / "cur"
    argv = ["relay_qa:1,relay_qa:2", *_common(models, out), "--steps", "2,3"]
    assert curriculum.main(argv) == 0
    result = json.loads((out / "curriculum.json").read_text())
    stages = result["stages"]
    assert [s["task"] for s in stages] == ["relay_qa:1", "relay_qa:2"]
    assert [s["steps_run"] for s in stages] == [2, 3]
    assert stages[0]["init_from"] == "" and stages[1]["init_from"] == str(out / "stage1_relay_qa_f1" / "translator")
    # stage 2 started from stage 1's trained translator (stage 1 moved away from its initialisation)
    a = BottleneckedGatedTranslator.from_pretrained(out / "stage1_relay_qa_f1" / "translator").state_dict()
    assert [d for d, _ in loaded] == [str(out / "stage1_relay_qa_f1" / "translator")]
    start = loaded[0][1]
    assert all((a[k].to(start[k].device) == start[k]).all() for k in a)
    b = BottleneckedGatedTranslator.from_pretrained(out / "stage2_relay_qa_f2" / "translator").state_dict()
    assert not all((a[k] == b[k]).all() for k in a)  # and stage 2 trained on from there
    assert "commit" in result and result["command"].startswith("python -m train.curriculum relay_qa:1,relay_qa:2")
    capsys.readouterr()
    assert curriculum.main(argv) == 0  # same flags: both stages are read back, nothing retrains
    printed = capsys.readouterr().out
    assert printed.count("reusing") == 2


@pytest.mark.parametrize("extra, problem", [(["--task", "relay_qa"], "sets --task"),
                                            (["--steps", "1,2,3"], "3 budgets for 2 stages")])
def test_bad_arguments_stop_before_training(models, tmp_path, extra, problem):
    with pytest.raises(SystemExit, match=problem):
        curriculum.main(["relay_qa:1,relay_qa:2", *_common(models, tmp_path / "bad"), *extra])
