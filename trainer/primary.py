"""The primary: the trainable annotator that reads a column and classifies it into one of the SOTAB labels.

Specialist states reach it two ways, both zero-initialised so that a fused primary starts exactly as the primary
alone: fused into each layer's initial state (scaled per layer and head), and read directly by a state readout
beside the readout of its own final states.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from swarm.model_server.backbone import Backbone, BackboneConfig, get_config
from swarm.model_server.readout import StateReadout


class PrimaryModel(nn.Module):
    def __init__(self, cfg: BackboneConfig, labels: Sequence[str], fusion_mode: str | None = None,
                 specialists: Sequence[str] = (), dropout: float = 0.1) -> None:
        super().__init__()
        self.labels = list(labels)
        self.specialists = list(specialists)
        self.fusion_mode = fusion_mode if specialists else None
        self.backbone = Backbone(cfg)
        self.readout = StateReadout(cfg)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cfg.d_model, len(self.labels)))
        self.fusion: nn.Module | None = None
        self.fused_readout: StateReadout | None = None
        # Zero at the start: a fused primary begins as the primary alone, its pre-trained features undisturbed,
        # and learns per layer and head how much of the specialists' memory to let in.
        self.state_scale: nn.Parameter | None = None
        if self.fusion_mode:
            self.state_scale = nn.Parameter(torch.zeros(cfg.n_layers, cfg.n_heads))
            self.fused_readout = StateReadout(cfg)
            from swarm.trainer.fusion.module import StateFusion

            self.fusion = StateFusion(self.fusion_mode, n_agents=len(self.specialists), n_layers=cfg.n_layers,
                                      n_heads=cfg.n_heads, head_k=cfg.head_k, head_v=cfg.head_v,
                                      query_dim=cfg.d_model)

    @property
    def cfg(self) -> BackboneConfig:
        return self.backbone.cfg

    def meta(self) -> dict:
        return {"kind": "primary", "config": self.cfg.name, "labels": self.labels,
                "fusion_mode": self.fusion_mode, "specialists": self.specialists}

    @classmethod
    def from_meta(cls, meta: dict) -> PrimaryModel:
        return cls(get_config(meta["config"]), meta["labels"], meta.get("fusion_mode"), meta.get("specialists", ()))

    def fuse(self, ids: Tensor, mask: Tensor, agent_states: list[Tensor] | None,
             agent_ids: Sequence[int] | None) -> list[Tensor] | None:
        """Fused per-layer (B, H, K, V) specialist states, or None when no specialist state is available."""
        if self.fusion is None or agent_states is None or not agent_ids:
            return None
        weights = mask.to(torch.float32)[..., None]
        query = (self.backbone.embed(ids) * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.fusion(agent_states, query, agent_ids=list(agent_ids))

    def forward(self, ids: Tensor, mask: Tensor, agent_states: list[Tensor] | None = None,
                agent_ids: Sequence[int] | None = None) -> Tensor:
        """Logits (B, labels). `agent_states[l]` is (N, B, H, K, V): layer l of the N agents in `agent_ids`."""
        fused = self.fuse(ids, mask, agent_states, agent_ids)
        initial = None if fused is None else [
            state * scale[None, :, None, None] for state, scale in zip(fused, self.state_scale, strict=True)]
        out = self.backbone(ids, mask, initial)
        features = out.pooled + self.readout(out.states, out.pooled)
        if fused is not None:
            features = features + self.fused_readout(fused, out.pooled)
        return self.head(features)
