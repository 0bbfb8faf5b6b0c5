"""The recurrent-state backbone: a Gated-DeltaNet-style linear-attention stack whose per-layer state is (B, H, K, V).

Each layer reads an optional initial state and returns its final state; this is how specialists' states are
injected into the primary. Token embeddings start from the packaged MiniLM table (frozen) through a learnt
projection, so training does not begin from random lexical knowledge.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from swarm.model_server.delta_rule import gated_delta_rule
from swarm.model_server.text import minilm_word_embeddings


@dataclass(frozen=True)
class BackboneConfig:
    name: str
    d_model: int
    n_layers: int
    n_heads: int
    head_k: int
    head_v: int
    mlp_hidden: int
    max_len: int
    vocab_size: int = 30522
    embed_dim: int = 384

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)


CONFIGS: dict[str, BackboneConfig] = {
    # CI: CPU seconds.
    "tiny": BackboneConfig("tiny", d_model=128, n_layers=2, n_heads=2, head_k=32, head_v=32, mlp_hidden=256,
                           max_len=96),
    # Demo: CPU minutes.
    "small": BackboneConfig("small", d_model=256, n_layers=4, n_heads=4, head_k=64, head_v=64, mlp_hidden=512,
                            max_len=128),
    # GPU: ~120M parameters (the frozen MiniLM table included), 12 heads of 64x64 per layer.
    "base": BackboneConfig("base", d_model=768, n_layers=12, n_heads=12, head_k=64, head_v=64, mlp_hidden=2560,
                           max_len=256),
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
    """Embeddings (frozen MiniLM table + learnt projection), gated-delta layers, final norm and mean pooling."""

    def __init__(self, cfg: BackboneConfig, pretrained_embeddings: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        table = minilm_word_embeddings() if pretrained_embeddings else torch.randn(cfg.vocab_size, cfg.embed_dim)
        # Frozen and not saved in checkpoints: it is re-read from the installed MiniLM package.
        self.register_buffer("word_embeddings", table, persistent=False)
        self.embed_proj = nn.Linear(cfg.embed_dim, cfg.d_model)
        self.layers = nn.ModuleList(GatedDeltaLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model)

    @property
    def state_shape(self) -> tuple[int, int, int]:
        return self.cfg.n_heads, self.cfg.head_k, self.cfg.head_v

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.embed_proj(F.embedding(input_ids, self.word_embeddings))

    def forward(self, input_ids: Tensor, mask: Tensor, initial_states: list[Tensor | None] | None = None,
                impl: str = "auto") -> BackboneOutput:
        if initial_states is not None and len(initial_states) != len(self.layers):
            raise ValueError(f"got {len(initial_states)} initial states for {len(self.layers)} layers")
        x = self.embed(input_ids)
        states = []
        for i, layer in enumerate(self.layers):
            x, state = layer(x, mask, None if initial_states is None else initial_states[i], impl)
            states.append(state)
        hidden = self.norm(x)
        weights = mask.to(hidden.dtype)[..., None]
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return BackboneOutput(hidden=hidden, pooled=pooled, states=states)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    params = sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
    if not trainable_only:
        params += sum(b.numel() for name, b in module.named_buffers() if name.endswith("word_embeddings"))
    return params
