"""Torch reference implementations of the fusion modes (plain differentiable ops).

These define what the Triton kernels must compute, serve as the CPU backend, and are what torch eager /
torch.compile are benchmarked with. Layouts (N agents, batch B, H heads, key dim K, value dim V):

* ``weighted_sum(S, w)``: S (N,B,H,K,V), w (B,H,N) -> out[b,h] = sum_n w[b,h,n] * S[n,b,h]
* ``gated(S, g)``:        S (N,B,H,K,V), g (N,H,K)  -> out[b,h,k,v] = sum_n g[n,h,k] * S[n,b,h,k,v]
* ``concat_project(S, A, Bm)``: A (N,H,K,r), Bm (N,H,r,K) -> out[b,h] = sum_n A[n,h] @ (Bm[n,h] @ S[n,b,h])

Accumulation happens in at least fp32 (float64 stays float64 so gradcheck is meaningful); outputs have the
states' dtype. The explicit ``*_backward`` functions spell out the analytic gradients the kernels implement.
"""

from __future__ import annotations

import torch

from .validation import check_concat, check_gated, check_weighted


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp32 for half types, otherwise the input dtype (so float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def weighted_sum(states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    check_weighted(states, weights)
    acc = acc_dtype(states.dtype)
    w = weights.to(acc).permute(2, 0, 1)[..., None, None]  # (N, B, H, 1, 1)
    return (states.to(acc) * w).sum(0).to(states.dtype)


def gated(states: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    check_gated(states, gates)
    acc = acc_dtype(states.dtype)
    g = gates.to(acc)[:, None, :, :, None]  # (N, 1, H, K, 1)
    return (states.to(acc) * g).sum(0).to(states.dtype)


def concat_project(states: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Low-rank per-agent, per-head projection; ``up`` is A (N,H,K,r), ``down`` is Bm (N,H,r,K)."""
    check_concat(states, up, down)
    acc = acc_dtype(states.dtype)
    low = torch.einsum("nhrk,nbhkv->nbhrv", down.to(acc), states.to(acc))
    return torch.einsum("nhkr,nbhrv->bhkv", up.to(acc), low).to(states.dtype)


def weighted_sum_backward(
    states: torch.Tensor, weights: torch.Tensor, grad_out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dS, dw): dS[n,b,h] = w[b,h,n] * dO[b,h]; dw[b,h,n] = <S[n,b,h], dO[b,h]> over (K, V)."""
    check_weighted(states, weights)
    acc = acc_dtype(states.dtype)
    d_out = grad_out.to(acc)
    d_states = weights.to(acc).permute(2, 0, 1)[..., None, None] * d_out
    d_weights = (states.to(acc) * d_out).sum((-2, -1)).permute(1, 2, 0)
    return d_states.to(states.dtype), d_weights.to(weights.dtype)


def gated_backward(
    states: torch.Tensor, gates: torch.Tensor, grad_out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dS, dg): dS = g * dO broadcast over (B, V); dg[n,h,k] = sum_{b,v} S[n,b,h,k,v] * dO[b,h,k,v]."""
    check_gated(states, gates)
    acc = acc_dtype(states.dtype)
    d_out = grad_out.to(acc)
    d_states = gates.to(acc)[:, None, :, :, None] * d_out
    d_gates = (states.to(acc) * d_out).sum((1, -1))
    return d_states.to(states.dtype), d_gates.to(gates.dtype)
