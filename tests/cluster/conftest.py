"""Fixtures of the real-cluster tier: one control plane per session (swarm.testing.control_plane) with the CRDs, the
namespace `swarm`, the RBAC of manifests/rbac.yaml and what the pod templates mount (PVCs, TLS Secrets, the
`nvidia` RuntimeClass); per test a clean namespace and no nodes, and `swarm operator` as its ServiceAccount.

Without the binaries (`make cluster-bins`) the tier is skipped, unless SWARM_REQUIRE_CLUSTER=1 (`make test` sets
it), where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm.testing.control_plane import REPO, ControlPlane, missing_binaries
from swarm.testing.emulator import OperatorProcess
from swarm.testing.operator_process import NS, install, operator_process, wipe


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    missing = missing_binaries()
    if missing:
        message = f"control-plane binaries not built ({', '.join(missing)}): run make cluster-bins"
        if os.environ.get("SWARM_REQUIRE_CLUSTER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with ControlPlane(tmp_path_factory.mktemp("control-plane"), crds=REPO / "crds") as control_plane:
        install(control_plane)
        yield control_plane


@pytest.fixture
def cluster(plane: ControlPlane) -> Iterator[ControlPlane]:
    """The session's control plane, emptied of this tier's objects after the test."""
    yield plane
    wipe(plane)


@pytest.fixture
def operator(cluster: ControlPlane, tmp_path: Path) -> Iterator[OperatorProcess]:
    """`swarm operator` serving namespace swarm, as the swarm-operator ServiceAccount (stopped after the test)."""
    with operator_process(cluster, tmp_path / "operator.log") as process:
        yield process


__all__ = ["NS", "REPO"]
