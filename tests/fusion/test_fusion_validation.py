"""Bad input fails with a clear error at the fusion boundary."""

import pytest
import torch

from swarm.model_server.model.fusion import StateFusion, fuse
from swarm.model_server.model.fusion import reference as ref

L, H, K, V, Q = 2, 3, 4, 5, 6


def _module(mode: str = "weighted_sum", n_agents: int = 3) -> StateFusion:
    return StateFusion(mode, n_agents, L, H, K, V, Q, backend="torch")


def _states(n: int = 3, b: int = 2) -> list[torch.Tensor]:
    return [torch.randn(n, b, H, K, V) for _ in range(L)]


def test_unknown_mode_and_backend() -> None:
    with pytest.raises(ValueError, match="unknown fusion mode 'mean'"):
        StateFusion("mean", 3, L, H, K, V, Q)
    with pytest.raises(ValueError, match="unknown fusion backend 'cuda'"):
        StateFusion("gated", 3, L, H, K, V, Q, backend="cuda")
    with pytest.raises(ValueError, match="unknown fusion mode"):
        fuse("sum", torch.randn(1, 1, 1, 2, 2), torch.ones(1, 1, 1))
    with pytest.raises(ValueError, match="unknown fusion backend"):
        fuse("gated", torch.randn(1, 1, 1, 2, 2), torch.ones(1, 1, 2), backend="gpu")


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="positive integers.*n_agents"):
        StateFusion("gated", 0, L, H, K, V, Q)
    with pytest.raises(ValueError, match="rank"):
        StateFusion("concat_project", 3, L, H, K, V, Q, rank=0)


@pytest.mark.parametrize(
    ("states", "query", "match"),
    [
        (_states()[:1], torch.randn(2, Q), "list of 2 per-layer"),
        (torch.randn(3, 2, H, K, V), torch.randn(2, Q), "list of 2 per-layer"),
        ([torch.randn(3, 2, H, K)] * L, torch.randn(2, Q), "5-D"),
        ([torch.randn(3, 2, H + 1, K, V)] * L, torch.randn(2, Q), r"states\[0\] has shape"),
        (
            [torch.randn(3, 2, H, K, V), torch.randn(2, 2, H, K, V)],
            torch.randn(2, Q),
            r"states\[1\] has shape",
        ),
        (_states(), torch.randn(3, Q), "query has shape"),
        (_states(), torch.randn(2, Q + 1), "query has shape"),
    ],
)
def test_module_shape_errors(states, query, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _module()(states, query)


@pytest.mark.parametrize(
    ("n_present", "agent_ids", "match"),
    [
        (2, None, "pass agent_ids"),
        (2, [0], "2 agents"),
        (2, [0, 3], r"\[3\] out of range"),
        (2, [-1, 0], "out of range"),
        (2, [1, 1], "distinct"),
    ],
)
@pytest.mark.parametrize("mode", ["weighted_sum", "gated", "concat_project"])
def test_agent_id_errors(mode: str, n_present: int, agent_ids, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _module(mode)(_states(n_present), torch.randn(2, Q), agent_ids=agent_ids)


def test_functional_param_errors() -> None:
    states = torch.randn(3, 2, H, K, V)
    with pytest.raises(ValueError, match=r"weights has shape \(2, 3, 2\).*need \(2, 3, 3\)"):
        ref.weighted_sum(states, torch.ones(2, H, 2))
    with pytest.raises(ValueError, match=r"gates has shape"):
        ref.gated(states, torch.ones(3, H, V))
    with pytest.raises(ValueError, match=r"Bm has shape"):
        ref.concat_project(states, torch.ones(3, H, K, 2), torch.ones(3, H, 3, K))
    with pytest.raises(ValueError, match="4-D"):
        ref.concat_project(states, torch.ones(3, H, K), torch.ones(3, H, 2, K))
    with pytest.raises(ValueError, match="takes 2 parameter"):
        fuse("concat_project", states, torch.ones(3, H, K, 2))
    with pytest.raises(ValueError, match="5-D"):
        ref.gated(states[0], torch.ones(3, H, K))
    with pytest.raises(ValueError, match="N=0"):
        ref.gated(states[:0], torch.ones(0, H, K))
    with pytest.raises(ValueError, match="floating point"):
        ref.gated(states.long(), torch.ones(3, H, K))
    with pytest.raises(ValueError, match="is on meta"):
        ref.weighted_sum(states, torch.ones(2, H, 3, device="meta"))
