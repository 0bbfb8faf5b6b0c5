"""PARL: the orchestrator trained by policy gradient on cached outcomes, with frozen specialists and a frozen primary.

Reward per table r = r_perf + λ1·r_parallel + λ2·r_finish − cost (trainer/orchestrator_env.rewards); λ1 and λ2
fall linearly to zero over the first `anneal` share of the iterations, so the final policy optimises accuracy and
cost alone, while early on instantiating specialists (against serial collapse: never asking) and using what was
spawned (against spurious parallelism) are rewarded. Each iteration samples `group` plans per table; a plan's
advantage is its reward minus its group's mean (GRPO style), normalised; the update is the clipped (PPO) surrogate
over `epochs` passes that re-score the same plans, plus an entropy bonus that anneals with λ.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from swarm.model_server.orchestrator import OrchestratorPolicy
from swarm.trainer.orchestrator_env import Cost, Outcomes, rewards, rollout


class ParlConfig(BaseModel):
    iterations: int = Field(150, ge=1)
    group: int = Field(8, ge=2)
    lr: float = Field(3e-3, gt=0)
    lambda1: float = Field(0.2, ge=0)  # r_parallel weight at the start
    lambda2: float = Field(0.2, ge=0)  # r_finish weight at the start
    anneal: float = Field(0.6, ge=0, le=1)  # share of iterations over which λ1, λ2 fall to 0; 0: never annealed
    beta_calls: float = Field(0.01, ge=0)  # cost per specialist pass per column
    beta_steps: float = Field(0.01, ge=0)  # cost per critical step beyond the primary's one
    clip: float = Field(0.2, gt=0)
    epochs: int = Field(2, ge=1)
    entropy: float = Field(0.01, ge=0)
    budget: int = Field(5, ge=0)  # spawn budget: distinct specialists a table may have active
    spawn_steps: int = Field(0, ge=0)  # extra critical steps for a cold specialist's first call
    max_deep: int = Field(2, ge=0)
    hidden: int = Field(64, ge=4)
    seed: int = 0


def annealed(start: float, iteration: int, cfg: ParlConfig) -> float:
    """λ at this iteration: linear from `start` to 0 over the first `anneal` share; constant when anneal is 0."""
    if cfg.anneal == 0:
        return start
    return start * max(0.0, 1.0 - iteration / (cfg.anneal * cfg.iterations))


@dataclass
class ParlStep:
    iteration: int
    lambda1: float
    lambda2: float
    reward: float
    r_perf: float
    r_parallel: float
    r_finish: float
    cost: float
    specialists_per_table: float
    calls_per_column: float
    critical_steps: float


def train_parl(policy: OrchestratorPolicy, out: Outcomes, cfg: ParlConfig, warm: torch.Tensor | None = None,
               desc: str = "PARL") -> list[ParlStep]:
    """Train `policy` in place on the tables of `out`; returns the per-iteration curves."""
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    cost = Cost(budget=cfg.budget, warm=torch.ones(out.n, dtype=torch.bool) if warm is None else warm,
                spawn_steps=cfg.spawn_steps)
    group = out.tiled(cfg.group)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    history: list[ParlStep] = []
    policy.train()
    for it in tqdm(range(cfg.iterations), desc=desc, unit="it", leave=False):
        lam1, lam2 = annealed(cfg.lambda1, it, cfg), annealed(cfg.lambda2, it, cfg)
        with torch.no_grad():
            plan = rollout(policy, group, cost, sample=True, max_deep=cfg.max_deep, generator=generator)
            terms = rewards(group, plan, cfg.beta_calls, cfg.beta_steps)
            reward = terms.total(lam1, lam2).view(cfg.group, out.n_tables)
            advantage = reward - reward.mean(0, keepdim=True)
            advantage = (advantage / (advantage.std() + 1e-6)).flatten()
            old = plan.log_prob
        entropy_coef = annealed(cfg.entropy, it, cfg)
        for _ in range(cfg.epochs):
            again = rollout(policy, group, cost, actions=plan.actions)
            ratio = (again.log_prob - old).clamp(-20, 20).exp()
            surrogate = torch.min(ratio * advantage, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * advantage)
            loss = -surrogate.mean() - entropy_coef * again.entropy.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
        columns = len(group.table)
        history.append(ParlStep(
            iteration=it, lambda1=lam1, lambda2=lam2, reward=float(reward.mean()), r_perf=float(terms.perf.mean()),
            r_parallel=float(terms.parallel.mean()), r_finish=float(terms.finish.mean()),
            cost=float(terms.cost.mean()), specialists_per_table=float(plan.spawned.sum(-1).float().mean()),
            calls_per_column=float(plan.used.sum()) / columns, critical_steps=float(plan.critical.mean())))
    policy.eval()
    return history
