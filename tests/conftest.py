"""Shared fixtures: the embedded default models, loaded once per test session (frozen, fp32, CPU)."""

import pytest
import torch


@pytest.fixture(scope="session")
def target():
    from lw_runtime.models import EMBEDDED_TARGET, load_model

    torch.manual_seed(0)
    return load_model(EMBEDDED_TARGET)


@pytest.fixture(scope="session")
def source():
    from lw_runtime.models import EMBEDDED_SOURCE, load_model

    return load_model(EMBEDDED_SOURCE)
