"""The orchestrator's training environment: every column's outcome under every subset of specialists, cached once,
and plans played on that cache.

Specialists and the primary are frozen while the orchestrator learns, so what the primary answers for a column with
specialists S fused is fixed: `Outcomes.log_probs[c, mask(S)]` holds it for all 2^N subsets (N=5: 32 primary passes
over the columns, once). A plan — spawn count, wide routing, deep steps — then costs only table lookups, and
thousands of plans per second can be scored on the CPU. `rollout` plays the policy (sampled or greedy) and returns
what it did, its log-probabilities and its cost; `rewards` turns that into the PARL reward terms; `plan_metrics`
scores any plan (policy or baseline) the way the report does.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from swarm.model_server.model.orchestrator import OrchestratorPolicy, realise_deep
from swarm.model_server.model.segments import segment_any, segment_mean, segment_sum
from swarm.trainer.training.metrics import hard_class_f1, score


@dataclass
class Outcomes:
    specialists: list[str]
    labels_text: list[str]  # the primary's label set
    features: Tensor  # (C, d) first-layer pooled features
    log_probs: Tensor  # (C, 2**N, labels)
    labels: Tensor  # (C,) gold label index
    table: Tensor  # (C,) table index in 0..n_tables-1
    n_tables: int

    @property
    def n(self) -> int:
        return len(self.specialists)

    def tables(self, keep: Sequence[int]) -> Outcomes:
        """The outcomes of these tables only, tables renumbered in the given order."""
        remap = torch.full((self.n_tables,), -1, dtype=torch.long)
        remap[torch.tensor(list(keep), dtype=torch.long)] = torch.arange(len(keep))
        rows = (remap[self.table] >= 0).nonzero().squeeze(-1)
        return Outcomes(self.specialists, self.labels_text, self.features[rows], self.log_probs[rows],
                        self.labels[rows], remap[self.table[rows]], len(keep))

    def tiled(self, copies: int) -> Outcomes:
        """`copies` independent copies of every table (copy g's tables are g*T..g*T+T-1): a group of plans per
        table, sampled in one vectorised rollout."""
        offsets = (torch.arange(copies) * self.n_tables).repeat_interleave(len(self.table))
        return Outcomes(self.specialists, self.labels_text, self.features.repeat(copies, 1),
                        self.log_probs.repeat(copies, 1, 1), self.labels.repeat(copies),
                        self.table.repeat(copies) + offsets, self.n_tables * copies)

    def subset_probs(self, used: Tensor) -> Tensor:
        """(C, labels) probabilities with each column's used specialists (C, N) fused."""
        return self.log_probs[torch.arange(len(used)), mask_index(used)].exp()

    def correct(self, used: Tensor) -> Tensor:
        return (self.log_probs[torch.arange(len(used)), mask_index(used)].argmax(-1) == self.labels).float()


def mask_index(used: Tensor) -> Tensor:
    """(C, N) bool → subset index Σ_j 2^j·used[:, j]."""
    bits = 2 ** torch.arange(used.shape[-1], device=used.device)
    return (used.long() * bits).sum(-1)


@dataclass
class Cost:
    """What a plan spends: warm specialists take 1 step; a cold one also `spawn_steps` the first time a table uses
    it. `budget`: how many distinct specialists a table may have active (wide and deep together)."""

    budget: int
    warm: Tensor  # (N,) bool
    spawn_steps: int = 0

    def steps(self, already: Tensor) -> Tensor:
        """(T, N) steps of calling each specialist, given those the table has already started."""
        cold = (~self.warm)[None, :] & ~already
        return 1 + self.spawn_steps * cold.long()


@dataclass
class Rollout:
    used: Tensor  # (C, N) bool: specialists fused into each column's final answer
    spawned: Tensor  # (T, N) bool: specialists instantiated per table
    critical: Tensor  # (T,) critical steps
    deep_steps: Tensor  # (C,) deep steps taken per column
    k: Tensor  # (T,) spawn count chosen by the complexity head
    complexity: Tensor  # (T,) complexity estimate in [0, 1]
    clipped: Tensor  # (T,) deep spawns refused because the table was at its budget
    table_log_prob: Tensor  # (T,) of the table's own decisions: spawn count and which specialists
    column_log_prob: Tensor  # (C,) of each column's decisions: wide routing and deep steps
    route_log_prob: Tensor  # (C, N) of each wide routing bit (0 where not a decision: specialist not spawned)
    table_entropy: Tensor
    column_entropy: Tensor
    actions: tuple = field(default=())  # (wide actions, [deep next per step]) to re-score the same plan

    def log_prob(self, table: Tensor, n_tables: int) -> Tensor:
        """(T,) the whole plan's log-probability per table."""
        return self.table_log_prob + segment_sum(self.column_log_prob, table, n_tables)

    def calls(self, table: Tensor, n_tables: int) -> Tensor:
        """(T,) specialist passes (one per column per specialist)."""
        return segment_sum(self.used.sum(-1).float(), table, n_tables)


def _stage_cost(called: Tensor, steps: Tensor) -> Tensor:
    """(T,) one stage: a primary step plus the slowest specialist called in it (none called: the primary only)."""
    return 1 + (called.long() * steps).max(-1).values


def rollout(policy: OrchestratorPolicy, out: Outcomes, cost: Cost, sample: bool = False,
            actions: tuple | None = None, max_deep: int | None = None,
            generator: torch.Generator | None = None, keep: Tensor | None = None) -> Rollout:
    """Play the policy on every table of `out`: stage one (spawn count, routing), then up to `max_deep` deep stages
    (default: the policy's own cap) for the columns it does not stop. `keep`: a feature dropout mask (training)."""
    n_tables, table = out.n_tables, out.table
    h = policy.encode_columns(out.features, keep)
    plan = policy.wide(h, table, n_tables, cost.budget, sample, None if actions is None else actions[0], generator)
    used = plan.routed.clone()
    spawned = plan.spawned.clone()
    called = segment_any(used, table, n_tables)
    critical = _stage_cost(called, cost.steps(torch.zeros_like(called))).float()
    started = called.clone()
    column_log_prob, column_entropy = plan.column_log_prob, plan.column_entropy
    deep_steps = torch.zeros(len(table), dtype=torch.long)
    clipped = torch.zeros(n_tables, dtype=torch.long)
    active = torch.ones(len(table), dtype=torch.bool)
    deep_actions: list[Tensor] = []
    depth = policy.max_deep if max_deep is None else max_deep
    if actions is not None:
        depth = len(actions[1])
    for d in range(depth):
        room = spawned.sum(-1) < cost.budget
        allowed = spawned[table] | room[table, None]
        probs = out.subset_probs(used).detach()
        step = policy.deep(h, probs, used, allowed, active, sample, None if actions is None else actions[1][d],
                           generator)
        chosen, nxt, refused = realise_deep(step.next, used, allowed, spawned, table, cost.budget)
        if actions is None and bool((nxt != step.next).any()):
            # a refused pick is recorded as the stop it becomes: score that stop, as re-scoring will
            step = policy.deep(h, probs, used, allowed, active, action=nxt)
        clipped += refused
        go = chosen.any(-1)
        deep_actions.append(nxt)
        column_log_prob = column_log_prob + step.log_prob
        column_entropy = column_entropy + step.entropy
        used |= chosen
        now = segment_any(chosen, table, n_tables)
        critical += torch.where(now.any(-1), _stage_cost(now, cost.steps(started)).float(), 0.0)
        started |= now
        spawned |= now
        deep_steps += go.long()
        active = go
        if not go.any():
            break
    return Rollout(used=used, spawned=spawned, critical=critical, deep_steps=deep_steps, k=plan.k,
                   complexity=plan.complexity, clipped=clipped, table_log_prob=plan.table_log_prob,
                   column_log_prob=column_log_prob, route_log_prob=plan.route_log_prob,
                   table_entropy=plan.table_entropy, column_entropy=column_entropy,
                   actions=((plan.k, plan.order, plan.routed), deep_actions))


@dataclass
class RewardTerms:
    perf: Tensor
    parallel: Tensor
    finish: Tensor
    cost: Tensor

    def total(self, lambda1: float, lambda2: float) -> Tensor:
        return self.perf + lambda1 * self.parallel + lambda2 * self.finish - self.cost


def rewards(out: Outcomes, plan: Rollout, beta_calls: float, beta_steps: float, beta_spawn: float = 0.0
            ) -> RewardTerms:
    """Per table: r_perf (share of its columns labelled right), r_parallel (share of the specialists it spawned),
    r_finish (share of its spawned specialists whose states were fused into some column), and the cost
    beta_calls·(specialist passes per column) + beta_steps·(critical steps beyond the primary's one) +
    beta_spawn·(share of the specialists spawned: each holds memory while it runs, used or not)."""
    n_tables, table = out.n_tables, out.table
    perf = segment_mean(out.correct(plan.used), table, n_tables)
    n_spawned = plan.spawned.sum(-1).float()
    used_by_table = segment_any(plan.used, table, n_tables)
    finish = torch.where(n_spawned > 0, (used_by_table & plan.spawned).sum(-1) / n_spawned.clamp_min(1), 0.0)
    columns = torch.bincount(table, minlength=n_tables).clamp_min(1)
    cost = (beta_calls * plan.calls(table, n_tables) / columns + beta_steps * (plan.critical - 1)
            + beta_spawn * n_spawned / out.n)
    return RewardTerms(perf=perf, parallel=n_spawned / out.n, finish=finish, cost=cost)


def routing_advantages(out: Outcomes, plan: Rollout, beta_calls: float) -> Tensor:
    """(C, N) counterfactual credit of each wide routing bit, exact from the cache: the column's reward with the
    bit as taken minus with it flipped, all else in the plan kept (correctness minus beta_calls per pass). Zero for
    bits that were no decision (specialist not spawned) and where a deep step added the specialist anyway."""
    routed, decided = plan.actions[0][2], plan.spawned[out.table]
    base = out.correct(plan.used)
    advantage = torch.zeros(plan.used.shape)
    for j in range(out.n):
        flipped = plan.used.clone()
        flipped[:, j] = ~flipped[:, j]
        # taking the bit costs one pass more than leaving it
        taken_minus_alt = base - out.correct(flipped) + torch.where(routed[:, j], -beta_calls, beta_calls)
        advantage[:, j] = torch.where(routed[:, j] | ~plan.used[:, j], taken_minus_alt, 0.0)
    return advantage * decided


def column_rewards(out: Outcomes, plan: Rollout, beta_calls: float, beta_steps: float) -> Tensor:
    """(C,) what each column's own decisions earned: its correctness, minus its specialist passes and deep steps at
    the plan's prices (its share of the table reward, for per-column credit in the policy gradient)."""
    return out.correct(plan.used) - beta_calls * plan.used.sum(-1) - beta_steps * plan.deep_steps


def plan_metrics(out: Outcomes, used: Tensor, spawned: Tensor, critical: Tensor, deep_steps: Tensor,
                 hard: Sequence[str]) -> dict:
    """How a plan does on real columns: micro / macro / hard-class F1 and what it cost."""
    pred = out.log_probs[torch.arange(len(used)), mask_index(used)].argmax(-1)
    gold = [out.labels_text[i] for i in out.labels.tolist()]
    s = score(gold, [out.labels_text[i] for i in pred.tolist()])
    return {
        "micro_f1": s.micro_f1, "macro_f1": s.macro_f1,
        "hard_class_f1": hard_class_f1(s.per_class, hard),
        "per_class": s.per_class,
        "calls_per_column": float(used.sum()) / len(used),
        "critical_steps": float(critical.float().mean()),
        # distinct specialists whose states reached some column of the table (what it really asked)
        "specialists_per_table": float(segment_any(used, out.table, out.n_tables).sum(-1).float().mean()),
        "spawned_per_table": float(spawned.sum(-1).float().mean()),
        "deep_columns": float((deep_steps > 0).float().mean()),
    }


def oracle_routing(out: Outcomes) -> Tensor:
    """(C, N): per column the smallest subset of specialists (fewest, then lowest subset index) under which the
    primary labels it right, none where no subset does. It reads the gold labels: the ceiling of any routing (wide,
    deep or both) over these frozen models, never a policy."""
    n = out.n
    subsets = torch.arange(2 ** n)
    bits = (subsets[:, None] >> torch.arange(n)) & 1  # (2^N, N)
    right = out.log_probs.argmax(-1) == out.labels[:, None]  # (C, 2^N)
    key = bits.sum(-1) * 2 ** n + subsets  # fewest specialists first
    best = torch.where(right, key[None, :], torch.full_like(right, 4 ** n, dtype=torch.long)).argmin(-1)
    best = torch.where(right.any(-1), best, torch.zeros_like(best))
    return bits[best].bool()


def column_plan(out: Outcomes, used: Tensor, cost: Cost, reads_alone: bool = False
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A one-stage plan: each column read by the specialists of `used` (C, N). `reads_alone`: the plan was decided
    from the primary's own answer, so a primary-only stage precedes the specialists' (one more critical step for a
    table that asks anyone)."""
    spawned = segment_any(used, out.table, out.n_tables)
    critical = _stage_cost(spawned, cost.steps(torch.zeros_like(spawned))).float()
    if reads_alone:
        critical = critical + spawned.any(-1).float()
    return used, spawned, critical, torch.zeros(len(out.table), dtype=torch.long)


def static_plan(out: Outcomes, per_table: Tensor, cost: Cost, reads_alone: bool = False
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A one-stage plan: every column of table t read by the specialists of `per_table[t]` (T, N)."""
    return column_plan(out, per_table[out.table].clone(), cost, reads_alone)
