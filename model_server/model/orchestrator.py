"""The orchestrator: per table, how many specialists to spawn (complexity head, within the spawn budget), which
columns each one reads (wide search), and which ambiguous columns get further specialists one after another (deep
search, with a learnt stop).

It is a small stochastic policy over what the primary computes before asking anyone: its first layer's pooled output
per column (`Backbone.first_layer`), and, for deep steps, the primary's posterior after the stage before. Each
decision is a distribution, so the same code samples plans with their log-probabilities for PARL training
(trainer/orchestration/parl.py), scores given plans (the clipped objective re-evaluates old actions), and plays greedily
at serving. Everything is vectorised over the columns of many tables at once: `table` maps each column to its table.

How a later deep step uses the earlier ones: the primary fuses the states of every specialist a column has been
through so far (the union), and the policy chooses the next specialist from the primary's beliefs after the last
step (its probability mass per specialist domain, its confidence and entropy). Starting the later specialist from
the earlier one's final states instead was measured (trainer/experiments/deep_transfer.py) and is no more accurate.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from swarm.model_server.model.segments import segment_max, segment_mean

if TYPE_CHECKING:
    from swarm.model_server.model.primary import PrimaryModel

POLICY_FILE = "orchestrator.safetensors"
POLICY_META = "orchestrator.json"


def critical_steps(stages: Sequence[Mapping[str, int]]) -> int:
    """Latency of a plan in critical steps: Σ over stages of (one primary step + the slowest specialist's steps).
    A stage with no specialist costs the primary's step alone; a plan always has at least one stage."""
    return sum(1 + max(stage.values(), default=0) for stage in stages) if stages else 1


def primary_fingerprint(model: PrimaryModel) -> str:
    """What a policy was trained against: the primary's labels, specialists and the weights its features come from
    (embedding projections and first layer). A policy is refused by any other primary."""
    digest = hashlib.sha256()
    digest.update(json.dumps([model.labels, model.specialists, model.cfg.name]).encode())
    backbone = model.backbone
    for module in (backbone.embed_proj, backbone.feature_proj, backbone.markers, backbone.layers[0], backbone.norm):
        for tensor in module.state_dict().values():
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class WidePlan:
    """Stage one for a batch of tables: k (T,), spawned (T, N) and routed (C, N) masks; log-probs and entropies of
    the table's decisions (spawn count and which: (T,)) and of each column's routing ((C,))."""

    k: Tensor
    order: Tensor  # (T, N) the ranking the first k of which were spawned
    spawned: Tensor
    routed: Tensor
    table_log_prob: Tensor
    table_entropy: Tensor
    column_log_prob: Tensor
    column_entropy: Tensor
    route_log_prob: Tensor  # (C, N) of each routing bit (0 where the specialist was not spawned)
    complexity: Tensor  # (T,) expected share of the specialists the complexity head asks for, in [0, 1]


@dataclass
class DeepStep:
    """One deep stage: the action per column (STOP, a specialist index, or `n` = every allowed specialist not yet
    used), log-prob per column (0 where nothing could be chosen)."""

    next: Tensor
    log_prob: Tensor
    entropy: Tensor


STOP = -1


def realise_deep(action: Tensor, used: Tensor, allowed: Tensor, spawned: Tensor, table: Tensor, budget: int
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """What a deep stage's actions call, within the spawn budget: (chosen (C, N), actions with refused single
    picks turned into STOP, specialists refused per table (T,)). Specialists new to a table are admitted in index
    order while it has room; an "all" action keeps whatever of its specialists fit."""
    n = used.shape[1]
    want = torch.zeros_like(used)
    single = (action >= 0) & (action < n)
    want[single.nonzero().squeeze(-1), action[single]] = True
    everyone = action == n
    want[everyone] = (allowed & ~used)[everyone]
    new = torch.zeros_like(spawned).index_put_((table,), want, accumulate=True) & ~spawned
    room = (budget - spawned.sum(-1)).clamp_min(0)
    refused = new & (new.long().cumsum(-1) > room[:, None])
    chosen = want & ~refused[table]
    action = torch.where(single & ~chosen.any(-1), torch.full_like(action, STOP), action)
    return chosen, action, refused.sum(-1)


class OrchestratorPolicy(nn.Module):
    """Heads: complexity (T → k in 0..N), routing (C → N Bernoullis), deep (C → next specialist or stop)."""

    domain_masks: Tensor  # (N, labels) float: a buffer

    def __init__(self, specialists: Sequence[str], domain_masks: Tensor, d_model: int, hidden: int = 64,
                 max_deep: int = 2) -> None:
        super().__init__()
        self.specialists = list(specialists)
        n = len(self.specialists)
        if n == 0:
            raise ValueError("an orchestrator needs at least one specialist to choose from")
        if tuple(domain_masks.shape[:1]) != (n,):
            raise ValueError(f"domain_masks must be (n_specialists={n}, labels), got {tuple(domain_masks.shape)}")
        self.max_deep = max_deep
        self.register_buffer("domain_masks", domain_masks.float())
        self.column = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, hidden), nn.GELU())
        self.complexity_head = nn.Linear(2 * hidden + 1, n + 1)
        self.route_head = nn.Linear(hidden, n)
        # Deep actions: one specialist (0..n-1), every allowed specialist not yet used (n), or stop (n + 1).
        # It reads the primary's beliefs only, not the column's features: rules over confidence and domain mass carry
        # to unseen columns, where column features let it memorise which training columns happened to gain.
        self.deep_head = nn.Sequential(nn.Linear(2 + 2 * n, hidden), nn.GELU(), nn.Linear(hidden, n + 2))

    @property
    def n(self) -> int:
        return len(self.specialists)

    def meta(self) -> dict:
        return {"kind": "orchestrator", "specialists": self.specialists, "d_model": self.column[1].in_features,
                "hidden": self.column[1].out_features, "max_deep": self.max_deep,
                "labels": int(self.domain_masks.shape[1])}

    # -- features -------------------------------------------------------------------------------------------------

    def encode_columns(self, first_layer: Tensor, keep: Tensor | None = None) -> Tensor:
        """(C, hidden) from the first layer's pooled output; `keep` (training): a dropout mask on the normalised
        input, drawn once per PARL iteration so that re-scoring a plan sees the same features as sampling it."""
        x = self.column[0](first_layer.float())
        if keep is not None:
            x = x * keep
        return self.column[2](self.column[1](x))

    def table_features(self, h: Tensor, table: Tensor, n_tables: int) -> Tensor:
        count = torch.bincount(table, minlength=n_tables).float()
        return torch.cat([segment_mean(h, table, n_tables), segment_max(h, table, n_tables),
                          torch.log1p(count)[:, None]], dim=-1)

    def belief_features(self, probs: Tensor, used: Tensor) -> Tensor:
        top = probs.max(-1).values[:, None]
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1, keepdim=True) / math.log(probs.shape[-1])
        return torch.cat([top, entropy, probs.float() @ self.domain_masks.T, used.float()], dim=-1)

    # -- stage one: complexity and wide routing -------------------------------------------------------------------

    def wide(self, h: Tensor, table: Tensor, n_tables: int, budget: int, sample: bool = False,
             actions: tuple[Tensor, Tensor, Tensor] | None = None, generator: torch.Generator | None = None
             ) -> WidePlan:
        """Spawn count k ≤ budget per table, which k specialists (Plackett-Luce on table scores), and per column
        which of them read it. Greedy unless `sample`; `actions` = (k, order (T, N), routed (C, N)) re-scores a plan.
        """
        budget = max(0, min(budget, self.n))
        logits_k = self.complexity_head(self.table_features(h, table, n_tables))
        allowed = torch.arange(self.n + 1, device=h.device) <= budget
        logits_k = logits_k.masked_fill(~allowed, -torch.inf)
        dist_k = torch.distributions.Categorical(logits=logits_k)
        route_logits = self.route_head(h)  # (C, N)
        scores = segment_mean(route_logits, table, n_tables)  # (T, N)

        if actions is not None:
            k, order, routed = actions
        elif sample:
            k = dist_k.sample()
            gumbel = -torch.log(-torch.log(torch.rand(scores.shape, generator=generator, device=h.device)
                                           .clamp(1e-9, 1 - 1e-9)))
            order = (scores.detach() + gumbel).argsort(-1, descending=True)
        else:
            k = logits_k.argmax(-1)
            order = scores.argsort(-1, descending=True)
        position = torch.arange(self.n, device=h.device)
        taken = position[None, :] < k[:, None]  # (T, N) over ranks
        spawned = torch.zeros_like(taken).scatter(1, order, taken)

        # Plackett-Luce log-prob of the first k ranks of `order`.
        ranked = scores.gather(1, order)
        tail_lse = torch.logcumsumexp(ranked.flip(-1), -1).flip(-1)
        log_pl = ((ranked - tail_lse) * taken).sum(-1)

        column_spawned = spawned[table]
        if actions is None:
            if sample:
                routed = (torch.rand(route_logits.shape, generator=generator, device=h.device)
                          < torch.sigmoid(route_logits.detach())) & column_spawned
            else:
                routed = (route_logits > 0) & column_spawned
        bern = -F.binary_cross_entropy_with_logits(route_logits, routed.float(), reduction="none") * column_spawned
        bern_entropy = F.binary_cross_entropy_with_logits(route_logits, torch.sigmoid(route_logits),
                                                          reduction="none")
        expected = (dist_k.probs * torch.arange(self.n + 1, device=h.device)).sum(-1) / self.n
        return WidePlan(k=k, order=order, spawned=spawned, routed=routed,
                        table_log_prob=dist_k.log_prob(k) + log_pl, table_entropy=dist_k.entropy(),
                        column_log_prob=bern.sum(-1), route_log_prob=bern,
                        column_entropy=(bern_entropy * column_spawned).sum(-1), complexity=expected)

    # -- deep steps -----------------------------------------------------------------------------------------------

    def deep(self, h: Tensor, probs: Tensor, used: Tensor, allowed: Tensor, active: Tensor, sample: bool = False,
             action: Tensor | None = None, generator: torch.Generator | None = None) -> DeepStep:
        """For each active column: stop, one more specialist among `allowed & ~used` (C, N masks), or all of them
        at once (action `n`: one stage, in parallel)."""
        logits = self.deep_head(self.belief_features(probs, used))
        open_ = allowed & ~used
        choice = torch.cat([open_, open_.any(-1, keepdim=True), torch.ones_like(used[:, :1])], dim=-1)
        logits = logits.masked_fill(~choice, -torch.inf)
        dist = torch.distributions.Categorical(logits=logits)
        can_go = active & open_.any(-1)
        stop = self.n + 1
        if action is None:
            if sample:
                gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=generator, device=h.device)
                                               .clamp(1e-9, 1 - 1e-9)))
                pick = (logits.detach() + gumbel).argmax(-1)
            else:
                pick = logits.argmax(-1)
            action = torch.where(can_go & (pick < stop), pick, torch.full_like(pick, STOP))
        index = torch.where(action >= 0, action, torch.full_like(action, stop))
        log_prob = torch.where(can_go, dist.log_prob(index), torch.zeros_like(index, dtype=logits.dtype))
        entropy = torch.where(can_go, dist.entropy(), torch.zeros_like(log_prob))
        return DeepStep(next=action, log_prob=log_prob, entropy=entropy)

    # -- files ----------------------------------------------------------------------------------------------------

    def save(self, directory: Path, fingerprint: str, extra: Mapping | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, directory / POLICY_FILE)
        meta = self.meta() | {"primary": fingerprint} | dict(extra or {})
        (directory / POLICY_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, primary: PrimaryModel) -> OrchestratorPolicy:
        """The policy in `directory`, refused (ValueError) unless it was trained for exactly this primary."""
        directory = Path(directory)
        meta_path = directory / POLICY_META
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory}: no orchestrator policy ({POLICY_META} missing)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("kind") != "orchestrator":
            raise ValueError(f"{directory}: not an orchestrator policy (kind={meta.get('kind')!r})")
        if list(meta["specialists"]) != list(primary.specialists):
            raise ValueError(f"{directory}: the policy routes to {meta['specialists']}, but the primary fuses "
                             f"{primary.specialists}; train a policy for this primary (swarm train --mode parl)")
        found = primary_fingerprint(primary)
        if meta.get("primary") != found:
            raise ValueError(f"{directory}: the policy was trained against primary {meta.get('primary')}, not "
                             f"this one ({found}); retrain it (swarm train --mode parl)")
        policy = cls(meta["specialists"], domain_masks_for(primary), meta["d_model"], meta["hidden"],
                     meta["max_deep"])
        policy.load_state_dict(load_file(directory / POLICY_FILE))
        return policy.eval()


def domain_masks_for(primary: PrimaryModel) -> Tensor:
    """(N, labels) bool: which of the primary's labels each of its specialists' domains covers."""
    from swarm.model_server.model.specialist import domain_of

    index = {label: i for i, label in enumerate(primary.labels)}
    masks = torch.zeros(len(primary.specialists), len(primary.labels), dtype=torch.bool)
    for row, name in enumerate(primary.specialists):
        masks[row, [index[label] for label in domain_of(name).labels if label in index]] = True
    return masks
