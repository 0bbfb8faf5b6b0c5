"""Reading recurrent states directly: r[l, h] = S[l, h]^T q[l, h] with queries learnt from a summary vector.

A column classifier reads its own final states this way (so training makes those states carry what the label
needs: a specialist's states are then worth handing over), and the primary reads the fused specialist states the
same way, beside injecting them as initial states.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from swarm.model_server.backbone import BackboneConfig


class StateReadout(nn.Module):
    """Per-layer, per-head state reads, projected to d_model. Zero-initialised output: adding it to a model starts
    that model exactly where it was."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.shape = (cfg.n_layers, cfg.n_heads, cfg.head_k)
        self.query = nn.Linear(cfg.d_model, cfg.n_layers * cfg.n_heads * cfg.head_k)
        self.out = nn.Linear(cfg.n_layers * cfg.n_heads * cfg.head_v, cfg.d_model)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, states: list[Tensor], summary: Tensor) -> Tensor:
        """`states[l]` (B, H, K, V), `summary` (B, d) -> (B, d)."""
        q = F.normalize(self.query(summary).view(-1, *self.shape), dim=-1)
        reads = torch.einsum("blhk,blhkv->blhv", q, torch.stack(states, dim=1).to(q.dtype))
        return self.out(reads.flatten(1))
