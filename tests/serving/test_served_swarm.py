"""launcher.served_swarm refuses a primary that fuses specialists it cannot start (an untrained one names no
directories) unless their endpoints are given, before starting anything."""
from __future__ import annotations

import pytest

from swarm.model_server.serving.launcher import served_swarm
from swarm.model_server.serving.primary_annotator import PrimaryAnnotator


def test_a_primary_without_specialist_directories_needs_their_endpoints() -> None:
    annotator = PrimaryAnnotator.untrained(["temporal"], device="cpu")
    assert annotator.specialist_names == ["temporal"] and annotator.specialist_dirs == []
    with pytest.raises(ValueError, match="names no specialist directories.*endpoints"), served_swarm(annotator):
        pass


def test_given_endpoints_serve_in_front_of_them_without_local_processes() -> None:
    annotator = PrimaryAnnotator.untrained(["temporal"], device="cpu")
    with served_swarm(annotator, {"temporal": "127.0.0.1:1"}) as server:
        assert server.address.startswith("127.0.0.1:")
