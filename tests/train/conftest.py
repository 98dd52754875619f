"""Shared by the training tests: a pair of tiny random Llamas saved as folders, and the flags of a
seconds-long run on them (CPU)."""

import pytest

from train.random_models import save_random
from train.source_cache import forget_shared_models

TINY_RUN = ["--preset", "tiny", "--source-layer", "-1", "--batch-size", "8", "--warmup", "1", "--checkpoint-every", "0",
            "--train-examples", "32", "--val-examples", "4", "--test-examples", "4", "--max-new-tokens", "2",
            "--no-baselines", "--no-progress", "--no-tensorboard", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_pair")
    yield save_random(root / "source", "tiny", seed=1), save_random(root / "target", "tiny-wide", seed=2)
    forget_shared_models()


@pytest.fixture
def tiny_run(tiny_models):
    """tiny_run(out_dir, *flags) -> the flags of a short run on the tiny pair writing to out_dir."""
    def flags(out, *extra):
        return ["--source", tiny_models[0], "--target", tiny_models[1], *TINY_RUN, "--out-dir", str(out), *extra]

    return flags
