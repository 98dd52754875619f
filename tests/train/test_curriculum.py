"""train.curriculum: stages run in order, each from the last one's translator, and are reused."""

import json

import pytest

from lw_runtime.translator import BottleneckedGatedTranslator
from train import curriculum


def _common(tiny_run, out):
    return tiny_run(out, "--eval-every", "2", "--no-early-stopping")


def test_stages_chain_their_translators_and_finished_stages_are_reused(tiny_run, tmp_path, capsys, monkeypatch):
    import train.loop

    loaded = []
    real = train.loop.init_from_saved

    def spy(translator, directory):
        real(translator, directory)
        loaded.append((directory, {k: v.clone() for k, v in translator.state_dict().items()}))

    monkeypatch.setattr(train.loop, "init_from_saved", spy)
    out = tmp_path / "cur"
    argv = ["relay_qa:1,relay_qa:2", *_common(tiny_run, out), "--steps", "2,3"]
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
                                            (["--steps", "1,2,3"], "3 values for 2 stages"),
                                            (["--lr", "1e-3,5e-4,1e-4"], "--lr gives 3 values"),
                                            (["--lr=1e-3,5e-4"], "separate flag and value")])
def test_bad_arguments_stop_before_training(tiny_run, tmp_path, extra, problem):
    with pytest.raises(SystemExit, match=problem):
        curriculum.main(["relay_qa:1,relay_qa:2", *_common(tiny_run, tmp_path / "bad"), *extra])


def test_per_stage_learning_rates_batches_and_pools(tiny_run, tmp_path):
    from train.config import parse_args
    _, stages = curriculum.stage_flags(["relay_qa:1", "relay_qa:2"], [*_common(tiny_run, tmp_path / "lr"), "--lr", "1e-3,5e-4",
                                                                      "--batch-size", "8,4", "--train-examples", "40,16"])
    cfgs = [parse_args(flags) for _, flags in stages]
    assert [c.lr for c in cfgs] == [1e-3, 5e-4]
    assert [(c.batch_size, c.train_examples) for c in cfgs] == [(8, 40), (4, 16)]
    _, stages = curriculum.stage_flags(["relay_qa:1", "relay_qa:2"], _common(tiny_run, tmp_path / "one"))
    assert {parse_args(flags).batch_size for _, flags in stages} == {8}  # one value (tiny_run's) serves every stage
    with pytest.raises(SystemExit, match="--batch-size gives 3 values for 2 stages"):
        curriculum.stage_flags(["relay_qa:1", "relay_qa:2"], [*_common(tiny_run, tmp_path / "b"), "--batch-size", "8,4,2"])
    with pytest.raises(SystemExit, match="separate flag and value"):
        curriculum.stage_flags(["relay_qa:1", "relay_qa:2"], [*_common(tiny_run, tmp_path / "g"), "--train-examples=40,16"])


def test_a_curriculum_cut_short_keeps_the_record_of_its_finished_stages(tiny_run, tmp_path, monkeypatch):
    real = curriculum.train

    def train_until_stage_2(cfg):
        if cfg.task == "relay_qa:2":
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(cfg)

    monkeypatch.setattr(curriculum, "train", train_until_stage_2)
    out = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="simulated"):
        curriculum.main(["relay_qa:1,relay_qa:2", *_common(tiny_run, out), "--steps", "2"])
    result = json.loads((out / "curriculum.json").read_text())
    assert [s["task"] for s in result["stages"]] == ["relay_qa:1"] and result["stages"][0]["steps_run"] == 2
    assert result["command"].startswith("python -m train.curriculum relay_qa:1,relay_qa:2") and "commit" in result


def test_train_fsdp_with_several_tasks_runs_them_as_stages(tiny_run, tmp_path, capsys):
    """``python -m train.fsdp --task A,B`` is the curriculum: the same stages, chained, in one command."""
    from train import fsdp

    out = tmp_path / "staged"
    assert fsdp.main(["--task", "relay_qa:1,relay_qa:2", *_common(tiny_run, out), "--steps", "2,3"]) == 0
    result = json.loads((out / "curriculum.json").read_text())
    assert [(s["task"], s["steps_run"]) for s in result["stages"]] == [("relay_qa:1", 2), ("relay_qa:2", 3)]
    assert result["stages"][1]["init_from"] == str(out / "stage1_relay_qa_f1" / "translator")
    assert result["command"].startswith("python -m train.fsdp --task relay_qa:1,relay_qa:2 ")
    capsys.readouterr()
    # the same stages through train.curriculum: read back, nothing retrains
    assert curriculum.main(["relay_qa:1,relay_qa:2", *_common(tiny_run, out), "--steps", "2,3"]) == 0
    assert capsys.readouterr().out.count("reusing") == 2


def test_staged_tasks_reads_the_task_and_out_dir_flags_as_argparse_does():
    from train.fsdp import staged_tasks

    assert staged_tasks(["--task", "relay_qa:1", "--steps", "5"]) is None  # one task: a plain run
    assert staged_tasks(["--steps", "5"]) is None
    assert staged_tasks(["--task"]) is None  # argparse reports the missing value
    out = ["--out-dir", "runs/default"]
    assert staged_tasks(["--seed", "1", "--task", "a,b", "--steps", "5,6"]) == ("a,b", ["--seed", "1", "--steps", "5,6", *out])
    assert staged_tasks(["--task=a,b", "--lr", "1e-3"]) == ("a,b", ["--lr", "1e-3", *out])
    # abbreviations argparse takes: --tas for --task, --out for --out-dir (whose folder is then kept)
    assert staged_tasks(["--tas", "a,b", "--out", "runs/mine"]) == ("a,b", ["--out", "runs/mine"])
    assert staged_tasks(["--tas=a,b", "--out-d=runs/mine"]) == ("a,b", ["--out-d=runs/mine"])
    assert staged_tasks(["--t", "a,b"]) is None  # ambiguous (--task, --target, --tokens, ...): argparse's error


def test_stages_refuse_an_empty_task_list_and_torchrun(tiny_run, tmp_path, monkeypatch):
    from train import fsdp

    with pytest.raises(SystemExit, match="no task in ','"):
        fsdp.main(["--task", ",", *_common(tiny_run, tmp_path / "none")])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="stages run in one process"):
        curriculum.main(["relay_qa:1,relay_qa:2", *_common(tiny_run, tmp_path / "two")])


def test_train_fsdp_stages_refuse_what_the_curriculum_refuses(tiny_run, tmp_path):
    from train import fsdp

    with pytest.raises(SystemExit, match="3 values for 2 stages"):
        fsdp.main(["--task", "relay_qa:1,relay_qa:2", *_common(tiny_run, tmp_path / "bad"), "--steps", "1,2,3"])
    with pytest.raises(SystemExit):  # a per-stage list without stages is not a number of steps
        fsdp.main([*_common(tiny_run, tmp_path / "bad"), "--steps", "1,2"])


def test_train_fsdp_stages_go_to_the_default_out_dir_when_none_is_given(monkeypatch):
    from train import fsdp

    seen = []
    monkeypatch.setattr(curriculum, "main", lambda argv, prog: seen.append((argv, prog)) or 0)
    assert fsdp.main(["--task", "relay_qa:1,relay_qa:4", "--steps", "1000,2000"]) == 0
    assert seen == [(["relay_qa:1,relay_qa:4", "--steps", "1000,2000", "--out-dir", "runs/default"], "python -m train.fsdp --task")]
