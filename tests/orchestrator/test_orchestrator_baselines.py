"""The baselines PARL is compared with, by hand: table statistics of the design's complexity formula, the domain
scores and tiers that pick specialists, the grid-searched objective, and random k."""
from __future__ import annotations

import math

import pytest
import torch
from orchestrator_fixtures import hand_log_probs

from swarm.trainer.orchestration.baselines import (
    Tiers,
    confidence_gate,
    domain_scores,
    fit_gate,
    fit_tiers,
    objective,
    random_k,
    table_stats,
)
from swarm.trainer.orchestration.env import Cost, Outcomes, column_plan

# Table 0: three columns, two alike and one orthogonal; table 1: one column; table 2: two columns, one direction.
FEATURES = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.3, -0.7], [3.0, 0.0], [0.5, 0.0]])
TABLE = torch.tensor([0, 0, 0, 1, 2, 2])


def _outcomes(alone: torch.Tensor) -> Outcomes:
    """N=2; `alone` (C, 3): the primary-alone probabilities; every subset predicts the same."""
    log_probs = alone.log()[:, None, :].expand(len(alone), 4, 3).clone()
    return Outcomes(["a", "b"], ["x", "y", "z"], FEATURES, log_probs, torch.zeros(len(alone), dtype=torch.long),
                    TABLE, 3)


def test_table_stats_by_hand() -> None:
    uniform, peaked = [1 / 3] * 3, [0.8, 0.1, 0.1]
    out = _outcomes(torch.tensor([uniform, peaked, peaked, uniform, peaked, uniform]))
    stats = table_stats(out)
    assert stats[:, 0].tolist() == [3.0, 1.0, 2.0]  # columns per table
    h_uniform = math.log(3)
    h_peaked = -(0.8 * math.log(0.8) + 2 * 0.1 * math.log(0.1))
    assert stats[:, 1].tolist() == pytest.approx([(h_uniform + 2 * h_peaked) / 3, h_uniform,
                                                  (h_peaked + h_uniform) / 2], abs=1e-5)
    # diversity = 1 − mean pairwise cosine: table 0 pairs (1, 0, 0) → 1 − 1/3; one column → 0; same direction → 0
    assert stats[:, 2].tolist() == pytest.approx([2 / 3, 0.0, 0.0], abs=1e-6)


def test_domain_scores_by_hand() -> None:
    out = _outcomes(torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [1 / 3] * 3, [0.1, 0.1, 0.8],
                                  [0.6, 0.2, 0.2], [0.0 + 1e-6, 0.5, 0.5 - 1e-6]]))
    masks = torch.tensor([[True, False, False], [False, True, True]])  # a covers x; b covers y and z
    scores = domain_scores(out, masks)
    want = [[0.8 + 0.2 + 1 / 3, 0.2 + 0.8 + 2 / 3], [0.1, 0.9], [0.6, 1.4]]
    for got, row in zip(scores.tolist(), want, strict=True):
        assert got == pytest.approx(row, abs=1e-5)


def test_tiers_pick_the_top_k_domains_by_rank() -> None:
    tiers = Tiers(low=0.3, high=0.7, ks=(1, 2, 3))
    complexity = torch.tensor([0.1, 0.5, 0.9, 0.3, 0.7])
    ranks = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.6], [0.0, 0.1, 0.2], [0.3, 0.2, 0.1], [0.5, 0.4, 0.6]])
    assert tiers.per_table(complexity, ranks).tolist() == [
        [False, True, False],  # low tier: k=1, the best-ranked domain (1)
        [True, False, True],  # middle: k=2, domains 0 and 2
        [True, True, True],  # high: all three
        [True, True, False],  # exactly at `low`: the middle tier
        [True, True, True],  # exactly at `high`: the high tier
    ]
    none = Tiers(low=float("inf"), high=float("inf"), ks=(0, 2, 3))
    assert not none.per_table(complexity, ranks).any()


def _helpful() -> Outcomes:
    """Table 0 (c0, c1) is right only with specialist 1 (any subset holding it); table 1 (c2) is right alone."""
    gold = [0, 1, 2]
    right = {0: {0b10, 0b11}, 1: {0b10, 0b11}, 2: {0b00, 0b01, 0b10, 0b11}}
    g = torch.Generator().manual_seed(0)
    return Outcomes(["a", "b"], ["x", "y", "z"], torch.randn(3, 2, generator=g), hand_log_probs(gold, right, 2),
                    torch.tensor(gold), torch.tensor([0, 0, 1]), 2)


def test_objective_by_hand() -> None:
    out = _helpful()
    cost = Cost(2, torch.ones(2, dtype=torch.bool))
    per_table = torch.tensor([[False, True], [True, True]])
    # table 0: perf 1, calls/column 1; table 1: perf 1, calls/column 2; both 3 critical steps (the primary's own
    # pass, then one stage with specialists)
    want = ((1 - 0.1 * 1 - 0.05 * 2) + (1 - 0.1 * 2 - 0.05 * 2)) / 2
    assert objective(out, per_table[out.table], cost, (0.1, 0.05, 0.0)) == pytest.approx(want)
    nobody = torch.zeros(3, 2, dtype=torch.bool)
    assert objective(out, nobody, cost, (0.1, 0.05, 0.0)) == pytest.approx((0 + 1) / 2)


def test_fit_tiers_spends_where_it_pays() -> None:
    out = _helpful()
    cost = Cost(2, torch.ones(2, dtype=torch.bool))
    complexity = torch.tensor([1.0, 0.0])  # table 0 is the complex one
    ranks = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # specialist 1 ranked first everywhere
    tiers = fit_tiers(out, complexity, ranks, cost, (0.1, 0.05, 0.0))
    # Tier sizes are 0–1 / 2–3 / N, so with N=2 the complex table gets both or shares the easy table's k:
    # both for table 0, none for table 1: 0.5·(1 − 0.1·2 − 0.05·2) + 0.5·1 = 0.85, better than
    # k=1 for both (0.5·0.8 + 0.5·0.8 = 0.8), none for both (0.5), both for both (0.7)
    assert tiers.per_table(complexity, ranks).tolist() == [[True, True], [False, False]]
    assert objective(out, tiers.per_table(complexity, ranks)[out.table], cost, (0.1, 0.05, 0.0)) == \
        pytest.approx(0.85)


def test_column_plan_counts_the_primarys_own_pass_when_it_decides() -> None:
    out = _helpful()
    cost = Cost(2, torch.ones(2, dtype=torch.bool))
    used = torch.tensor([[False, True], [False, False], [False, False]])  # table 0 asks for c0 only; table 1 nobody
    _, spawned, critical, deep = column_plan(out, used, cost)
    assert spawned.tolist() == [[False, True], [False, False]]
    assert critical.tolist() == [2.0, 1.0] and deep.tolist() == [0, 0, 0]
    _, _, critical, _ = column_plan(out, used, cost, reads_alone=True)
    assert critical.tolist() == [3.0, 1.0]  # the primary alone first, where anyone is then asked


def test_confidence_gate_asks_everyone_where_the_primary_is_unsure() -> None:
    # c0 and c1 unsure (top 0.4, wrong alone) and right only with specialist 1; c2 sure (0.9) and right alone
    log_probs = _helpful().log_probs.clone()
    log_probs[:, 0] = torch.tensor([[0.3, 0.4, 0.3], [0.3, 0.3, 0.4], [0.05, 0.05, 0.9]]).log()
    out = Outcomes(["a", "b"], ["x", "y", "z"], torch.zeros(3, 2), log_probs, torch.tensor([0, 1, 2]),
                   torch.tensor([0, 0, 1]), 2)
    assert confidence_gate(out, 0.5).tolist() == [[True, True], [True, True], [False, False]]
    assert not confidence_gate(out, 0.4).any()  # strictly below the threshold
    cost = Cost(2, torch.ones(2, dtype=torch.bool))
    # gating c0, c1: 0.5·(1 − 0.1·2 − 0.05·2) + 0.5·1 = 0.85 beats nobody (0.5) and everyone (0.5·0.7 + 0.5·0.7)
    threshold = fit_gate(out, cost, (0.1, 0.05, 0.0))
    assert confidence_gate(out, threshold).tolist() == [[True, True], [True, True], [False, False]]
    # with calls dear enough, asking never pays: gate nobody
    assert not confidence_gate(out, fit_gate(out, cost, (0.6, 0.0, 0.0))).any()


def test_random_k_never_exceeds_n_and_covers_every_k() -> None:
    g = torch.Generator().manual_seed(0)
    n, tables = 3, 5
    out = Outcomes([f"s{i}" for i in range(n)], ["x"], torch.randn(tables, 2, generator=g),
                   torch.zeros(tables, 2**n, 1), torch.zeros(tables, dtype=torch.long), torch.arange(tables), tables)
    seen = set()
    for seed in range(40):
        spawned = random_k(out, seed)
        assert spawned.shape == (tables, n) and spawned.dtype == torch.bool
        k = spawned.sum(-1)
        assert ((k >= 0) & (k <= n)).all()
        seen |= set(k.tolist())
        assert torch.equal(random_k(out, seed), spawned)  # the seed decides
    assert seen == {0, 1, 2, 3}
