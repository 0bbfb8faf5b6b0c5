"""The particle swarm itself (trainer/training/model_swarms.py), on utilities whose optimum is known."""

from __future__ import annotations

import pytest
import torch

from swarm.trainer.training.model_swarms import SwarmConfig, search

pytestmark = pytest.mark.timeout(30)


def _experts(n: int = 3, dim: int = 6) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(dim, generator=gen) * 3 for _ in range(n)]


def test_the_swarm_finds_what_no_expert_is() -> None:
    """The optimum lies between the experts: the swarm gets much closer to it than the best expert."""
    experts = _experts()
    target = torch.stack(experts).mean(0) + 0.1
    result = search(experts, lambda x: -float((x - target).norm()), SwarmConfig(particles=6, iterations=40),
                    progress=False)
    assert result.best_utility > 3 * max(result.start_utilities)  # utilities are negative distances
    assert result.best_utility == pytest.approx(-float((result.best - target).norm()))
    bests = [s.global_best for s in result.history]
    assert bests == sorted(bests) and bests[0] >= max(result.start_utilities)  # crossovers may start better
    assert result.evaluations == 6 * len(result.history)


def test_an_expert_at_the_optimum_stays_the_answer_and_patience_stops_early() -> None:
    experts = _experts()
    target = experts[1].clone()
    result = search(experts, lambda x: -float((x - target).norm()), SwarmConfig(particles=3, iterations=50,
                                                                                   patience=4), progress=False)
    assert torch.equal(result.best, target) and result.best_utility == 0.0
    assert len(result.history) == 1 + 4  # start, then four steps without a better global best
    assert sum(s.restarts for s in result.history) > 0


def test_the_search_is_deterministic_per_seed() -> None:
    experts = _experts()
    runs = [search(experts, lambda x: -float(x.abs().sum()), SwarmConfig(iterations=5, seed=s), progress=False)
            for s in (0, 0, 1)]
    assert torch.equal(runs[0].best, runs[1].best) and not torch.equal(runs[0].best, runs[2].best)


@pytest.mark.parametrize("experts", [[torch.zeros(3)], [torch.zeros(3), torch.zeros(4)], [torch.zeros(2, 2)] * 2])
def test_bad_experts_are_refused(experts: list[torch.Tensor]) -> None:
    with pytest.raises(ValueError, match="expert"):
        search(experts, lambda x: 0.0, progress=False)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="particles"):
        SwarmConfig(particles=0)
    with pytest.raises(ValueError, match="repel"):
        SwarmConfig(repel=-1)
    with pytest.raises(ValueError, match="step"):
        SwarmConfig(step=0)
