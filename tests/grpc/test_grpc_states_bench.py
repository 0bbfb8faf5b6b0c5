"""swarm.bench.synthetic_states, the source the states benchmark (swarm.bench.grpc_states) streams: the real
specialist server serves it, and a client receives states of its config's geometry."""

from __future__ import annotations

import pytest
import torch

from swarm.bench.synthetic_states import SyntheticStates
from swarm.model_server.model.backbone import get_config
from swarm.model_server.serving.specialist_client import SpecialistClient
from swarm.model_server.serving.specialist_server import build_specialist_server


@pytest.mark.timeout(90)
def test_synthetic_states_are_served_like_a_specialists() -> None:
    cfg = get_config("tiny")
    source = SyntheticStates("temporal", "tiny", torch.float32)
    assert source.config == cfg  # the model config, where the server reads a specialist's
    server = build_specialist_server(source, config="tiny", untrained=True).start()
    try:
        with SpecialistClient({"temporal": server.address}) as client:
            result = client.fetch({"temporal": ["2021-01-01", "2022-02-02"]})
    finally:
        server.stop(0)
    assert not result.missing
    states = result.states["temporal"]
    assert len(states) == cfg.n_layers
    assert all(tuple(t.shape) == (2, cfg.n_heads, cfg.head_k, cfg.head_v) for t in states)
    assert torch.equal(states[0], source.extract_states(["a", "b"])[0])  # the same cached batch, bit for bit
