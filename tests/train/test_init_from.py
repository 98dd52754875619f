"""--init-from: a run starts from a saved translator's weights (curriculum stages, fine-tuning)."""

import pytest
import torch

from lw_runtime.translator import BottleneckedGatedTranslator, TranslatorMismatchError
from train.config import check_config, parse_args
from train.loop import train


@pytest.fixture
def flags(tiny_run):
    return lambda out, *extra: tiny_run(out, "--steps", "3", "--eval-every", "3", "--no-early-stopping", *extra)


def _weights(folder):
    """Learnable parameters only (the calibration buffers come from the data, not the optimizer)."""
    return dict(BottleneckedGatedTranslator.from_pretrained(folder).named_parameters())


def test_a_run_starts_from_the_saved_translator(flags, tmp_path):
    train(parse_args(flags(tmp_path / "stage1", "--task", "relay_code2")))
    first = _weights(tmp_path / "stage1" / "translator")
    # learning rate 0: AdamW changes nothing, so the second run must end exactly where it started
    train(parse_args(flags(tmp_path / "stage2", "--task", "relay_qa:2", "--lr", "0",
                            "--init-from", str(tmp_path / "stage1" / "translator"))))
    second = _weights(tmp_path / "stage2" / "translator")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    # the control: the same second run without --init-from (same seed) ends at its fresh initialisation
    train(parse_args(flags(tmp_path / "fresh", "--task", "relay_qa:2", "--lr", "0")))
    fresh = _weights(tmp_path / "fresh" / "translator")
    assert not all(torch.equal(first[k], fresh[k]) for k in first)


def test_another_architecture_or_a_missing_folder_is_a_clear_error(flags, tmp_path):
    train(parse_args(flags(tmp_path / "k16", "--task", "relay_code2")))
    with pytest.raises(TranslatorMismatchError, match="num_soft_tokens"):
        train(parse_args(flags(tmp_path / "k4", "--task", "relay_code2", "--tokens", "4",
                                "--init-from", str(tmp_path / "k16" / "translator"))))
    with pytest.raises(ValueError, match="no translator_config.json"):
        check_config(parse_args(["--init-from", str(tmp_path / "nowhere")]))
