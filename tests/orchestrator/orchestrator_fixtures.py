"""Small Outcomes and policies for the orchestrator tests (imported by the test modules of this folder)."""
from __future__ import annotations

import math

import torch

from swarm.model_server.model.orchestrator import OrchestratorPolicy
from swarm.trainer.orchestration.env import Outcomes

RIGHT, OTHER = math.log(0.8), math.log(0.1)  # three labels: the predicted one gets 0.8, the other two 0.1 each


def hand_log_probs(gold: list[int], right: dict[int, set[int]], n: int, labels: int = 3) -> torch.Tensor:
    """(C, 2**n, labels) log-probs where column c predicts its gold label exactly under the subset masks
    `right[c]` and the next label ((gold + 1) % labels) under every other subset."""
    assert labels == 3
    log_probs = torch.full((len(gold), 2**n, labels), OTHER)
    for c, g in enumerate(gold):
        for mask in range(2**n):
            log_probs[c, mask, g if mask in right.get(c, set()) else (g + 1) % labels] = RIGHT
    return log_probs


def random_outcomes(seed: int, n: int = 4, tables: int = 6, columns: int = 3, labels: int = 5, d: int = 8
                    ) -> Outcomes:
    g = torch.Generator().manual_seed(seed)
    c = tables * columns
    return Outcomes([f"s{i}" for i in range(n)], [f"l{i}" for i in range(labels)], torch.randn(c, d, generator=g),
                    torch.randn(c, 2**n, labels, generator=g).log_softmax(-1),
                    torch.randint(0, labels, (c,), generator=g), torch.arange(tables).repeat_interleave(columns),
                    tables)


def policy_for(out: Outcomes, seed: int = 0, hidden: int = 8, max_deep: int = 2) -> OrchestratorPolicy:
    torch.manual_seed(seed)
    masks = torch.rand(out.n, len(out.labels_text)) > 0.5
    return OrchestratorPolicy(out.specialists, masks, out.features.shape[1], hidden, max_deep)
