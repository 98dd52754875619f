"""scripts/seed_table.py / train.seed_table on train.sweep folders laid out as a GPU run copies them back:
sweep.json (the sweep's command and one row per plan line, config popped) and <run>/summary.json (config kept)."""

import importlib.util
import json
import re
import shlex
import statistics
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from lw_runtime.packets import encode_soft_tokens
from lw_runtime.protocols import source_text
from lw_runtime.translator import CONFIG_NAME
from train import seed_table as st
from train.config import parse_args
from train.data import load_task
from train.metrics import breakdown

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "seed_table.py"
COMMON = ["--task", "relay_qa:1", "--tokens", "16", "--batch-size", "16", "--test-examples", "10", "--no-baselines", "--threads", "1"]
DEVICE = "NVIDIA H100 80GB HBM3"


def _script():
    spec = importlib.util.spec_from_file_location("seed_table_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_sweep(root: Path, runs: list[dict], environment: dict | None = None) -> Path:
    """A train.sweep folder. Each run: name, flags (a plan line), status, and for a finished run test / alone /
    best / final accuracies; ``summary=False`` leaves its folder without summary.json (killed)."""
    root.mkdir(parents=True)
    command = "python -m train.sweep plan.txt --parallel 4 --timeout 500 " + " ".join(COMMON) + f" --out-dir {root}"
    rows = []
    for r in runs:
        env_words, flags = [], shlex.split(r["flags"])
        while flags and "=" in flags[0] and not flags[0].startswith("-"):
            env_words.append(flags.pop(0))
        run_dir = root / r["name"]
        run_dir.mkdir()
        row = {"name": r["name"], "flags": r["flags"], "wall_s": 12.0, "status": r.get("status", "ok"),
               "val_curve": [[50, 0.1], [100, r.get("final", 0.0)]]}
        if r.get("summary", True):
            cfg = parse_args(COMMON + flags + ["--out-dir", str(run_dir)])  # as train.sweep builds each run
            examples = load_task(cfg.task, "test", cfg.test_examples, seed=cfg.seed)
            right = round(r["test"] * len(examples))
            outputs = [f" {e.answer}" if i < right else " nope" for i, e in enumerate(examples)]
            summary = {"config": asdict(cfg), "device": DEVICE, "world_size": 1, "steps_run": 100,
                       "best_val_acc": r.get("best", r.get("final", 0.0)), "best_step": 100,
                       "final_val_acc": r.get("final", 0.0), "test_bridged_acc": r["test"],
                       "test_target_alone_acc": r.get("alone", 0.0), "test_examples": len(examples),
                       "num_soft_tokens": cfg.tokens, "nonfinite_steps": 0, "resumed_from_step": None,
                       "test_breakdown": breakdown(examples, outputs), "history": [[50, 0.1], [100, r.get("final", 0.0)]],
                       "samples": {"gold": [e.answer for e in examples[:5]]}}
            if "environment" not in r or r["environment"] is not None:
                summary["environment"] = {**(environment or {}), **dict(w.split("=", 1) for w in env_words)}
            (run_dir / "summary.json").write_text(json.dumps(summary))
            row.update({k: v for k, v in summary.items() if k != "config"})
        rows.append(row)
    (root / "sweep.json").write_text(json.dumps({"date": "2026-12-08 10:00 UTC", "commit": "abc1234", "command": command,
                                                 "device": DEVICE, "environment": environment or {}, "runs": rows}))
    return root


def run(name, seed, test, flags="", **kw):
    return {"name": name, "flags": f"{flags} --seed {seed}".strip(), "test": test, **kw}


def cells_by_label(table):
    return {c["label"]: c for c in table["cells"]}


def test_runs_differing_only_by_seed_form_one_cell_with_mean_sd_min_max(tmp_path):
    root = make_sweep(tmp_path / "sweep", [
        run("a_s0", 0, 0.60, "--recon-weight 1.0"), run("b_s0", 0, 0.10, "--recon-weight 0"),
        run("a_s1", 1, 0.30, "--recon-weight 1.0"), run("b_s1", 1, 0.20, "--recon-weight 0"),
        run("a_s2", 2, 0.00, "--recon-weight 1.0"),
    ])
    cells = cells_by_label(st.seed_table([root]))
    assert set(cells) == {"--recon-weight 1.0", "--recon-weight 0.0"}  # seed and out-dir differ too, and are no cell
    a = cells["--recon-weight 1.0"]
    assert a["members"] == [f"{root}/a_s0", f"{root}/a_s1", f"{root}/a_s2"] and a["seeds"] == [0, 1, 2]
    assert a["test_mean"] == pytest.approx(30.0) and a["test_sd"] == pytest.approx(30.0)  # sample sd of 60, 30, 0
    assert (a["test_min"], a["test_max"]) == (0.0, 60.0)
    b = cells["--recon-weight 0.0"]
    assert b["test_mean"] == pytest.approx(15.0) and b["test_sd"] == pytest.approx(statistics.stdev([10.0, 20.0]))
    text = st.markdown(st.seed_table([root]), "cmd", "made", None)
    assert "| --recon-weight 1.0 (a) | 3 | 0, 1, 2 | 3 | 30.0 ± 30.0 | 0.0–60.0 |" in text


def test_group_by_name_strips_the_seed_part_and_config_grouping_ignores_names(tmp_path):
    root = make_sweep(tmp_path / "sweep", [run("qr_s0", 0, 0.5), run("qr_s1", 1, 0.7), run("qa_s0", 0, 0.1)])
    by_config = st.seed_table([root])
    assert [c["label"] for c in by_config["cells"]] == ["all runs"] and by_config["cells"][0]["members"][-1].endswith("qa_s0")
    by_name = cells_by_label(st.seed_table([root], name_pattern=r"_s\d+$"))
    assert set(by_name) == {"qr", "qa"}
    assert by_name["qr"]["test_mean"] == pytest.approx(60.0) and by_name["qr"]["seeds"] == [0, 1]
    assert by_name["qa"]["members"] == [f"{root}/qa_s0"]


def test_cells_span_roots_and_lw_switches_split_them(tmp_path):
    """Runs of two sweeps with one config form one cell; LW_FORCE_REFERENCE (other kernels) is a cell of its own,
    also when an older summary has no environment (the plan line says it); LW_SOURCE, a path, splits nothing."""
    one = make_sweep(tmp_path / "one", [run("s0", 0, 0.4), run("ref_s0", 0, 0.9, "LW_FORCE_REFERENCE=1", environment=None)],
                     environment={"LW_SOURCE": "/tmp/a.gguf"})
    two = make_sweep(tmp_path / "two", [run("s1", 1, 0.2), run("ref_s1", 1, 0.7, "LW_FORCE_REFERENCE=1")],
                     environment={"LW_SOURCE": "/data/b.gguf"})
    cells = cells_by_label(st.seed_table([one, two]))
    assert set(cells) == {"LW_FORCE_REFERENCE unset", "LW_FORCE_REFERENCE=1"}
    assert cells["LW_FORCE_REFERENCE unset"]["members"] == [f"{one}/s0", f"{two}/s1"]
    assert cells["LW_FORCE_REFERENCE=1"]["test_mean"] == pytest.approx(80.0)


def test_learned_counts_exactly_threshold_points_above_target_alone(tmp_path):
    """0.29 - 0.09 is 0.19999999999999998 in floats; the rule is in points, and exactly +20 learns."""
    root = make_sweep(tmp_path / "sweep", [
        run("s0", 0, 0.29, alone=0.09), run("s1", 1, 0.28, alone=0.09), run("s2", 2, 0.40, alone=0.10),
    ])
    figures = {r["name"]: r for r in st.seed_table([root])["runs"]}
    assert [figures[n]["learned"] for n in ("s0", "s1", "s2")] == [True, False, True]
    cell = st.seed_table([root])["cells"][0]
    assert cell["learned"] == 2 and cell["target_alone_mean"] == pytest.approx(28 / 3)
    assert st.seed_table([root], learned_points=30)["cells"][0]["learned"] == 1  # the threshold is a flag


def test_stable_counts_final_within_two_points_of_best(tmp_path):
    root = make_sweep(tmp_path / "sweep", [
        run("s0", 0, 0.5, best=0.50, final=0.48), run("s1", 1, 0.5, best=0.50, final=0.47), run("s2", 2, 0.5, best=0.3, final=0.3),
    ])
    cell = st.seed_table([root])["cells"][0]
    assert (cell["stable"], cell["stable_known"]) == (2, 3)


def test_a_single_seed_has_no_sd(tmp_path):
    root = make_sweep(tmp_path / "sweep", [run("only_s0", 0, 0.42)])
    table = st.seed_table([root])
    assert table["cells"][0]["test_sd"] is None
    assert "| 42.0 ± — | 42.0–42.0 |" in st.markdown(table, "cmd", "made", None)


def test_a_killed_run_counts_as_run_without_a_figure_not_as_zero(tmp_path):
    root = make_sweep(tmp_path / "sweep", [
        run("k_s0", 0, 0.8, "--recon-weight 1.0"), run("k_s1", 1, None, "--recon-weight 1.0", status="timeout", summary=False),
        run("k_s2", 2, 0.6, "--recon-weight 1.0"), run("e_s0", 0, 0.1, "--recon-weight 0"),
    ])
    table = st.seed_table([root])
    cell = cells_by_label(table)["--recon-weight 1.0"]
    # its config is rebuilt from the sweep's command and plan line, so it lands in its cell, seed 1
    assert cell["members"] == [f"{root}/k_s0", f"{root}/k_s1", f"{root}/k_s2"] and cell["seeds"] == [0, 1, 2]
    assert (cell["runs"], cell["with_figure"]) == (3, 2) and cell["test_mean"] == pytest.approx(70.0)  # not (80 + 0 + 60) / 3
    assert cell["no_figure"] == ["k_s1 (timeout)"]
    killed = next(r for r in table["runs"] if r["name"] == "k_s1")
    assert killed["figure"] is False and killed["config_from"] == "sweep command + plan line" and killed["val_curve"][-1] == [100, 0.0]
    text = st.markdown(table, "cmd", "made", None)
    assert "| --recon-weight 1.0 (k) | 3 | 0, 1, 2 | 2 | 70.0 ± 14.1 | 60.0–80.0 | 2 of 2 |" in text
    assert "- --recon-weight 1.0: k_s1 (timeout)" in text


def test_a_killed_run_whose_flags_no_longer_parse_is_grouped_by_name(tmp_path):
    root = make_sweep(tmp_path / "sweep", [run("k_s0", 0, 0.8), run("k_s1", 1, None, "--flag-from-the-past 3", summary=False)])
    killed = next(r for r in st.seed_table([root])["runs"] if r["name"] == "k_s1")
    assert killed["config_from"].startswith("none: its flags do not parse") and "flag-from-the-past" in killed["config_from"]
    assert [c["label"] for c in st.seed_table([root])["cells"]] == ["all runs", "k"]


def _packet_len(k: int, dim: int, bits: int) -> int:
    packets = encode_soft_tokens(torch.randn(1, k, dim), bytes(8), bits=bits)
    return sum(len(p) for p in packets)


def test_wire_bytes_are_the_length_of_a_real_packet(tmp_path):
    root = make_sweep(tmp_path / "sweep", [run("s0", 0, 0.5), run("s1", 1, 0.5)])
    for name in ("s0", "s1"):  # the run's saved translator config holds the target's hidden size
        (root / name / "translator").mkdir()
        (root / name / "translator" / CONFIG_NAME).write_text(json.dumps({"target_dim": 576, "num_soft_tokens": 16}))
    cell = st.seed_table([root])["cells"][0]
    assert cell["num_soft_tokens"] == 16 and cell["target_dim"] == 576
    assert cell["int8_bytes"] == _packet_len(16, 576, 8) and cell["int4_bytes"] == _packet_len(16, 576, 4)
    assert cell["int4_bytes"] < cell["int8_bytes"]
    with pytest.raises(st.SeedTableError, match="target_dim 576, but --target-dim 960"):
        st.seed_table([root], target_dim=960)


def test_wire_bytes_need_a_target_dim(tmp_path):
    root = make_sweep(tmp_path / "sweep", [run("s0", 0, 0.5, "--tokens 8")])
    assert st.seed_table([root])["cells"][0]["int8_bytes"] is None
    assert "| 8 | — | — |" in st.markdown(st.seed_table([root]), "cmd", "made", None)
    assert st.seed_table([root], target_dim=960)["cells"][0]["int4_bytes"] == _packet_len(8, 960, 4)


class _WordTokenizer:
    """Stand-in target tokenizer: one token per whitespace-separated word, plus a BOS unless
    add_special_tokens=False (a table that keeps special tokens gets other counts)."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [0] * (len(text.split()) + (1 if add_special_tokens else 0))}


def test_compression_is_source_read_target_tokens_over_k(tmp_path):
    root = make_sweep(tmp_path / "sweep", [run("s0", 0, 0.5), run("s1", 1, 0.5)])
    expected = []
    for seed in (0, 1):
        split = load_task("relay_qa:1", "test", 10, seed=seed)
        expected.append(sum(len(source_text(e, "soft_only").split()) for e in split) / 10 / 16)
    cell = st.seed_table([root], tokenizer=_WordTokenizer())["cells"][0]
    assert cell["compression_mean"] == pytest.approx(statistics.fmean(expected)) and cell["compression_runs"] == 2
    assert st.seed_table([root])["cells"][0]["compression_mean"] is None  # no tokenizer, no figure


def test_compression_is_refused_when_the_split_is_not_the_runs(tmp_path):
    root = make_sweep(tmp_path / "sweep", [run("s0", 0, 0.5)])
    summary = json.loads((root / "s0" / "summary.json").read_text())
    summary["test_breakdown"]["predictions"][0]["gold"] = "not this answer"
    (root / "s0" / "summary.json").write_text(json.dumps(summary))
    figures = st.seed_table([root], tokenizer=_WordTokenizer())["runs"][0]
    assert "compression" not in figures and "does not regenerate" in figures["reason"]


def test_script_writes_markdown_and_json_with_provenance_and_its_command(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted({w for s in (0, 1) for e in load_task("relay_qa:1", "test", 10, seed=s) for w in source_text(e, "soft_only").split()})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", *words])}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    root = make_sweep(tmp_path / "sweep", [run("qr_s0", 0, 0.5), run("qr_s1", 1, None, status="exit 1", summary=False)])
    out = tmp_path / "out"
    argv = [str(out), str(root), "--tokenizer", str(tmp_path / "tokenizer.json"), "--target-dim", "576"]
    assert _script().main(argv) == 0
    report = json.loads((out / "seed_table.json").read_text())
    assert report["command"] == "python scripts/seed_table.py " + " ".join(argv)
    assert report["roots"][str(root)]["commit"] == "abc1234" and report["roots"][str(root)]["device"] == DEVICE
    assert report["roots"][str(root)]["command"].startswith("python -m train.sweep plan.txt")
    assert len(report["runs"]) == 2 and report["cells"][0]["compression_mean"] == pytest.approx(
        st.seed_table([root], tokenizer=_WordTokenizer())["cells"][0]["compression_mean"])
    text = (out / "seed_table.md").read_text()
    assert report["command"] in text and "commit abc1234" in text
    row = re.search(r"^\| all runs \(qr\) .*$", text, re.M).group(0)
    assert f"| {_packet_len(16, 576, 8):,} | {_packet_len(16, 576, 4):,} |" in row and "×" in row


def test_a_root_without_sweep_json_or_summaries_is_refused_by_path(tmp_path):
    root = tmp_path / "not_a_sweep"
    (root / "s0").mkdir(parents=True)
    with pytest.raises(SystemExit, match=re.escape(f"{root}: no sweep.json")):
        _script().main([str(tmp_path / "out"), str(root)])


def test_a_folder_of_plain_train_fsdp_runs_is_read_from_their_summaries(tmp_path):
    root = make_sweep(tmp_path / "runs", [run("qr_s0", 0, 0.5), run("qr_s1", 1, 0.1)])
    (root / "sweep.json").unlink()
    table = st.seed_table([root])
    (cell,) = table["cells"]
    assert cell["runs"] == 2 and cell["learned"] == 1 and cell["test_mean"] == pytest.approx(30.0)
    assert table["roots"][str(root)]["device"] == DEVICE and "no sweep.json" in table["roots"][str(root)]["command"]


def test_a_root_without_summaries_is_refused_by_path(tmp_path):
    root = make_sweep(tmp_path / "sweep", [run("s0", 0, None, status="exit 1", summary=False)])
    with pytest.raises(SystemExit, match=re.escape(f"{root}: no <run>/summary.json") + ".*s0"):
        _script().main([str(tmp_path / "out"), str(root)])


def test_a_summary_missing_figures_is_refused_by_path(tmp_path):
    root = make_sweep(tmp_path / "sweep", [run("s0", 0, 0.5)])
    summary = json.loads((root / "s0" / "summary.json").read_text())
    del summary["test_target_alone_acc"]
    (root / "s0" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(st.SeedTableError, match=re.escape(str(root / "s0" / "summary.json")) + ".*test_target_alone_acc"):
        st.seed_table([root])


def test_codec_rows_come_from_a_later_evaluation_json_where_the_summary_has_none(tmp_path):
    root = make_sweep(tmp_path / "sweep", [run("s0", 0, 0.5), run("s1", 1, 0.5)])
    for name, int4 in (("s0", 0.40), ("s1", 0.50)):  # as python -m train.evaluate RUN writes it
        golds = json.loads((root / name / "summary.json").read_text())["samples"]["gold"]
        (root / name / "evaluation.json").write_text(json.dumps({"gold_samples": golds, "methods": {
            "bridge_fp16": {"accuracy": 0.5}, "bridge_int8": {"accuracy": 0.5}, "bridge_int4": {"accuracy": int4}}}))
    table = st.seed_table([root])
    cell = table["cells"][0]
    assert cell["bridge_int8_test_mean"] == pytest.approx(50.0) and cell["bridge_int4_test_mean"] == pytest.approx(45.0)
    assert cell["codec_runs"] == 2 and cell["int4_minus_fp16_worst"] == pytest.approx(-10.0)
    assert "| all runs | 2 | 50.0 | 50.0 | 45.0 | -10.0 |" in st.markdown(table, "cmd", "made", None)
    (root / "s1" / "evaluation.json").unlink()
    cell = st.seed_table([root])["cells"][0]
    assert cell["bridge_int4_test_mean"] == pytest.approx(40.0) and cell["codec_runs"] == 1
    stale = json.loads((root / "s0" / "evaluation.json").read_text())
    stale["gold_samples"] = ["1234"]  # another run's test split, left in the folder
    (root / "s0" / "evaluation.json").write_text(json.dumps(stale))
    table = st.seed_table([root])
    assert table["cells"][0]["codec_runs"] == 0 and table["cells"][0]["bridge_int4_test_mean"] is None
    assert "other test examples" in next(r for r in table["runs"] if r["name"] == "s0")["evaluation_ignored"]
