"""Fused Triton kernels (forward and backward) for the ``weighted_sum`` and ``gated`` fusion modes.

Both modes are the same contraction with a differently laid-out coefficient:

    out[b,h,k,v] = sum_n c[n,b,h,k] * S[n,b,h,k,v]

``weighted_sum`` has c[n,b,h,k] = w[b,h,n] (stride 0 along k), ``gated`` has c[n,b,h,k] = g[n,h,k]
(stride 0 along b). One pair of kernels therefore serves both; a :class:`CoefLayout` supplies the strides
and the final reduction of the coefficient gradient. Per program: one (b, h) pair and a BLOCK_K x BLOCK_V
tile of rows, looping over the N agents with an fp32 accumulator, so the forward reads each state once and
writes the output once; the backward reads dO once and each state once, writes dS once, and writes a small
fp32 per-row partial ``(N, B, H, K)`` of the coefficient gradient which torch reduces (over K for weights,
over B for gates).
Arithmetic is always done in fp32 after loading (the Triton 3.9 interpreter mis-computes bf16 arithmetic).

On CPU the kernels run only under ``TRITON_INTERPRET=1`` set before this module is imported (``INTERPRETED``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from .validation import check_gated, check_weighted

MAX_HEAD_DIM = 128
# Max elements per program tile. GPU: enough loads in flight per SM without spilling the fp32 accumulator.
# Interpreter: its cost is per program and per op, not per element, so whole (b, h) planes are cheapest.
# Tests shrink the interpreter entry to exercise several row tiles and a masked last tile.
TILE_ELEMS: dict[str, int] = {"gpu": 2048, "interpreter": MAX_HEAD_DIM * MAX_HEAD_DIM}


@triton.jit
def _tile(pid_k, K, V, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr):
    """Row indices, flat (k*V + v) offsets and the bounds mask of this program's tile."""
    rows = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    cols = tl.arange(0, BLOCK_V)
    offs = rows[:, None] * V + cols[None, :]
    mask = (rows[:, None] < K) & (cols[None, :] < V)
    return rows, offs, mask


@triton.jit
def _fuse_fwd_kernel(
    s_ptr, c_ptr, out_ptr,
    N, H, K, V, stride_sn,
    c_sn, c_sb, c_sh, c_sk,
    BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    pid_k = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    rows, offs, mask = _tile(pid_k, K, V, BLOCK_K, BLOCK_V)
    plane = pid_bh.to(tl.int64) * K * V
    s_ptrs = s_ptr + plane + offs
    c_ptrs = c_ptr + b * c_sb + h * c_sh + rows * c_sk
    acc = tl.zeros((BLOCK_K, BLOCK_V), dtype=tl.float32)
    for _ in range(N):
        s = tl.load(s_ptrs, mask=mask, other=0.0).to(tl.float32)
        c = tl.load(c_ptrs, mask=rows < K, other=0.0).to(tl.float32)
        acc += c[:, None] * s
        s_ptrs += stride_sn  # pointer increments keep the agent offset 64-bit
        c_ptrs += c_sn
    tl.store(out_ptr + plane + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _fuse_bwd_kernel(
    s_ptr, c_ptr, do_ptr, ds_ptr, dc_ptr,
    N, H, K, V, stride_sn, stride_dcn,
    c_sn, c_sb, c_sh, c_sk,
    WRITE_DS: tl.constexpr, WRITE_DC: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    pid_k = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    rows, offs, mask = _tile(pid_k, K, V, BLOCK_K, BLOCK_V)
    plane = pid_bh.to(tl.int64) * K * V
    d_out = tl.load(do_ptr + plane + offs, mask=mask, other=0.0).to(tl.float32)
    s_ptrs = s_ptr + plane + offs
    ds_ptrs = ds_ptr + plane + offs
    c_ptrs = c_ptr + b * c_sb + h * c_sh + rows * c_sk
    dc_ptrs = dc_ptr + pid_bh.to(tl.int64) * K + rows
    for _ in range(N):
        if WRITE_DS:
            c = tl.load(c_ptrs, mask=rows < K, other=0.0).to(tl.float32)
            tl.store(ds_ptrs, (c[:, None] * d_out).to(ds_ptr.dtype.element_ty), mask=mask)
        if WRITE_DC:
            s = tl.load(s_ptrs, mask=mask, other=0.0).to(tl.float32)
            tl.store(dc_ptrs, tl.sum(s * d_out, axis=1), mask=rows < K)
        s_ptrs += stride_sn
        ds_ptrs += stride_sn
        c_ptrs += c_sn
        dc_ptrs += stride_dcn


INTERPRETED: bool = isinstance(_fuse_fwd_kernel, InterpretedFunction)


@dataclass(frozen=True)
class CoefLayout:
    """How a mode's coefficient tensor maps onto c[n, b, h, k] and how its gradient is reduced."""

    name: str
    strides: Callable[[torch.Tensor], tuple[int, int, int, int]]  # (n, b, h, k) element strides
    reduce_grad: Callable[[torch.Tensor], torch.Tensor]  # fp32 partial (N, B, H, K) -> coefficient grad


WEIGHTED = CoefLayout(
    "weighted_sum",
    strides=lambda w: (w.stride(2), w.stride(0), w.stride(1), 0),  # w: (B, H, N)
    reduce_grad=lambda part: part.sum(3).permute(1, 2, 0),
)
GATED = CoefLayout(
    "gated",
    strides=lambda g: (g.stride(0), 0, g.stride(1), g.stride(2)),  # g: (N, H, K)
    reduce_grad=lambda part: part.sum(1),
)


@dataclass(frozen=True)
class LaunchConfig:
    grid: tuple[int, int]
    block_k: int
    block_v: int
    num_warps: int


def launch_config(states: torch.Tensor) -> LaunchConfig:
    """Grid and tile shared by the forward and backward kernels; one program per (row tile, b*h)."""
    _, b, h, k, v = states.shape
    block_v = triton.next_power_of_2(v)
    budget = TILE_ELEMS["interpreter" if INTERPRETED else "gpu"]
    block_k = max(1, min(triton.next_power_of_2(k), budget // block_v))
    return LaunchConfig(grid=(triton.cdiv(k, block_k), b * h), block_k=block_k, block_v=block_v, num_warps=4)


def _check_runnable(states: torch.Tensor) -> None:
    _, _, _, k, v = states.shape
    if k > MAX_HEAD_DIM or v > MAX_HEAD_DIM:
        raise ValueError(f"Triton fusion supports K, V <= {MAX_HEAD_DIM}, got K={k}, V={v}")
    if states.device.type == "cpu" and not INTERPRETED:
        raise RuntimeError(
            "Triton fusion on CPU tensors needs the interpreter: set TRITON_INTERPRET=1 before importing "
            "triton / swarm.model_server.model.fusion.triton_kernels, or use backend='torch'"
        )


def fuse_forward(states: torch.Tensor, coef: torch.Tensor, layout: CoefLayout) -> torch.Tensor:
    """out[b,h,k,v] = sum_n c[n,b,h,k] * S[n,b,h,k,v]; no autograd."""
    _check_runnable(states)
    states = states.contiguous()
    n, b, h, k, v = states.shape
    out = torch.empty((b, h, k, v), dtype=states.dtype, device=states.device)
    cfg = launch_config(states)
    _fuse_fwd_kernel[cfg.grid](
        states, coef, out,
        n, h, k, v, b * h * k * v,
        *layout.strides(coef),
        BLOCK_K=cfg.block_k, BLOCK_V=cfg.block_v, num_warps=cfg.num_warps,
    )  # fmt: skip
    return out


def fuse_backward(
    states: torch.Tensor,
    coef: torch.Tensor,
    grad_out: torch.Tensor,
    layout: CoefLayout,
    need_states_grad: bool = True,
    need_coef_grad: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(dS, dc) for ``fuse_forward``; either can be skipped (frozen specialists need no dS)."""
    _check_runnable(states)
    if not (need_states_grad or need_coef_grad):
        return None, None
    states = states.contiguous()
    grad_out = grad_out.contiguous()
    n, b, h, k, v = states.shape
    d_states = torch.empty_like(states) if need_states_grad else None
    partial = torch.empty((n, b, h, k), dtype=torch.float32, device=states.device) if need_coef_grad else None
    cfg = launch_config(states)
    _fuse_bwd_kernel[cfg.grid](
        states, coef, grad_out,
        d_states if d_states is not None else states,  # unused pointer when WRITE_DS is off
        partial if partial is not None else grad_out,
        n, h, k, v, b * h * k * v, b * h * k,
        *layout.strides(coef),
        WRITE_DS=need_states_grad, WRITE_DC=need_coef_grad,
        BLOCK_K=cfg.block_k, BLOCK_V=cfg.block_v, num_warps=cfg.num_warps,
    )  # fmt: skip
    d_coef = layout.reduce_grad(partial).to(coef.dtype) if partial is not None else None
    return d_states, d_coef


class FusionFunction(torch.autograd.Function):
    """Autograd wiring: forward and backward both run the fused Triton kernels."""

    @staticmethod
    def forward(ctx, states: torch.Tensor, coef: torch.Tensor, layout: CoefLayout) -> torch.Tensor:
        ctx.layout = layout
        ctx.save_for_backward(states, coef)
        return fuse_forward(states, coef, layout)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        states, coef = ctx.saved_tensors
        d_states, d_coef = fuse_backward(
            states, coef, grad_out, ctx.layout,
            need_states_grad=ctx.needs_input_grad[0], need_coef_grad=ctx.needs_input_grad[1],
        )  # fmt: skip
        return d_states, d_coef, None


def weighted_sum_triton(states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Triton ``weighted_sum``: states (N,B,H,K,V), weights (B,H,N) -> (B,H,K,V)."""
    check_weighted(states, weights)
    return FusionFunction.apply(states, weights, WEIGHTED)


def gated_triton(states: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Triton ``gated``: states (N,B,H,K,V), gates (N,H,K) -> (B,H,K,V)."""
    check_gated(states, gates)
    return FusionFunction.apply(states, gates, GATED)


__all__ = [
    "GATED",
    "INTERPRETED",
    "MAX_HEAD_DIM",
    "TILE_ELEMS",
    "WEIGHTED",
    "CoefLayout",
    "FusionFunction",
    "LaunchConfig",
    "fuse_backward",
    "fuse_forward",
    "gated_triton",
    "launch_config",
    "weighted_sum_triton",
]
