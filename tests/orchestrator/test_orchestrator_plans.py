"""Plan costs by hand: critical steps of a plan, a forced rollout on a hand-built cache (used masks, spawns, cold
specialists, deep steps) and the PARL reward terms it earns; one-stage baseline plans; cache bookkeeping."""
from __future__ import annotations

import pytest
import torch
from orchestrator_fixtures import hand_log_probs, policy_for, random_outcomes

from swarm.model_server.model.orchestrator import OrchestratorPolicy, critical_steps
from swarm.trainer.orchestration.env import (
    Cost,
    Outcomes,
    column_rewards,
    mask_index,
    plan_metrics,
    rewards,
    rollout,
    routing_advantages,
    static_plan,
)


def test_critical_steps_by_hand() -> None:
    assert critical_steps([{}]) == 1  # the primary alone: one step
    assert critical_steps([]) == 1  # a plan always has at least the primary's step
    assert critical_steps([{"a": 1, "b": 1}]) == 2  # one wide stage: primary + the (parallel) specialists
    # wide stage, then two deep stages: (1 + 1) + (1 + 1) + (1 + 1)
    assert critical_steps([{"a": 1, "b": 1}, {"c": 1}, {"a": 1}]) == 6
    # a cold specialist (1 step + 2 spawn steps) is the slowest of its stage: 1 + 3
    assert critical_steps([{"a": 1, "c": 3}]) == 4
    assert critical_steps([{"a": 1, "c": 3}, {}]) == 5  # a stage asking nobody still costs the primary's step


# Two tables, three columns, three specialists (0 is cold, spawning costs it 2 more steps; 1 and 2 are warm).
TABLE = torch.tensor([0, 0, 1])
GOLD = [0, 1, 2]
# c0 is right with specialist 0 alone; c1 with specialist 1 alone, but wrong with {0, 1}; c2 with specialist 1 alone.
RIGHT = {0: {0b001}, 1: {0b010}, 2: {0b010}}


def _hand_outcomes() -> Outcomes:
    g = torch.Generator().manual_seed(3)
    return Outcomes(["a", "b", "c"], ["x", "y", "z"], torch.randn(3, 4, generator=g),
                    hand_log_probs(GOLD, RIGHT, n=3), torch.tensor(GOLD), TABLE, 2)


def _forced_actions() -> tuple:
    k = torch.tensor([1, 3])
    order = torch.tensor([[0, 1, 2], [2, 1, 0]])  # table 0 spawns {0}; table 1 spawns all three
    routed = torch.tensor([[True, False, False],  # c0 read by 0
                           [False, False, False],  # c1 by nobody in the wide stage
                           [False, True, False]])  # c2 by 1
    deep = [torch.tensor([-1, 1, -1]),  # c1 → specialist 1 (a new spawn for table 0); c2 stops
            torch.tensor([-1, 0, -1])]  # c1 → specialist 0 (table 0 started it in the wide stage)
    return (k, order, routed), deep


def test_forced_rollout_masks_steps_and_rewards_by_hand() -> None:
    out = _hand_outcomes()
    torch.manual_seed(0)
    policy = OrchestratorPolicy(out.specialists, torch.eye(3, dtype=torch.bool), d_model=4, hidden=8, max_deep=2)
    cost = Cost(budget=3, warm=torch.tensor([False, True, True]), spawn_steps=2)
    plan = rollout(policy, out, cost, actions=_forced_actions())

    assert plan.k.tolist() == [1, 3]
    assert plan.used.tolist() == [[True, False, False], [True, True, False], [False, True, False]]
    assert plan.spawned.tolist() == [[True, True, False], [True, True, True]]
    assert plan.deep_steps.tolist() == [0, 2, 0]
    assert plan.clipped.tolist() == [0, 0]  # forced plans are never clipped
    # table 0: wide {0} cold (1 + 1 + 2) = 4; deep {1} warm (1 + 1) = 2; deep {0}, started already (1 + 1) = 2
    # table 1: wide {1} warm (1 + 1) = 2 (specialists 0 and 2 spawned but never called cost nothing); no deep stage
    assert plan.critical.tolist() == [8.0, 2.0]
    assert plan.calls(TABLE, 2).tolist() == [3.0, 1.0]
    log_prob = plan.log_prob(TABLE, 2)
    assert torch.isfinite(log_prob).all() and log_prob.requires_grad

    assert out.correct(plan.used).tolist() == [1.0, 0.0, 1.0]  # c1 fuses {0, 1}, not just its last specialist
    terms = rewards(out, plan, beta_calls=0.1, beta_steps=0.05)
    assert terms.perf.tolist() == pytest.approx([0.5, 1.0])
    assert terms.parallel.tolist() == pytest.approx([2 / 3, 3 / 3])
    assert terms.finish.tolist() == pytest.approx([2 / 2, 1 / 3])  # table 1 used only 1 of its 3 spawns
    # cost = 0.1 · calls / columns + 0.05 · (critical − 1)
    assert terms.cost.tolist() == pytest.approx([0.1 * 3 / 2 + 0.05 * 7, 0.1 * 1 / 1 + 0.05 * 1])
    assert terms.total(0.2, 0.3).tolist() == pytest.approx([0.5 + 0.2 * 2 / 3 + 0.3 * 1 - 0.5,
                                                            1.0 + 0.2 * 1 + 0.3 / 3 - 0.15])
    # the spawn price: β_spawn · (specialists spawned / N)
    priced = rewards(out, plan, beta_calls=0.0, beta_steps=0.0, beta_spawn=0.3)
    assert priced.cost.tolist() == pytest.approx([0.3 * 2 / 3, 0.3 * 3 / 3])
    # each column's share: its correctness − 0.1 · its passes − 0.05 · its deep steps
    assert column_rewards(out, plan, 0.1, 0.05).tolist() == pytest.approx([1 - 0.1, 0 - 0.2 - 0.1, 1 - 0.1])


def test_routing_advantages_of_the_forced_plan_by_hand() -> None:
    out = _hand_outcomes()
    policy = OrchestratorPolicy(out.specialists, torch.eye(3, dtype=torch.bool), d_model=4, hidden=8)
    with torch.no_grad():
        plan = rollout(policy, out, Cost(budget=3, warm=torch.ones(3, dtype=torch.bool)), actions=_forced_actions())
    # each wide bit: the column's reward as taken minus with the bit flipped (0.1 per pass)
    # c0 reads {0} and is right; without 0 wrong (+1 − 0.1), with 1 too wrong (+1 + 0.1); 2 not spawned for table 0
    # c1: both its specialists came from deep steps (no wide decision to credit)
    # c2 reads {1}, right; dropping 1 or adding 0 or 2 makes it wrong
    assert routing_advantages(out, plan, 0.1).flatten().tolist() == pytest.approx([0.9, 1.1, 0.0, 0.0, 0.0, 0.0,
                                                                                  1.1, 0.9, 1.1])


def test_plan_metrics_of_the_forced_plan_by_hand() -> None:
    out = _hand_outcomes()
    policy = OrchestratorPolicy(out.specialists, torch.eye(3, dtype=torch.bool), d_model=4, hidden=8)
    cost = Cost(budget=3, warm=torch.tensor([False, True, True]), spawn_steps=2)
    with torch.no_grad():
        plan = rollout(policy, out, cost, actions=_forced_actions())
    m = plan_metrics(out, plan.used, plan.spawned, plan.critical, plan.deep_steps, hard=["y", "z", "absent"])
    # gold x y z, predicted x z z: x F1 1, y 0, z 2/3
    assert m["micro_f1"] == pytest.approx(2 / 3)
    assert m["per_class"] == pytest.approx({"x": 1.0, "y": 0.0, "z": 2 / 3})
    assert m["macro_f1"] == pytest.approx(5 / 9)
    assert m["hard_class_f1"] == pytest.approx(1 / 3)  # mean over the hard classes present
    assert m["calls_per_column"] == pytest.approx(4 / 3)
    assert m["critical_steps"] == pytest.approx(5.0)
    assert m["specialists_per_table"] == pytest.approx((2 + 1) / 2)  # table 0 asked {0, 1}, table 1 {1}
    assert m["spawned_per_table"] == pytest.approx(2.5)
    assert m["deep_columns"] == pytest.approx(1 / 3)
    assert plan_metrics(out, plan.used, plan.spawned, plan.critical, plan.deep_steps, hard=[])["hard_class_f1"] \
        is None


def test_warm_specialists_cost_one_step_and_a_second_call_is_never_cold() -> None:
    out = _hand_outcomes()
    policy = OrchestratorPolicy(out.specialists, torch.eye(3, dtype=torch.bool), d_model=4, hidden=8)
    warm = rollout(policy, out, Cost(3, torch.ones(3, dtype=torch.bool), spawn_steps=2), actions=_forced_actions())
    assert warm.critical.tolist() == [6.0, 2.0]  # 2 + 2 + 2; 2
    cold = rollout(policy, out, Cost(3, torch.zeros(3, dtype=torch.bool), spawn_steps=5), actions=_forced_actions())
    # table 0: wide {0} cold 1 + 6; deep {1} cold 1 + 6; deep {0} started 1 + 1. table 1: wide {1} cold 1 + 6
    assert cold.critical.tolist() == [16.0, 7.0]


def test_no_specialist_rewards_nothing_and_costs_nothing() -> None:
    out = _hand_outcomes()
    policy = OrchestratorPolicy(out.specialists, torch.eye(3, dtype=torch.bool), d_model=4, hidden=8)
    nobody = ((torch.tensor([0, 0]), torch.tensor([[0, 1, 2], [0, 1, 2]]), torch.zeros(3, 3, dtype=torch.bool)),
              [torch.tensor([-1, -1, -1])])
    plan = rollout(policy, out, Cost(0, torch.ones(3, dtype=torch.bool)), actions=nobody)
    assert not plan.used.any() and not plan.spawned.any()
    assert plan.critical.tolist() == [1.0, 1.0]
    terms = rewards(out, plan, beta_calls=0.1, beta_steps=0.05)
    assert terms.perf.tolist() == [0.0, 0.0]  # nobody is right with the primary alone here
    assert terms.parallel.tolist() == [0.0, 0.0]
    assert terms.finish.tolist() == [0.0, 0.0]
    assert terms.cost.tolist() == [0.0, 0.0]


def test_static_plan_by_hand() -> None:
    out = _hand_outcomes()
    per_table = torch.tensor([[False, False, False], [True, True, False]])
    used, spawned, critical, deep = static_plan(out, per_table, Cost(3, torch.tensor([False, True, True]), 4))
    assert used.tolist() == [[False] * 3, [False] * 3, [True, True, False]]
    assert spawned.tolist() == per_table.tolist()
    assert critical.tolist() == [1.0, 6.0]  # primary alone; primary + cold specialist 0 (1 + 4)
    assert deep.tolist() == [0, 0, 0]


def test_mask_index_and_subset_lookup() -> None:
    used = torch.tensor([[False, False, False], [True, False, True], [False, True, True]])
    assert mask_index(used).tolist() == [0, 5, 6]
    out = _hand_outcomes()
    assert out.correct(torch.tensor([[True, False, False], [False, True, False], [True, True, False]])).tolist() \
        == [1.0, 1.0, 0.0]
    probs = out.subset_probs(torch.tensor([[True, False, False]] * 3))
    assert probs.sum(-1).tolist() == pytest.approx([1.0] * 3)
    assert probs[0].tolist() == pytest.approx([0.8, 0.1, 0.1])  # c0 under {0}: right (label 0)
    assert probs[1].tolist() == pytest.approx([0.1, 0.1, 0.8])  # c1 under {0}: label (1 + 1) % 3


def test_tiled_copies_and_table_selection() -> None:
    out = random_outcomes(1, n=2, tables=2, columns=2)
    tiled = out.tiled(3)
    assert tiled.n_tables == 6
    assert tiled.table.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert torch.equal(tiled.log_probs[4:8], out.log_probs)
    policy = policy_for(out)
    with torch.no_grad():
        once = rollout(policy, out, Cost(2, torch.ones(2, dtype=torch.bool)))
        thrice = rollout(policy, tiled, Cost(2, torch.ones(2, dtype=torch.bool)))
    assert torch.equal(thrice.used, once.used.repeat(3, 1))  # greedy: every copy gets the same plan
    once_lp = once.log_prob(out.table, out.n_tables)
    assert torch.allclose(thrice.log_prob(tiled.table, tiled.n_tables), once_lp.repeat(3))

    picked = out.tables([1])
    assert picked.n_tables == 1 and picked.table.tolist() == [0, 0]
    assert torch.equal(picked.features, out.features[2:4]) and torch.equal(picked.labels, out.labels[2:4])
    swapped = out.tables([1, 0])
    assert swapped.table.tolist() == [1, 1, 0, 0]  # rows keep their order; table 1 is now table 0
