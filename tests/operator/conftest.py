"""Fixtures for the operator tests: an emulated Kubernetes API (kmock) per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from swarm.testing.emulator import NODES, EmulatedCluster, gpu_node


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmulatedCluster]:
    with EmulatedCluster(tmp_path) as emulated:
        yield emulated


@pytest.fixture
def add_node(cluster: EmulatedCluster) -> Callable[..., dict[str, Any]]:
    def add(name: str = "gpu-1", **kwargs: Any) -> dict[str, Any]:
        return cluster.create(NODES, gpu_node(name, **kwargs))

    return add
