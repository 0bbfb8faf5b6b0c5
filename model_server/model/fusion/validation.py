"""Input checks shared by every fusion backend (torch reference, Triton kernels, StateFusion).

Each check raises ``ValueError`` naming the offending tensor and the expected shape, so a bad call fails at
the fusion boundary instead of deep inside an einsum or a kernel launch.
"""

from __future__ import annotations

import torch

from swarm.model_server.choices import FUSION_MODES

MODES: tuple[str, ...] = FUSION_MODES
BACKENDS: tuple[str, ...] = ("auto", "triton", "torch")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown fusion mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown fusion backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def check_states(states: torch.Tensor) -> tuple[int, int, int, int, int]:
    """Validate stacked agent states and return their shape ``(N, B, H, K, V)``."""
    if not isinstance(states, torch.Tensor):
        raise TypeError(f"states must be a torch.Tensor, got {type(states).__name__}")
    if states.dim() != 5:
        raise ValueError(f"states must be 5-D (N, B, H, K, V), got shape {tuple(states.shape)}")
    if not states.is_floating_point():
        raise ValueError(f"states must be floating point, got {states.dtype}")
    n, b, h, k, v = states.shape
    if n < 1:
        raise ValueError("states hold no agents (N=0); there is nothing to fuse")
    return n, b, h, k, v


def _check_param(name: str, tensor: torch.Tensor, expected: tuple[int, ...], states: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != expected:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)}, but states of shape {tuple(states.shape)} need {expected}"
        )
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {tensor.dtype}")
    if tensor.device != states.device:
        raise ValueError(f"{name} is on {tensor.device} but states are on {states.device}")


def check_weighted(states: torch.Tensor, weights: torch.Tensor) -> None:
    """weights: (B, H, N), already normalised over N."""
    n, b, h, _, _ = check_states(states)
    _check_param("weights", weights, (b, h, n), states)


def check_gated(states: torch.Tensor, gates: torch.Tensor) -> None:
    """gates: (N, H, K)."""
    n, _, h, k, _ = check_states(states)
    _check_param("gates", gates, (n, h, k), states)


def check_concat(states: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> None:
    """up (A): (N, H, K, r); down (Bm): (N, H, r, K)."""
    n, _, h, k, _ = check_states(states)
    if not isinstance(up, torch.Tensor) or up.dim() != 4:
        raise ValueError(f"A must be a 4-D tensor (N, H, K, r), got {getattr(up, 'shape', type(up).__name__)}")
    rank = up.shape[-1]
    _check_param("A", up, (n, h, k, rank), states)
    _check_param("Bm", down, (n, h, rank, k), states)


def check_agent_ids(agent_ids: list[int] | None, n_present: int, n_agents: int) -> list[int]:
    """Resolve which of the ``n_agents`` known agents the ``n_present`` stacked states come from."""
    if agent_ids is None:
        if n_present != n_agents:
            raise ValueError(
                f"got states for {n_present} agents but the module knows {n_agents}; pass agent_ids to say "
                "which agents are present"
            )
        return list(range(n_agents))
    ids = [int(i) for i in agent_ids]
    if len(ids) != n_present:
        raise ValueError(f"agent_ids has {len(ids)} entries but states hold {n_present} agents")
    bad = [i for i in ids if not 0 <= i < n_agents]
    if bad:
        raise ValueError(f"agent_ids {bad} out of range for {n_agents} agents")
    if len(set(ids)) != len(ids):
        raise ValueError(f"agent_ids must be distinct, got {ids}")
    return ids
