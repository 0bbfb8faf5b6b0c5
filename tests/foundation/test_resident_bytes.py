"""Memory accounting matches the bytes of the real tensors."""
from __future__ import annotations

import pytest
import torch

from swarm.model_server.column_encoder import ColumnEncoder
from swarm.model_server.resident_bytes import specialist_resident_bytes, state_bytes
from swarm.model_server.specialist import untrained


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_specialist_resident_weights_and_states(dtype: torch.dtype) -> None:
    spec = untrained("temporal")
    model = spec.model.to(dtype)
    estimate = specialist_resident_bytes(model, model.backbone.cfg, dtype, batch=3)
    real = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert estimate.weights == real
    states = model.backbone(*ColumnEncoder(32)(["a | b", "2020", "Berlin"])).states
    assert state_bytes(model.backbone.cfg, 3, dtype) == sum(s.numel() * s.element_size() for s in states)
    assert estimate.activations > state_bytes(model.backbone.cfg, 3, dtype)

