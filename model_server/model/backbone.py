"""The recurrent-state backbone: a Gated-DeltaNet-style linear-attention stack whose per-layer state is (B, H, K, V).

Each layer reads an optional initial state and returns its final state; this is how specialists' states are
injected into the primary. The input is a short sequence per column (model_server/model/column_encoder.py): frozen
MiniLM sentence vectors of the column's cells and of its neighbours, markers, and surface features, each kind through
its own learnt projection, so training starts from MiniLM's knowledge of what the cells say.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from swarm.model_server.model.cell_vectors import store
from swarm.model_server.model.column_encoder import N_SPECIAL, feature_rows
from swarm.model_server.model.column_features import FEATURES
from swarm.model_server.model.delta_rule import gated_delta_rule


@dataclass(frozen=True)
class BackboneConfig:
    name: str
    d_model: int
    n_layers: int
    n_heads: int
    head_k: int
    head_v: int
    mlp_hidden: int
    max_len: int  # input positions per column (see column_encoder: ~20 are used)
    embed_dim: int = 384  # MiniLM's sentence-vector width

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)


CONFIGS: dict[str, BackboneConfig] = {
    # CI: CPU seconds.
    "tiny": BackboneConfig("tiny", d_model=128, n_layers=2, n_heads=2, head_k=32, head_v=32, mlp_hidden=256,
                           max_len=32),
    # Demo: CPU minutes.
    "small": BackboneConfig("small", d_model=256, n_layers=4, n_heads=4, head_k=64, head_v=64, mlp_hidden=512,
                            max_len=32),
    # GPU: ~120M parameters (the frozen MiniLM table included), 12 heads of 64x64 per layer.
    "base": BackboneConfig("base", d_model=768, n_layers=12, n_heads=12, head_k=64, head_v=64, mlp_hidden=2560,
                           max_len=64),
}


def get_config(name: str) -> BackboneConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model config {name!r}; choose one of {sorted(CONFIGS)}") from None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class GatedDeltaLayer(nn.Module):
    """Token mixing with the gated delta rule, followed by a SwiGLU MLP; both pre-norm with residuals."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        d, h, dk, dv = cfg.d_model, cfg.n_heads, cfg.head_k, cfg.head_v
        self.n_heads, self.head_k, self.head_v = h, dk, dv
        self.norm_mix = RMSNorm(d)
        self.qkv = nn.Linear(d, h * (2 * dk + dv), bias=False)
        self.ab = nn.Linear(d, 2 * h)  # decay rate and write strength, per head
        self.out_gate = nn.Linear(d, h * dv, bias=False)
        self.out_norm = RMSNorm(dv)
        self.out = nn.Linear(h * dv, d, bias=False)
        # Mamba-2 style decay parametrisation: per-head rates spread over [1, 16].
        self.a_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, h)))
        self.dt_bias = nn.Parameter(torch.log(torch.expm1(torch.linspace(1e-3, 1e-1, h))))
        self.norm_mlp = RMSNorm(d)
        self.mlp_in = nn.Linear(d, 2 * cfg.mlp_hidden, bias=False)
        self.mlp_out = nn.Linear(cfg.mlp_hidden, d, bias=False)

    def forward(self, x: Tensor, mask: Tensor, initial_state: Tensor | None, impl: str) -> tuple[Tensor, Tensor]:
        b, t, _ = x.shape
        hdn = self.norm_mix(x)
        q, k, v = self.qkv(hdn).split(
            [self.n_heads * self.head_k, self.n_heads * self.head_k, self.n_heads * self.head_v], dim=-1)
        q = F.normalize(F.silu(q.view(b, t, self.n_heads, self.head_k)), dim=-1) / math.sqrt(self.head_k)
        k = F.normalize(F.silu(k.view(b, t, self.n_heads, self.head_k)), dim=-1)
        v = F.silu(v.view(b, t, self.n_heads, self.head_v))
        a, beta = self.ab(hdn).chunk(2, dim=-1)
        keep = mask[..., None].to(x.dtype)
        g = -self.a_log.exp() * F.softplus(a + self.dt_bias) * keep
        beta = torch.sigmoid(beta) * keep
        o, state = gated_delta_rule(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), g.transpose(1, 2), beta.transpose(1, 2),
            initial_state=initial_state, impl=impl)
        o = self.out_norm(o.transpose(1, 2)) * F.silu(self.out_gate(hdn).view(b, t, self.n_heads, self.head_v))
        x = x + self.out(o.reshape(b, t, -1))
        gate, up = self.mlp_in(self.norm_mlp(x)).chunk(2, dim=-1)
        return x + self.mlp_out(F.silu(gate) * up), state


@dataclass
class BackboneOutput:
    hidden: Tensor  # (B, T, d)
    pooled: Tensor  # (B, d): mean over real tokens
    states: list[Tensor]  # per layer (B, H, K, V)


class Backbone(nn.Module):
    """Input projections (cell vectors, features, markers), gated-delta layers, final norm and mean pooling."""

    def __init__(self, cfg: BackboneConfig, knowledge: Sequence[str] = ()) -> None:
        super().__init__()
        self.cfg = cfg
        # Knowledge sources read beside each cell vector (a specialist's; model_server/model/knowledge): their facts
        # about the cell enter the recurrence with it, so the states handed over carry what the sources found.
        self.knowledge = tuple(knowledge)
        self.knowledge_proj: nn.Linear | None = None
        if self.knowledge:
            from swarm.model_server.model.knowledge.rows import knowledge_dim

            self.knowledge_proj = nn.Linear(knowledge_dim(self.knowledge), cfg.d_model)
        self.embed_proj = nn.Linear(cfg.embed_dim, cfg.d_model)
        self.feature_proj = nn.Linear(len(FEATURES), cfg.d_model)
        self.markers = nn.Embedding(N_SPECIAL, cfg.d_model)
        self.layers = nn.ModuleList(GatedDeltaLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model)

    def embed(self, input_ids: Tensor) -> Tensor:
        """(B, T) ids of column_encoder → (B, T, d_model): each kind of id through its own projection."""
        device = input_ids.device
        is_cell = input_ids >= N_SPECIAL
        is_feature = input_ids < 0
        cells = store().table(device)
        features = feature_rows().table(device)
        x = self.markers(input_ids.clamp(0, N_SPECIAL - 1)) * (~is_cell & ~is_feature)[..., None]
        dtype = self.embed_proj.weight.dtype
        if is_cell.any():
            rows = (input_ids - N_SPECIAL).clamp(min=0)
            x = x + self.embed_proj(cells[rows].to(dtype)) * is_cell[..., None]
            if self.knowledge_proj is not None:
                from swarm.model_server.model.knowledge.rows import knowledge_rows

                facts = knowledge_rows(self.knowledge).rows(rows).to(device, dtype)
                x = x + self.knowledge_proj(facts) * is_cell[..., None]
        if is_feature.any():
            values = features[(-input_ids - 1).clamp(min=0)].to(dtype)
            x = x + self.feature_proj(values) * is_feature[..., None]
        return x

    def forward(self, input_ids: Tensor, mask: Tensor, initial_states: list[Tensor | None] | None = None,
                impl: str = "auto", embedded: Tensor | None = None) -> BackboneOutput:
        """`embedded`: `embed(input_ids)` when the caller has already computed it (a fused primary reads it for
        its fusion query first)."""
        if initial_states is not None and len(initial_states) != len(self.layers):
            raise ValueError(f"got {len(initial_states)} initial states for {len(self.layers)} layers")
        x = self.embed(input_ids) if embedded is None else embedded
        states = []
        for i, layer in enumerate(self.layers):
            x, state = layer(x, mask, None if initial_states is None else initial_states[i], impl)
            states.append(state)
        hidden = self.norm(x)
        weights = mask.to(hidden.dtype)[..., None]
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return BackboneOutput(hidden=hidden, pooled=pooled, states=states)

    def first_layer(self, input_ids: Tensor, mask: Tensor, impl: str = "auto") -> Tensor:
        """(B, d): the first layer's output, normalised and mean-pooled over real tokens. What the orchestrator's
        complexity and routing heads read before any specialist is asked (1/L of a full pass)."""
        x, _ = self.layers[0](self.embed(input_ids), mask, None, impl)
        weights = mask.to(x.dtype)[..., None]
        return (self.norm(x) * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Parameters of the module (the frozen MiniLM encoder that makes the cell vectors is not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
