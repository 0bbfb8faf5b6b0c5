"""PARL: the λ schedule by hand, and training on toy bandits — one specialist makes every column right (the policy
learns to ask it), or nobody helps and calls are expensive (the policy learns to ask nobody)."""
from __future__ import annotations

import pytest
import torch
from orchestrator_fixtures import hand_log_probs

from swarm.model_server.model.orchestrator import OrchestratorPolicy
from swarm.trainer.orchestration.env import Cost, Outcomes, rollout
from swarm.trainer.orchestration.parl import ParlConfig, annealed, train_parl


def test_annealed_by_hand() -> None:
    cfg = ParlConfig(iterations=100, anneal=0.6)  # λ falls to 0 over the first 60 iterations
    assert annealed(0.2, 0, cfg) == pytest.approx(0.2)
    assert annealed(0.2, 30, cfg) == pytest.approx(0.1)
    assert annealed(0.2, 45, cfg) == pytest.approx(0.05)
    assert annealed(0.2, 60, cfg) == 0.0
    assert annealed(0.2, 99, cfg) == 0.0  # after the window: 0, never negative
    whole = ParlConfig(iterations=10, anneal=1.0)
    assert annealed(1.0, 5, whole) == pytest.approx(0.5)
    assert annealed(1.0, 9, whole) == pytest.approx(0.1)
    constant = ParlConfig(iterations=100, anneal=0.0)
    assert [annealed(0.3, it, constant) for it in (0, 50, 99)] == [0.3, 0.3, 0.3]


N, TABLES, COLUMNS, D = 3, 4, 3, 8


def _bandit(good: int | None) -> Outcomes:
    """Every column is right exactly when `good` alone is fused (any other specialist fused makes it wrong, the
    primary alone is wrong); with good=None the primary alone is right and no subset changes its answer."""
    c = TABLES * COLUMNS
    gold = [i % 3 for i in range(c)]
    everything = set(range(2**N))
    right = {i: ({1 << good} if good is not None else everything) for i in range(c)}
    g = torch.Generator().manual_seed(0)
    return Outcomes(["geographic", "temporal", "numeric"], ["x", "y", "z"], torch.randn(c, D, generator=g),
                    hand_log_probs(gold, right, N), torch.tensor(gold),
                    torch.arange(TABLES).repeat_interleave(COLUMNS), TABLES)


def _policy(cfg: ParlConfig) -> OrchestratorPolicy:
    torch.manual_seed(cfg.seed)
    return OrchestratorPolicy(["geographic", "temporal", "numeric"], torch.eye(N, dtype=torch.bool), D, cfg.hidden,
                              cfg.max_deep)


def _greedy(policy: OrchestratorPolicy, out: Outcomes):
    with torch.no_grad():
        return rollout(policy, out, Cost(N, torch.ones(N, dtype=torch.bool)))


@pytest.mark.parametrize(("good", "credit"), [(0, "counterfactual"), (2, "counterfactual"), (2, "group")])
def test_parl_learns_to_ask_the_one_specialist_that_helps(good: int, credit: str) -> None:
    out = _bandit(good)
    cfg = ParlConfig(iterations=40, group=8, lr=1e-2, budget=N, max_deep=1, hidden=16, seed=1, credit=credit)
    policy = _policy(cfg)
    before = _greedy(policy, out)
    assert float(out.correct(before.used).mean()) < 0.5  # untrained, it does not already get it right
    history = train_parl(policy, out, cfg)
    assert len(history) == cfg.iterations
    assert history[0].lambda1 == pytest.approx(cfg.lambda1) and history[-1].lambda1 == 0.0
    assert history[-1].r_perf > history[0].r_perf

    plan = _greedy(policy, out)
    assert float(plan.used[:, good].float().mean()) >= 0.9  # (almost) every column routed to it
    assert float(out.correct(plan.used).mean()) >= 0.9  # micro accuracy
    assert not policy.training  # handed back in eval mode


def test_parl_with_expensive_calls_and_no_help_asks_nobody() -> None:
    out = _bandit(None)
    cfg = ParlConfig(iterations=40, group=8, lr=1e-2, budget=N, max_deep=1, hidden=16, seed=0, beta_calls=1.0,
                     beta_steps=0.0, lambda1=0.0, lambda2=0.0)
    policy = _policy(cfg)
    assert _greedy(policy, out).used.any()  # untrained, it asks (routing starts leaning to "read it")
    train_parl(policy, out, cfg)
    plan = _greedy(policy, out)
    assert not plan.used.any(), plan.used.sum(0)
    assert plan.critical.tolist() == [1.0] * TABLES
    assert float(out.correct(plan.used).mean()) == 1.0
