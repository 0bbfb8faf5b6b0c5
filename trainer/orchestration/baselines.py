"""What the PARL orchestrator is compared with, each fitted on training tables only and played on held-out ones:

- `threshold_rule`: the design's dynamic spawning, complexity = z(num_columns) + z(label entropy) + z(column
  diversity) (label entropy: mean entropy of the primary-alone posterior over the table's columns; diversity:
  1 − mean pairwise cosine of the columns' first-layer features), mapped to 0–1 / 2–3 / N specialists by two
  thresholds; the specialists are the table's top domains by the primary-alone posterior mass.
- `supervised_head`: the complexity head without RL, a small regressor of the primary-alone loss per column from
  its first-layer features; a table's complexity is its columns' mean prediction, tiered the same way.
- `random_k`: k uniform in 0..N, k random specialists, every column routed to them.
- `confidence_gate`: per column, every specialist when the primary alone is less sure than a threshold (its top
  probability), none otherwise: the simplest rule that reads the primary's own answer.
Thresholds and tier sizes are chosen by grid search on the training tables for the same objective as PARL's final
one (accuracy minus the call and critical-step costs). The rules that read the primary-alone posterior (threshold
rule, supervised head's specialist ranking, confidence gate) need the primary's own pass before asking anyone: one
more critical step for a table that asks (`reads_alone`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from swarm.model_server.model.segments import segment_mean
from swarm.trainer.orchestration.env import Cost, Outcomes, Rollout, column_plan, rewards


def table_stats(out: Outcomes) -> Tensor:
    """(T, 3): number of columns, label entropy of the primary alone, column diversity."""
    alone = out.log_probs[:, 0]
    entropy = -(alone.exp() * alone).sum(-1)
    feats = torch.nn.functional.normalize(out.features.float(), dim=-1)
    count = torch.bincount(out.table, minlength=out.n_tables).float()
    summed = torch.zeros(out.n_tables, feats.shape[1]).index_add_(0, out.table, feats)
    # mean pairwise cosine over i != j: (|Σ f|² − n) / (n (n − 1))
    pair = (summed.pow(2).sum(-1) - count) / (count * (count - 1)).clamp_min(1)
    diversity = torch.where(count > 1, 1 - pair, torch.zeros_like(pair))
    return torch.stack([count, segment_mean(entropy, out.table, out.n_tables), diversity], dim=-1)


def domain_scores(out: Outcomes, domain_masks: Tensor) -> Tensor:
    """(T, N): each specialist domain's share of the primary-alone posterior, summed over the table's columns."""
    mass = out.log_probs[:, 0].exp() @ domain_masks.float().T
    return torch.zeros(out.n_tables, out.n).index_add_(0, out.table, mass)


@dataclass
class Tiers:
    low: float
    high: float
    ks: tuple[int, int, int]

    def per_table(self, complexity: Tensor, ranks: Tensor) -> Tensor:
        k = torch.where(complexity < self.low, self.ks[0], torch.where(complexity < self.high, self.ks[1],
                                                                       self.ks[2]))
        order = ranks.argsort(-1, descending=True)
        taken = torch.arange(ranks.shape[1])[None, :] < k[:, None]
        return torch.zeros_like(taken).scatter(1, order, taken)


def objective(out: Outcomes, used: Tensor, cost: Cost, betas: tuple[float, float, float]) -> float:
    """PARL's final objective (trainer/orchestration/env.rewards without the annealed terms) of a one-stage plan
    decided from the primary's own answer (`used`: (C, N)); `betas`: the costs per call, per critical step and of
    spawning."""
    used, spawned, critical, deep = column_plan(out, used, cost, reads_alone=True)
    none_t, none_c = torch.zeros(out.n_tables), torch.zeros(len(out.table))
    plan = Rollout(used=used, spawned=spawned, critical=critical, deep_steps=deep, k=spawned.sum(-1),
                   complexity=none_t, clipped=none_t.long(), table_log_prob=none_t, column_log_prob=none_c,
                   route_log_prob=torch.zeros(used.shape),
                   table_entropy=none_t, column_entropy=none_c)
    return float(rewards(out, plan, *betas).total(0.0, 0.0).mean())


def fit_tiers(out: Outcomes, complexity: Tensor, ranks: Tensor, cost: Cost, betas: tuple[float, float, float]
              ) -> Tiers:
    """Thresholds at complexity quantiles and tier sizes (0–1, 2–3, N) that maximise the objective here."""
    qs = torch.quantile(complexity.float(), torch.linspace(0, 1, 9)).tolist()
    best, best_value = None, -float("inf")
    n = out.n
    for low, high in itertools.combinations_with_replacement(qs + [float("inf")], 2):
        for ks in itertools.product((0, 1), (min(2, n), min(3, n)), (n,)):
            tiers = Tiers(low, high, ks)
            value = objective(out, tiers.per_table(complexity, ranks)[out.table], cost, betas)
            if value > best_value:
                best, best_value = tiers, value
    assert best is not None
    return best


def top_probability(out: Outcomes) -> Tensor:
    """(C,) the primary-alone posterior's largest probability per column."""
    return out.log_probs[:, 0].max(-1).values.exp()


def confidence_gate(out: Outcomes, threshold: float) -> Tensor:
    """(C, N): every specialist for the columns where the primary alone is less sure than `threshold`."""
    return (top_probability(out) < threshold)[:, None].expand(-1, out.n).clone()


def fit_gate(out: Outcomes, cost: Cost, betas: tuple[float, float, float]) -> float:
    """The threshold (at a quantile of the columns' top probabilities, or above all) that maximises the objective."""
    top = top_probability(out)
    candidates = [*torch.quantile(top, torch.linspace(0, 1, 21)).tolist(), float(top.max()) + 1e-6]
    return max(candidates, key=lambda t: objective(out, confidence_gate(out, t), cost, betas))


def standardise(stats: Tensor, reference: Tensor) -> Tensor:
    """The design's complexity formula: the sum of the statistics z-scored on the reference (training) tables."""
    mean, std = reference.mean(0), reference.std(0).clamp_min(1e-6)
    return ((stats - mean) / std).sum(-1)


class LossRegressor(nn.Module):
    """The supervised complexity head: first-layer features → the primary-alone loss of the column."""

    def __init__(self, d_model: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features.float()).squeeze(-1)


def fit_loss_regressor(out: Outcomes, steps: int = 300, seed: int = 0) -> LossRegressor:
    torch.manual_seed(seed)
    model = LossRegressor(out.features.shape[1])
    target = -out.log_probs[torch.arange(len(out.labels)), 0, out.labels]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(out.features), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def predicted_complexity(model: LossRegressor, out: Outcomes) -> Tensor:
    with torch.no_grad():
        return segment_mean(model(out.features), out.table, out.n_tables)


def random_k(out: Outcomes, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, out.n + 1, (out.n_tables,), generator=g)
    order = torch.rand((out.n_tables, out.n), generator=g).argsort(-1)
    taken = torch.arange(out.n)[None, :] < k[:, None]
    return torch.zeros_like(taken).scatter(1, order, taken)
