"""Reading recurrent states directly: r[l, h, q] = S[l, h]^T q[l, h, q] with queries made from a summary vector.

A primary reads its own final states this way beside its pooled features, and reads the fused specialist states the
same way. A specialist's decoder (model_server/model/specialist.py) reads its states with learnt static queries: its
states are then all it needs to state what it believes, so they are worth handing over.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from swarm.model_server.model.backbone import BackboneConfig


class StateReadout(nn.Module):
    """`queries` reads per layer and head, projected to d_model. Zero-initialised output: adding it to a model
    starts that model exactly where it was."""

    def __init__(self, cfg: BackboneConfig, queries: int = 1) -> None:
        super().__init__()
        self.shape = (cfg.n_layers, cfg.n_heads, queries, cfg.head_k)
        self.query = nn.Linear(cfg.d_model, cfg.n_layers * cfg.n_heads * queries * cfg.head_k)
        self.out = nn.Linear(cfg.n_layers * cfg.n_heads * queries * cfg.head_v, cfg.d_model)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, states: list[Tensor], summary: Tensor) -> Tensor:
        """`states[l]` (B, H, K, V), `summary` (B, d) -> (B, d)."""
        q = F.normalize(self.query(summary).view(-1, *self.shape), dim=-1)
        reads = torch.einsum("blhqk,blhkv->blhqv", q, torch.stack(states, dim=1).to(q.dtype))
        return self.out(reads.flatten(1))
