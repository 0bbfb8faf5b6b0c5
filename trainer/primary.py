"""The primary: the trainable annotator that reads a column, optionally starting each layer from fused specialist
states, and classifies it into one of the SOTAB labels."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from swarm.model_server.backbone import Backbone, BackboneConfig, get_config


class PrimaryModel(nn.Module):
    def __init__(self, cfg: BackboneConfig, labels: Sequence[str], fusion_mode: str | None = None,
                 specialists: Sequence[str] = (), dropout: float = 0.1) -> None:
        super().__init__()
        self.labels = list(labels)
        self.specialists = list(specialists)
        self.fusion_mode = fusion_mode if specialists else None
        self.backbone = Backbone(cfg)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cfg.d_model, len(self.labels)))
        self.fusion: nn.Module | None = None
        # Per-(layer, head) scale of the injected states, zero at the start: a fused primary begins exactly as the
        # primary alone (its pre-trained features undisturbed) and learns how much of each specialist memory to
        # let in.
        self.state_scale: nn.Parameter | None = None
        if self.fusion_mode:
            self.state_scale = nn.Parameter(torch.zeros(cfg.n_layers, cfg.n_heads))
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

    def initial_states(self, ids: Tensor, mask: Tensor, agent_states: list[Tensor] | None,
                       agent_ids: Sequence[int] | None) -> list[Tensor | None] | None:
        """Fused per-layer initial states, or None when no specialist state is available."""
        if self.fusion is None or agent_states is None or not agent_ids:
            return None
        weights = mask.to(torch.float32)[..., None]
        query = (self.backbone.embed(ids) * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        fused = self.fusion(agent_states, query, agent_ids=list(agent_ids))
        return [state * scale[None, :, None, None] for state, scale in zip(fused, self.state_scale, strict=True)]

    def forward(self, ids: Tensor, mask: Tensor, agent_states: list[Tensor] | None = None,
                agent_ids: Sequence[int] | None = None) -> Tensor:
        """Logits (B, labels). `agent_states[l]` is (N, B, H, K, V): layer l of the N agents in `agent_ids`."""
        initial = self.initial_states(ids, mask, agent_states, agent_ids)
        return self.head(self.backbone(ids, mask, initial).pooled)
