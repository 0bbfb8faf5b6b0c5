"""Shared test fixtures: small SOTAB-format datasets that the tests write themselves."""
from __future__ import annotations

from pathlib import Path

import pytest
from sotab_fixtures import write_fixture_split


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A dataset root with training and validation splits of three easy labels."""
    write_fixture_split(tmp_path, "training", 24, seed=1)
    write_fixture_split(tmp_path, "validation", 8, seed=2)
    return tmp_path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` are skipped where torch sees no CUDA GPU (bench/gpu_check.sh runs them on one)."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (bash bench/gpu_check.sh runs these on one)")
    for item in marked:
        item.add_marker(skip)
