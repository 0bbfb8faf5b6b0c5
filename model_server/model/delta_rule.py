"""The gated delta rule, the recurrence at the heart of every layer, in three interchangeable implementations.

Per head, with state S (K x V), log-decay g_t <= 0 and write strength beta_t in [0, 1]:

    S_t = exp(g_t) * S_{t-1}
    u_t = beta_t * (v_t - S_t^T k_t)
    S_t = S_t + k_t u_t^T
    o_t = S_t^T q_t

`recurrent` is the step-by-step definition (the reference), `chunked` the same maths in blocks (a triangular solve
per chunk instead of a Python loop per token: the CPU training path), and `fla` calls flash-linear-attention's
CUDA kernels. All take (B, H, T, D) tensors and return outputs (B, H, T, V) and the final state (B, H, K, V).
Padding positions must carry g = 0 and beta = 0, which leaves the state untouched.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def _initial(q: Tensor, v: Tensor, initial_state: Tensor | None) -> Tensor:
    b, h, _, k = q.shape
    if initial_state is None:
        return q.new_zeros(b, h, k, v.shape[-1])
    return initial_state.to(q.dtype)


def recurrent(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
              initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    state = _initial(q, v, initial_state)
    outputs = []
    for t in range(q.shape[2]):
        state = state * g[:, :, t].exp()[..., None, None]
        kt = k[:, :, t]
        u = (v[:, :, t] - torch.einsum("bhk,bhkv->bhv", kt, state)) * beta[:, :, t, None]
        state = state + kt[..., None] * u[..., None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], state))
    return torch.stack(outputs, dim=2), state


def chunked(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
            initial_state: Tensor | None = None, chunk: int = 64) -> tuple[Tensor, Tensor]:
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    # Columns are short (~20 positions): a chunk no longer than the sequence's power of two saves the padding work.
    chunk = min(chunk, max(8, 1 << max(0, t - 1).bit_length()))
    pad = (-t) % chunk
    if pad:
        # Padded steps have g = 0 and beta = 0: they neither decay nor write the state.
        q, k, v = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g, beta = (torch.nn.functional.pad(x, (0, pad)) for x in (g, beta))
    n = q.shape[2] // chunk
    q, k, v = (x.reshape(b, h, n, chunk, x.shape[-1]) for x in (q, k, v))
    g, beta = (x.reshape(b, h, n, chunk) for x in (g, beta))

    gc = g.cumsum(-1)
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    strictly_lower = causal.tril(-1)
    # decay[i, j] = exp(gc_i - gc_j) for j <= i, else 0 (masked before exp so nothing overflows).
    decay = (gc[..., :, None] - gc[..., None, :]).masked_fill(~causal, float("-inf")).exp()
    kk = k @ k.transpose(-1, -2)
    strict = (beta[..., :, None] * kk * decay).masked_fill(~strictly_lower, 0.0)
    eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
    rhs = torch.cat([v * beta[..., None], k * (beta * gc.exp())[..., None]], dim=-1)
    # (I + A) X = rhs with A strictly lower triangular: X = [W | Kc], the per-chunk WY terms.
    solved = torch.linalg.solve_triangular(eye + strict, rhs, upper=False, unitriangular=True)
    w, kc = solved[..., :dv], solved[..., dv:]
    qk = (q @ k.transpose(-1, -2)) * decay

    state = _initial(q[:, :, 0], v[:, :, 0], initial_state)
    outputs = []
    for i in range(n):
        u = w[:, :, i] - kc[:, :, i] @ state
        outputs.append((q[:, :, i] * gc[:, :, i, :, None].exp()) @ state + qk[:, :, i] @ u)
        tail = (gc[:, :, i, -1:] - gc[:, :, i]).exp()
        state = state * gc[:, :, i, -1].exp()[..., None, None] + (k[:, :, i] * tail[..., None]).transpose(-1, -2) @ u
    o = torch.cat(outputs, dim=2)[:, :, :t]
    return o, state


def fla_available() -> bool:
    """flash-linear-attention (fla-core) importable and a CUDA device present."""
    try:
        import fla.ops.gated_delta_rule  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


def fla_backward_ok() -> bool:
    """Whether fla's backward can run here. fla refuses its gated backward on Hopper (sm_90) with Triton 3.4 to 3.7.0,
    which compute wrong gradients there (fla issue #640): training then takes the chunked path, inference keeps fla."""
    if not torch.cuda.is_available():
        return False
    if torch.cuda.get_device_capability()[0] != 9:
        return True
    import triton

    version = tuple(int(part) for part in triton.__version__.split("+")[0].split(".")[:3] if part.isdigit())
    return not (3, 4, 0) <= version < (3, 7, 1)


def fla_dtype(q: Tensor, k: Tensor, v: Tensor) -> torch.dtype:
    """The one dtype fla's kernels get q, k and v in (their tl.dot takes operands of one dtype): the autocast dtype
    under autocast (the backbone's q and k leave F.normalize in float32 while v is bf16), else the widest of the
    three."""
    if torch.is_autocast_enabled(q.device.type):
        return torch.get_autocast_dtype(q.device.type)
    return torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)


def fla(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
        initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """flash-linear-attention 0.6's `chunk_gated_delta_rule` (Triton kernels, CUDA), same contract as `chunked`.

    fla takes (B, T, H, D) tensors (no head-first layout), log-space g of shape (B, T, H) and post-sigmoid beta;
    q, k, v in one dtype (`fla_dtype`), g in float32 and beta in that dtype, as fla's own GatedDeltaNet layer passes
    them, and a float32 initial state (its state is float32 throughout). Our q is already L2-normalised and scaled,
    so scale=1 and no in-kernel L2 norm. Outputs and final state come back in q's dtype, like the torch paths.
    """
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    dtype, work = q.dtype, fla_dtype(q, k, v)
    o, state = chunk_gated_delta_rule(
        *(x.transpose(1, 2).to(work) for x in (q, k, v)),
        g.transpose(1, 2).float(), beta.transpose(1, 2).to(work),
        scale=1.0, initial_state=None if initial_state is None else initial_state.float(),
        output_final_state=True, use_qk_l2norm_in_kernel=False,
    )
    return o.transpose(1, 2).to(dtype), state.to(dtype)


def lean_fla_autotune() -> None:
    """Cut fla's Triton autotuning down to a few configs per kernel, for runs on a time budget (bench/gpu_check.sh).

    fla autotunes every kernel over up to 48 configs (warps x stages x block sizes), compiling each, and again for
    every new batch size, head count, head size and dtype: minutes on a fresh machine. This keeps, for each block-size
    choice of a kernel, the one config with num_warps nearest 4 and num_stages nearest 2 (cheap to compile, light on
    shared memory), so block sizes are still tuned; a choice that does not fit the card is benchmarked as infinitely
    slow by Triton, as before. Only kernels defined in fla's modules are affected; idempotent; nothing calls it by
    default (tests/cuda and bench/training.py --fla-autotune lean do).
    """
    import math

    from triton.runtime.autotuner import Autotuner

    if getattr(Autotuner.prune_configs, "_swarm_lean", False):
        return
    original = Autotuner.prune_configs

    def prune_configs(self: Autotuner, kwargs: dict[str, Any]) -> list[Any]:  # Triton's configs (untyped)
        configs = original(self, kwargs)
        if not (getattr(getattr(self, "base_fn", None), "__module__", None) or "").startswith("fla."):
            return configs
        best: dict = {}
        for cfg in configs:
            group = tuple(sorted((k, repr(v)) for k, v in cfg.kwargs.items()))
            cost = (abs(math.log2(max(cfg.num_warps, 1)) - 2), abs(cfg.num_stages - 2))
            if group not in best or cost < best[group][0]:
                best[group] = (cost, cfg)
        return [cfg for _, cfg in best.values()]

    prune_configs.__dict__["_swarm_lean"] = True  # the mark read above (mypy allows no new attributes on functions)
    Autotuner.prune_configs = prune_configs


def gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                     initial_state: Tensor | None = None, impl: str = "auto") -> tuple[Tensor, Tensor]:
    """Dispatch: `auto` uses fla on CUDA when installed (and the inputs are not float64, which fla has no kernels
    for), else the chunked torch path; so a machine without fla trains on the torch path, never an import error.

    The torch paths compute in float32 at least (the triangular solve has no half-precision CPU kernel, and the
    recurrence accumulates), then return outputs and state in the input dtype.
    """
    if impl == "auto":
        needs_backward = torch.is_grad_enabled() and any(
            x is not None and x.requires_grad for x in (q, k, v, g, beta, initial_state))
        usable = q.is_cuda and q.dtype != torch.float64 and fla_available()
        impl = "fla" if usable and (not needs_backward or fla_backward_ok()) else "chunked"
    if impl == "fla":
        return fla(q, k, v, g, beta, initial_state)
    paths: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {"chunked": chunked, "recurrent": recurrent}
    if impl not in paths:
        raise ValueError(f"unknown delta-rule implementation {impl!r} (auto, fla, chunked, recurrent)")
    dtype = q.dtype
    work = torch.promote_types(dtype, torch.float32)
    o, state = paths[impl](*(x.to(work) for x in (q, k, v, g, beta)),
                           None if initial_state is None else initial_state.to(work))
    return o.to(dtype), state.to(dtype)
