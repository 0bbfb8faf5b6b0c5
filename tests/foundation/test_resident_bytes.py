"""Memory accounting matches the bytes of the real tensors."""
from __future__ import annotations

import pytest
import torch

from swarm.model_server.backbone import get_config
from swarm.model_server.column_encoder import ColumnEncoder
from swarm.model_server.primary import PrimaryModel
from swarm.model_server.resident_bytes import specialist_resident_bytes, state_bytes, training_bytes
from swarm.model_server.specialist import untrained
from swarm.trainer.sotab import load_labels


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


def test_primary_training_bytes_match_params_grads_and_adamw_state() -> None:
    torch.manual_seed(0)
    model = PrimaryModel(get_config("tiny"), load_labels())
    estimate = training_bytes(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    ids, mask = ColumnEncoder(32)(["Berlin | Paris", "2020-01-01"])
    model(ids, mask).sum().backward()
    optimizer.step()
    params = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    state = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                if isinstance(v, torch.Tensor))
    assert (estimate.params, estimate.grads, estimate.optimizer) == (params, grads, state)
    with pytest.raises(ValueError, match="unknown optimizer"):
        training_bytes(model, "lion")
