"""The spawn budget holds for sampled plans (wide and deep together), refused deep spawns are counted, and a sampled
plan re-scored from its recorded actions gives back its log-probability with gradients (PPO's ratio starts at 1)."""
from __future__ import annotations

import pytest
import torch
from orchestrator_fixtures import policy_for, random_outcomes

from swarm.trainer import orchestrator_env
from swarm.trainer.orchestrator_env import Cost, _within_budget, rollout


def test_within_budget_by_hand() -> None:
    spawned = torch.tensor([[True, False, False], [False, False, False]])
    table = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    nxt = torch.tensor([2, 1, 2, 0, -1, 0, 1])
    kept, refused = _within_budget(nxt, spawned, table, budget=2, n=3)
    # table 0 has room for one more: of its new picks {1, 2} the lower index stays, both columns asking 2 stop;
    # specialist 0 is spawned already and stays. Table 1 has room for two: both picks stay.
    assert kept.tolist() == [-1, 1, -1, 0, -1, 0, 1]
    assert refused.tolist() == [1, 0]  # refused specialists, not columns
    kept, refused = _within_budget(nxt, spawned, table, budget=1, n=3)
    assert kept.tolist() == [-1, -1, -1, 0, -1, 0, -1]
    assert refused.tolist() == [2, 1]


@pytest.mark.parametrize("budget", [0, 1, 2])
def test_sampled_plans_stay_within_the_spawn_budget(budget: int, monkeypatch: pytest.MonkeyPatch) -> None:
    refusals: list[torch.Tensor] = []

    def recording(nxt: torch.Tensor, spawned: torch.Tensor, table: torch.Tensor, budget: int, n: int):
        # independently: distinct new specialists a table picked in this step beyond its room are refused
        new = torch.zeros_like(spawned)
        go = nxt >= 0
        new[table[go], nxt[go]] = True
        new &= ~spawned
        expected = (new.sum(-1) - (budget - spawned.sum(-1)).clamp_min(0)).clamp_min(0)
        kept, refused = _within_budget(nxt, spawned, table, budget, n)
        assert refused.tolist() == expected.tolist()
        refusals.append(refused)
        return kept, refused

    monkeypatch.setattr(orchestrator_env, "_within_budget", recording)
    clipped_total = 0
    for seed in range(8):
        out = random_outcomes(seed, n=4, tables=6, columns=3)
        policy = policy_for(out, seed=seed)
        cost = Cost(budget, torch.ones(4, dtype=torch.bool))
        refusals.clear()
        with torch.no_grad():
            plan = rollout(policy, out, cost, sample=True, generator=torch.Generator().manual_seed(seed))
        assert (plan.k <= budget).all()
        assert (plan.spawned.sum(-1) <= budget).all(), plan.spawned
        assert not (plan.used & ~plan.spawned[out.table]).any()  # nobody reads a column without being spawned
        assert plan.clipped.tolist() == torch.stack(refusals).sum(0).tolist()
        # a refusal only happens to a table that is full
        assert (plan.spawned.sum(-1)[plan.clipped > 0] == budget).all()
        clipped_total += int(plan.clipped.sum())
    if budget == 0:
        assert clipped_total == 0
    else:
        assert clipped_total > 0  # the refusal path was exercised


def _sampled(budget: int, seed: int):
    out = random_outcomes(seed, n=4, tables=6, columns=3)
    policy = policy_for(out, seed=seed)
    cost = Cost(budget, torch.ones(4, dtype=torch.bool))
    with torch.no_grad():
        plan = rollout(policy, out, cost, sample=True, generator=torch.Generator().manual_seed(seed))
    return out, policy, cost, plan


def test_rescoring_a_plan_reproduces_its_log_prob_with_gradients() -> None:
    for seed in range(4):
        out, policy, cost, plan = _sampled(budget=4, seed=seed)  # budget = N: nothing is ever refused
        assert plan.clipped.sum() == 0 and not plan.log_prob.requires_grad
        assert any(len(step) and (step >= 0).any() for step in plan.actions[1]), "no deep step taken"
        again = rollout(policy, out, cost, actions=plan.actions)
        assert torch.equal(again.log_prob, plan.log_prob)
        assert torch.equal(again.entropy, plan.entropy)
        assert torch.equal(again.used, plan.used) and torch.equal(again.critical, plan.critical)
        assert again.log_prob.requires_grad
        policy.zero_grad()
        again.log_prob.sum().backward()
        for name in ("complexity_head", "route_head", "deep_head"):
            grads = [p.grad for p in getattr(policy, name).parameters()]
            assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name


def test_rescoring_reproduces_the_log_prob_of_plans_clipped_at_the_budget() -> None:
    for seed in range(50):
        out, policy, cost, plan = _sampled(budget=1, seed=seed)
        if plan.clipped.sum() > 0:
            break
    else:
        pytest.fail("no sampled plan had a deep pick refused at the budget")
    again = rollout(policy, out, cost, actions=plan.actions)
    assert torch.equal(again.log_prob, plan.log_prob), (again.log_prob - plan.log_prob, plan.clipped)
