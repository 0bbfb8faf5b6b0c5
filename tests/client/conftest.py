"""A real local swarm for the client tests: specialist processes on 127.0.0.1 plus the annotation server, with an
untrained tiny primary (the pattern of tests/grpc/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from swarm.model_server.serving.launcher import LocalSwarm, start_local_swarm
from swarm.model_server.serving.primary_annotator import PrimaryAnnotator

SPECIALISTS = ["temporal", "geographic"]


@pytest.fixture(scope="session")
def client_swarm() -> Iterator[LocalSwarm]:
    with start_local_swarm(
        SPECIALISTS,
        annotator=lambda names: PrimaryAnnotator.untrained(names, config="tiny"),
        torch_threads=1,
    ) as local:
        yield local


@pytest.fixture(scope="session")
def address(client_swarm: LocalSwarm) -> str:
    return client_swarm.annotation_address
