"""The spawn budget holds for sampled plans (wide and deep together), refused deep spawns are counted, and a sampled
plan re-scored from its recorded actions gives back its log-probability with gradients (PPO's ratio starts at 1)."""
from __future__ import annotations

import pytest
import torch
from orchestrator_fixtures import policy_for, random_outcomes

from swarm.model_server.model.orchestrator import realise_deep
from swarm.trainer.orchestration import env as orchestrator_env
from swarm.trainer.orchestration.env import Cost, rollout


def test_realise_deep_by_hand() -> None:
    spawned = torch.tensor([[True, False, False], [False, False, False]])
    table = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    used = torch.zeros((7, 3), dtype=torch.bool)
    allowed = torch.ones((7, 3), dtype=torch.bool)
    nxt = torch.tensor([2, 1, 2, 0, -1, 0, 1])
    chosen, kept, refused = realise_deep(nxt, used, allowed, spawned, table, budget=2)
    # table 0 has room for one more: of its new picks {1, 2} the lower index stays, both columns asking 2 stop;
    # specialist 0 is spawned already and stays. Table 1 has room for two: both picks stay.
    assert kept.tolist() == [-1, 1, -1, 0, -1, 0, 1]
    assert refused.tolist() == [1, 0]  # refused specialists, not columns
    assert chosen.nonzero().tolist() == [[1, 1], [3, 0], [5, 0], [6, 1]]
    chosen, kept, refused = realise_deep(nxt, used, allowed, spawned, table, budget=1)
    assert kept.tolist() == [-1, -1, -1, 0, -1, 0, -1]
    assert refused.tolist() == [2, 1]
    # "all" (action 3 = n): every allowed specialist the column has not used, new ones within the table's room
    used[0, 0] = True
    everyone = torch.tensor([3, 3, -1, -1, -1, 3, -1])
    chosen, kept, refused = realise_deep(everyone, used, allowed, spawned, table, budget=2)
    assert kept.tolist() == everyone.tolist()  # an "all" that keeps something is not a stop
    assert chosen[0].tolist() == [False, True, False]  # 0 used already; of the new {1, 2} only 1 fits
    assert chosen[1].tolist() == [True, True, False]
    assert chosen[5].tolist() == [True, True, False]  # table 1: room for two new ones
    assert refused.tolist() == [1, 1]


@pytest.mark.parametrize("budget", [0, 1, 2])
def test_sampled_plans_stay_within_the_spawn_budget(budget: int, monkeypatch: pytest.MonkeyPatch) -> None:
    refusals: list[torch.Tensor] = []

    def recording(nxt: torch.Tensor, used: torch.Tensor, allowed: torch.Tensor, spawned: torch.Tensor,
                  table: torch.Tensor, budget: int):
        # independently: distinct new specialists a table asked for in this step beyond its room are refused
        n = used.shape[1]
        want = torch.zeros_like(used)
        for c, a in enumerate(nxt.tolist()):
            if 0 <= a < n:
                want[c, a] = True
            elif a == n:
                want[c] = allowed[c] & ~used[c]
        new = torch.zeros_like(spawned)
        for c in range(len(nxt)):
            new[table[c]] |= want[c]
        new &= ~spawned
        expected = (new.sum(-1) - (budget - spawned.sum(-1)).clamp_min(0)).clamp_min(0)
        chosen, kept, refused = realise_deep(nxt, used, allowed, spawned, table, budget)
        assert refused.tolist() == expected.tolist()
        refusals.append(refused)
        return chosen, kept, refused

    monkeypatch.setattr(orchestrator_env, "realise_deep", recording)
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
        assert plan.clipped.sum() == 0 and not plan.column_log_prob.requires_grad
        assert any(len(step) and (step >= 0).any() for step in plan.actions[1]), "no deep step taken"
        again = rollout(policy, out, cost, actions=plan.actions)
        for part in ("table_log_prob", "column_log_prob", "table_entropy", "column_entropy"):
            assert torch.equal(getattr(again, part), getattr(plan, part)), part
        assert torch.equal(again.used, plan.used) and torch.equal(again.critical, plan.critical)
        log_prob = again.log_prob(out.table, out.n_tables)
        assert log_prob.requires_grad
        policy.zero_grad()
        log_prob.sum().backward()
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
    assert torch.equal(again.column_log_prob, plan.column_log_prob), plan.clipped
    assert torch.equal(again.table_log_prob, plan.table_log_prob)
