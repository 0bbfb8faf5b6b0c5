"""Memory accounting matches the bytes of the real tensors."""
from __future__ import annotations

import pytest
import torch

from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.resident_bytes import specialist_resident_bytes, state_bytes
from swarm.model_server.model.specialist import untrained


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



def test_swarm_memory_counts_the_knowledge_sources_a_specialist_reads(tmp_path) -> None:
    """`swarm memory` (what a pool's residentBytes comes from) adds the specialist's knowledge sources' data."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from swarm.model_server.model.backbone import get_config
    from swarm.model_server.model.specialist import DomainModel, domains, save_dir

    def memory(directory: Path) -> dict:
        out = subprocess.run([sys.executable, "-m", "swarm.trainer.commands.cli", "memory",
                              "--specialist", str(directory), "--dtype", "float32"],
                             capture_output=True, text=True, timeout=180, check=True)
        return json.loads(out.stdout)

    labels = domains()["identifiers"].labels
    save_dir(tmp_path / "with", "identifiers", DomainModel(get_config("tiny"), labels, ("identifiers",)))
    save_dir(tmp_path / "without", "identifiers", DomainModel(get_config("tiny"), labels))
    reads, plain = memory(tmp_path / "with"), memory(tmp_path / "without")
    assert reads["knowledge_sources"] == ["identifiers"] and plain["knowledge_sources"] == []
    assert plain["knowledge"] == 0 and reads["knowledge"] > 10_000
    assert reads["total"] == reads["weights"] + reads["activations"] + reads["knowledge"]
