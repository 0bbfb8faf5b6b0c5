"""Functional entry point: ``fuse(mode, states, *params, backend)`` picks the Triton or torch implementation.

Backend rule: ``"auto"`` uses Triton for CUDA tensors and the torch reference otherwise, ``"triton"``
forces the kernels (CPU tensors need ``TRITON_INTERPRET=1``), ``"torch"`` forces the reference.
``concat_project`` is torch only on every backend (two small batched matmuls, not a bandwidth-bound
reduction). The Triton module is imported lazily so that importing the fusion package never decorates
kernels before a test sets TRITON_INTERPRET.
"""

from __future__ import annotations

import torch

from . import reference
from .validation import check_backend, check_mode


def use_triton(backend: str, states: torch.Tensor) -> bool:
    check_backend(backend)
    if backend == "auto":
        return states.is_cuda
    return backend == "triton"


def fuse(mode: str, states: torch.Tensor, *params: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Fuse stacked agent states (N, B, H, K, V) into (B, H, K, V).

    ``weighted_sum``: params = (weights (B,H,N),); ``gated``: (gates (N,H,K),);
    ``concat_project``: (A (N,H,K,r), Bm (N,H,r,K)).
    """
    check_mode(mode)
    expected = 2 if mode == "concat_project" else 1
    if len(params) != expected:
        raise ValueError(f"fusion mode {mode!r} takes {expected} parameter tensor(s), got {len(params)}")
    if mode == "concat_project":
        check_backend(backend)
        return reference.concat_project(states, *params)
    if use_triton(backend, states):
        from . import triton_kernels

        kernel = triton_kernels.weighted_sum_triton if mode == "weighted_sum" else triton_kernels.gated_triton
        return kernel(states, *params)
    torch_fn = reference.weighted_sum if mode == "weighted_sum" else reference.gated
    return torch_fn(states, *params)
