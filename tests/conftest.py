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
