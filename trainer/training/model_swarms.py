"""Model Swarms: a particle swarm over model weights (flat vectors) that climbs a utility, such as the F1 of a
specialist on ~200 labelled columns of a new table domain (trainer/training/adapt.py).

Particles start at the experts (then at random crossovers of two experts when there are more particles than
experts), each heading for another expert. At every step a particle's velocity becomes a normalised random mix of
its inertia, the way to its personal best, the way to the global best and the way away from the global worst, and
it moves x <- x + lambda * v, lambda decaying. A particle whose personal best has not improved for `restart_after`
steps restarts from it at rest; the search ends after `iterations` steps or once the global best has not improved
for `patience` steps. The global best never gets worse: the experts themselves are evaluated first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from tqdm import tqdm


class SwarmConfig(BaseModel):
    """The particle swarm's settings (Model Swarms' defaults)."""

    model_config = ConfigDict(frozen=True)

    particles: int = Field(8, ge=1, description="Particles (the experts first, then crossovers of two).")
    iterations: int = Field(20, ge=0, description="Swarm steps at most.")
    step: float = Field(0.5, gt=0, description="lambda: how far a particle moves along its velocity.")
    step_decay: float = Field(0.95, gt=0, description="lambda's factor per step.")
    inertia: float = Field(0.2, ge=0, description="Weight of the particle's own velocity.")
    cognitive: float = Field(0.3, ge=0, description="Weight towards the particle's personal best.")
    social: float = Field(0.4, ge=0, description="Weight towards the global best.")
    repel: float = Field(0.1, ge=0, description="Weight away from the global worst.")
    patience: int = Field(6, ge=1, description="Stop once the global best has not improved for this many steps.")
    restart_after: int = Field(3, ge=1, description="Restart a particle whose best has not improved for this many "
                               "steps.")
    seed: int = Field(0, description="Seed of the swarm's random draws.")


@dataclass(frozen=True)
class Step:
    """Utilities of the particles after one step (iteration 0: where they start)."""

    iteration: int
    best: float
    mean: float
    worst: float
    global_best: float
    restarts: int = 0


@dataclass
class SwarmResult:
    best: Tensor
    best_utility: float
    start_utilities: list[float]  # of the experts, in order
    history: list[Step] = field(default_factory=list)
    evaluations: int = 0


@dataclass
class _Particle:
    x: Tensor
    v: Tensor
    utility: float
    best_x: Tensor
    best_utility: float
    stale: int = 0


def search(
    experts: Sequence[Tensor],
    utility: Callable[[Tensor], float],
    cfg: SwarmConfig | None = None,
    progress: bool = True,
) -> SwarmResult:
    """The best weight vector found from `experts` (1-D tensors of one length) for `utility` (higher is better)."""
    cfg = cfg or SwarmConfig()
    if len(experts) < 2:
        raise ValueError(f"Model Swarms needs at least two experts, got {len(experts)}")
    if len({e.shape for e in experts}) != 1 or experts[0].dim() != 1:
        raise ValueError("experts must be 1-D weight vectors of one length")
    gen = torch.Generator().manual_seed(cfg.seed)

    def pick(n: int) -> int:
        return int(torch.randint(n, (1,), generator=gen))

    starts: list[Tensor] = [e.clone() for e in experts[: cfg.particles]]
    while len(starts) < cfg.particles:  # crossovers: a random point between two distinct experts
        i = pick(len(experts))
        j = (i + 1 + pick(len(experts) - 1)) % len(experts)
        t = float(torch.rand((), generator=gen))
        starts.append(experts[i] + t * (experts[j] - experts[i]))
    particles: list[_Particle] = []
    evaluations = 0
    for k, x in enumerate(starts):
        other = experts[(k % len(experts) + 1 + pick(len(experts) - 1)) % len(experts)]
        u = utility(x)
        evaluations += 1
        particles.append(_Particle(x, other - x, u, x.clone(), u))
    start_utilities = [p.utility for p in particles[: len(experts)]]
    best = max(particles, key=lambda p: p.utility)
    g_x, g_u = best.x.clone(), best.utility
    worst = min(particles, key=lambda p: p.utility)
    w_x, w_u = worst.x.clone(), worst.utility
    history = [_step(0, particles, g_u)]
    step, since_best = cfg.step, 0
    bar = tqdm(range(1, cfg.iterations + 1), desc="model swarms", unit="step", disable=not progress, leave=False)
    for iteration in bar:
        restarts = 0
        for p in particles:
            r = torch.rand(4, generator=gen) * torch.tensor([cfg.inertia, cfg.cognitive, cfg.social, cfg.repel])
            total = float(r.sum()) or 1.0
            p.v = (r[0] * p.v + r[1] * (p.best_x - p.x) + r[2] * (g_x - p.x) - r[3] * (w_x - p.x)) / total
            p.x = p.x + step * p.v
            p.utility = utility(p.x)
            evaluations += 1
            if p.utility > p.best_utility:
                p.best_x, p.best_utility, p.stale = p.x.clone(), p.utility, 0
            else:
                p.stale += 1
                if p.stale >= cfg.restart_after:
                    p.x, p.v, p.utility, p.stale = p.best_x.clone(), torch.zeros_like(p.v), p.best_utility, 0
                    restarts += 1
            if p.utility < w_u:
                w_x, w_u = p.x.clone(), p.utility
        leader = max(particles, key=lambda p: p.best_utility)
        if leader.best_utility > g_u:
            g_x, g_u, since_best = leader.best_x.clone(), leader.best_utility, 0
        else:
            since_best += 1
        history.append(_step(iteration, particles, g_u, restarts))
        bar.set_postfix(best=f"{g_u:.3f}")
        step *= cfg.step_decay
        if since_best >= cfg.patience:
            break
    return SwarmResult(g_x, g_u, start_utilities, history, evaluations)


def _step(iteration: int, particles: Sequence[_Particle], global_best: float, restarts: int = 0) -> Step:
    values = [p.utility for p in particles]
    return Step(iteration, max(values), sum(values) / len(values), min(values), global_best, restarts)
