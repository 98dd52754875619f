"""Shared fixtures: the embedded default models, loaded once per test session (frozen, fp32, CPU).

Every test that uses ``target`` or ``source`` (directly or through another fixture) carries the
``models`` marker, so ``-m "not models"`` deselects exactly the tests that need the embedded GGUF
packages; where those packages are absent the fixtures skip with the reason instead of erroring.
"""

import importlib.util

import pytest
import torch

MODEL_FIXTURES = ("target", "source")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(name in MODEL_FIXTURES for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.models)


def _load_embedded(name: str):
    """The embedded model ``name``, or a skip naming what is missing (the packages, or ``gguf`` for
    a first conversion); any other load failure is a real error and is raised."""
    from lw_runtime.models import ModelLoadError, cache_root, embedded_gguf_path, load_model

    try:
        path = embedded_gguf_path(name)
    except ModelLoadError as exc:
        pytest.skip(f"{name} is not installed here: {exc}")
    converted = any((cache_root() / "converted").glob(f"{path.stem}-*/config.json"))
    if not converted and importlib.util.find_spec("gguf") is None:
        pytest.skip(f"{name}: its first conversion needs the `gguf` package (pip install -e .[embedded])")
    return load_model(name)


@pytest.fixture(scope="session")
def target():
    from lw_runtime.models import EMBEDDED_TARGET

    torch.manual_seed(0)
    return _load_embedded(EMBEDDED_TARGET)


@pytest.fixture(scope="session")
def source():
    from lw_runtime.models import EMBEDDED_SOURCE

    return _load_embedded(EMBEDDED_SOURCE)
