"""trainer/experiments/specialist_help: fixes, breaks and own-domain fixes of each specialist alone, by hand; the
seeds' summary."""

import pytest
import torch
from orchestrator_fixtures import hand_log_probs

from swarm.trainer.experiments.specialist_help import help_markdown, specialist_help, summarise_help
from swarm.trainer.orchestration.env import Outcomes

# labels: a geographic one, a temporal one, a numeric one; masks: bit 0 geographic, bit 1 temporal
LABELS = ["postalCode", "Date", "price"]


def _outcomes() -> Outcomes:
    gold = [0, 1, 2, 0]
    right = {0: {1, 3},  # geographic alone fixes a postal code (its own domain)
             1: {0, 1},  # temporal alone breaks a date (its own domain)
             2: {2},  # temporal alone fixes a price (not its domain)
             3: {0, 1, 2, 3}}  # always right
    return Outcomes(["geographic", "temporal"], LABELS, torch.zeros(4, 2), hand_log_probs(gold, right, 2),
                    torch.tensor(gold), torch.tensor([0, 0, 1, 1]), 2)


def test_fixes_breaks_and_own_domain_by_hand() -> None:
    geo, temporal = specialist_help(_outcomes())
    assert geo == {"name": "geographic", "fixes": 1, "breaks": 0, "own_domain_fixes": 1,
                   "domain_share_of_columns": 0.5}
    assert temporal == {"name": "temporal", "fixes": 1, "breaks": 1, "own_domain_fixes": 0,
                        "domain_share_of_columns": 0.25}


def test_summary_over_seeds_pools_fixes_for_the_share() -> None:
    one = specialist_help(_outcomes())
    two = [dict(r, fixes=3, own_domain_fixes=1) for r in one]
    geo, temporal = summarise_help([one, two])
    assert geo["fixes"] == 2.0 and geo["fixes_std"] == pytest.approx(2 ** 0.5)
    assert geo["own_domain_share_of_fixes"] == pytest.approx(2 / 4)
    assert temporal["own_domain_share_of_fixes"] == pytest.approx(1 / 4)
    text = help_markdown([geo, temporal], seeds=2)
    assert "| geographic | 2.0 ± 1.4 | 0.0 ± 0.0 | 1.0 ± 0.0 | 0.50 | 0.50 |" in text
