"""The orchestrator report's statistics by hand: Spearman rank correlation (ties averaged), the accuracy of the
robust primary per subset size and the oracle routing (the ceiling of any plan)."""
from __future__ import annotations

import math

import pytest
import torch
from orchestrator_fixtures import hand_log_probs

from swarm.trainer.experiments.orchestrator import spearman, subset_curve
from swarm.trainer.orchestration.env import Outcomes, oracle_routing


def test_spearman_by_hand() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a.exp()) == pytest.approx(1.0)  # any monotone map
    assert spearman(a, -(a**3)) == pytest.approx(-1.0)
    # no ties: 1 − 6·Σd² / (n(n² − 1)) with d = (−1, 1, −1, 1, 0): 1 − 24/120
    assert spearman(a, torch.tensor([2.0, 1.0, 4.0, 3.0, 5.0])) == pytest.approx(0.8)
    # ties get average ranks: (0, 1.5, 1.5, 3) against (0, 1, 2, 3) → 4.5 / sqrt(4.5 · 5) = sqrt(0.9)
    tied = torch.tensor([1.0, 2.0, 2.0, 3.0])
    assert spearman(tied, torch.tensor([10.0, 20.0, 30.0, 40.0])) == pytest.approx(math.sqrt(0.9))
    assert spearman(torch.tensor([3, 1, 2]), torch.tensor([0.5, 0.1, 0.2])) == pytest.approx(1.0)  # integer input
    assert spearman(torch.ones(4), a[:4]) == 0.0  # no spread: no correlation, not NaN


def test_subset_curve_by_hand() -> None:
    # two columns, N=2 (masks: 0 none, 1 {a}, 2 {b}, 3 {a, b})
    right = {0: {0, 1, 3}, 1: {1, 3}}
    out = Outcomes(["a", "b"], ["x", "y", "z"], torch.zeros(2, 2), hand_log_probs([0, 2], right, 2),
                   torch.tensor([0, 2]), torch.tensor([0, 1]), 2)
    curve = subset_curve(out)
    assert curve["none"] == pytest.approx(0.5)
    assert curve["singles"] == pytest.approx({"a": 1.0, "b": 0.0})
    assert curve["all"] == pytest.approx(1.0)
    assert curve["by_size"] == pytest.approx({0: 0.5, 1: 0.5, 2: 1.0})
    assert list(curve["by_size"]) == [0, 1, 2]


def test_oracle_routing_takes_the_smallest_subset_that_is_right() -> None:
    # N=2, masks 0 none, 1 {a}, 2 {b}, 3 {a, b}; column 0 right alone, 1 only with b or both, 2 only with both,
    # 3 never (falls back to the primary alone)
    right = {0: {0, 1, 2, 3}, 1: {2, 3}, 2: {3}, 3: set()}
    out = Outcomes(["a", "b"], ["x", "y", "z"], torch.zeros(4, 2), hand_log_probs([0, 1, 2, 0], right, 2),
                   torch.tensor([0, 1, 2, 0]), torch.tensor([0, 0, 1, 1]), 2)
    used = oracle_routing(out)
    assert used.tolist() == [[False, False], [False, True], [True, True], [False, False]]
    assert out.correct(used).tolist() == [1.0, 1.0, 1.0, 0.0]
