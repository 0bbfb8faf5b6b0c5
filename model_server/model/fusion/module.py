"""``StateFusion``: the primary's learnt fusion of N specialists' per-layer states into its initial states.

Modes and their learnt parameters (L layers, H heads, K x V head state, n agents, query dim Q, rank r,
attention dim d = 32):

* ``weighted_sum``: per-(layer, head, agent) attention over agents.
  logits[l,b,h,n] = <key[l,h,n], W q[b]> / sqrt(d) + bias[l,h,n], softmax over the present agents.
  Parameters: Q*d + L*H*n*(d+1).
* ``gated``: Cache-to-Cache style gates g[l,n,h,k] = sigmoid(logit). The kernel coefficient is g * 2/N
  (N present agents), so zero logits reproduce the plain average and 1 or 8 specialists give states of
  the same scale. Parameters: L*n*H*K.
* ``concat_project``: out = mean_n S_n + sum_n A[l,n,h] @ (Bm[l,n,h] @ S_n), A (K x r) zero-initialised:
  a low-rank residual on the average (a pure rank-r map cannot start at the average).
  Parameters: L*n*H*2*K*r.

For the ``base`` config (L=12, H=12, K=V=64, Q=768) with 8 specialists and r=8 that is 62,592
(weighted_sum), 73,728 (gated) and 1,179,648 (concat_project) parameters, against ~17M per layer per
specialist for a full projection.

Subsets of agents: ``agent_ids`` names which of the ``n_agents`` known specialists the stacked states come
from, in stacking order; only those agents' parameters are used (a table routed to 1 or 3 specialists, or
a specialist that died mid-stream). With zero agents present the fused states are zeros.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .ops import fuse
from .validation import check_agent_ids, check_backend, check_mode


class StateFusion(nn.Module):
    ATTN_DIM = 32

    def __init__(
        self,
        mode: str,
        n_agents: int,
        n_layers: int,
        n_heads: int,
        head_k: int,
        head_v: int,
        query_dim: int,
        rank: int = 8,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.mode = check_mode(mode)
        self.backend = check_backend(backend)
        sizes = dict(n_agents=n_agents, n_layers=n_layers, n_heads=n_heads, head_k=head_k, head_v=head_v,
                     query_dim=query_dim, rank=rank)  # fmt: skip
        bad = {name: value for name, value in sizes.items() if not (isinstance(value, int) and value >= 1)}
        if bad:
            raise ValueError(f"StateFusion sizes must be positive integers, got {bad}")
        self.n_agents, self.n_layers, self.n_heads = n_agents, n_layers, n_heads
        self.head_k, self.head_v, self.query_dim, self.rank = head_k, head_v, query_dim, rank
        shape_lnh = (n_layers, n_agents, n_heads)
        if mode == "weighted_sum":
            self.query_proj = nn.Linear(query_dim, self.ATTN_DIM, bias=False)
            # Small keys: logits start near 0, i.e. near a uniform average over the present agents.
            self.agent_keys = nn.Parameter(0.02 * torch.randn(n_layers, n_heads, n_agents, self.ATTN_DIM))
            self.agent_bias = nn.Parameter(torch.zeros(n_layers, n_heads, n_agents))
        elif mode == "gated":
            self.gate_logits = nn.Parameter(torch.zeros(*shape_lnh, head_k))
        else:
            self.up = nn.Parameter(torch.zeros(*shape_lnh, head_k, rank))  # A
            self.down = nn.Parameter(torch.randn(*shape_lnh, rank, head_k) / math.sqrt(head_k))  # Bm

    def extra_repr(self) -> str:
        sizes = ("n_agents", "n_layers", "n_heads", "head_k", "head_v", "query_dim", "rank")
        fields = [f"mode={self.mode}", *(f"{s}={getattr(self, s)}" for s in sizes), f"backend={self.backend}"]
        return ", ".join(fields)

    def _index(self, agent_ids: list[int]) -> torch.Tensor:
        device = next(self.parameters()).device
        return torch.tensor(agent_ids, dtype=torch.long, device=device)

    def attention_weights(self, query: torch.Tensor, agent_ids: list[int]) -> torch.Tensor:
        """weighted_sum coefficients (L, B, H, N), softmax-normalised over the present agents."""
        idx = self._index(agent_ids)
        q = self.query_proj(query.to(self.query_proj.weight.dtype))  # (B, d)
        keys = self.agent_keys.index_select(2, idx)  # (L, H, N, d)
        logits = torch.einsum("bd,lhnd->lbhn", q, keys) / math.sqrt(self.ATTN_DIM)
        logits = logits + self.agent_bias.index_select(2, idx)[:, None]
        return torch.softmax(logits, dim=-1)

    def gates(self, agent_ids: list[int]) -> torch.Tensor:
        """gated mode's gates (L, N, H, K) in (0, 1), before the 2/N scaling."""
        return torch.sigmoid(self.gate_logits.index_select(1, self._index(agent_ids)))

    def _check_inputs(self, states: list[torch.Tensor], query: torch.Tensor) -> tuple[int, int]:
        if not isinstance(states, (list, tuple)) or len(states) != self.n_layers:
            got = len(states) if isinstance(states, (list, tuple)) else type(states).__name__
            raise ValueError(f"expected a list of {self.n_layers} per-layer state tensors, got {got}")
        first = states[0]
        if not isinstance(first, torch.Tensor) or first.dim() != 5:
            raise ValueError(f"states[0] must be a 5-D tensor (N, B, H, K, V), got {getattr(first, 'shape', first)}")
        n, b = first.shape[:2]
        expected = (n, b, self.n_heads, self.head_k, self.head_v)
        for layer, s in enumerate(states):
            if not isinstance(s, torch.Tensor) or tuple(s.shape) != expected:
                raise ValueError(
                    f"states[{layer}] has shape {tuple(getattr(s, 'shape', ()))}, expected (N, B, H, K, V) = {expected}"
                )
        if not isinstance(query, torch.Tensor) or tuple(query.shape) != (b, self.query_dim):
            raise ValueError(
                f"query has shape {tuple(getattr(query, 'shape', ()))}, expected (B, query_dim) = {(b, self.query_dim)}"
            )
        return n, b

    def forward(
        self, states: list[torch.Tensor], query: torch.Tensor, agent_ids: list[int] | None = None
    ) -> list[torch.Tensor]:
        """Fuse ``states[l]`` (N, B, H, K, V) into L initial states (B, H, K, V).

        ``query`` (B, query_dim) is a pooled summary of the primary's input (used by weighted_sum only);
        ``agent_ids`` (default: all ``n_agents``, in order) says which agent each of the N stacked states is.
        """
        n, _ = self._check_inputs(states, query)
        ids = check_agent_ids(agent_ids, n, self.n_agents)
        if n == 0:
            return [s.new_zeros(s.shape[1:]) for s in states]
        if self.mode == "weighted_sum":
            weights = self.attention_weights(query, ids)
            return [fuse("weighted_sum", s, weights[i], backend=self.backend) for i, s in enumerate(states)]
        if self.mode == "gated":
            coefs = self.gates(ids) * (2.0 / n)
            return [fuse("gated", s, coefs[i], backend=self.backend) for i, s in enumerate(states)]
        idx = self._index(ids)
        up, down = self.up.index_select(1, idx), self.down.index_select(1, idx)
        return [
            s.mean(0) + fuse("concat_project", s, up[i], down[i], backend=self.backend) for i, s in enumerate(states)
        ]
