"""`swarm train --mode parl`: train the orchestrator of a trained primary.

The primary and its specialists are frozen (local specialist directories named in the primary's model.json, or
specialist servers, e.g. a SpecialistPool's Services in a trainer pod). The labelled columns of one split are read
once by every specialist; the primary's answer for each column under every subset is cached
(trainer/orchestration/outcomes.py); the policy is trained by PARL on that cache (trainer/orchestration/parl.py) and
saved with the primary's fingerprint, so it can only be served with that primary. Use a split the primary did not
train on (validation, for a primary trained on the training splits): on its own training columns the primary is right
with or without help, and the policy would learn that specialists are never needed.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from swarm.model_server.choices import DEVICE_AUTO
from swarm.model_server.model.devices import resolve_device
from swarm.model_server.model.orchestrator import OrchestratorPolicy, domain_masks_for, primary_fingerprint
from swarm.model_server.model.primary import PrimaryModel
from swarm.trainer import reports
from swarm.trainer.data.columns import ColumnExample
from swarm.trainer.orchestration.env import Outcomes, plan_metrics, rollout
from swarm.trainer.orchestration.outcomes import outcomes_from_caches
from swarm.trainer.orchestration.parl import ParlConfig, cost_of, train_parl
from swarm.trainer.training.evaluate import labelled_columns, specialist_source
from swarm.trainer.training.state_sources import cache_states


class PolicyRunConfig(BaseModel):
    """`swarm train --mode parl`: which primary's policy is trained, on what, and where it goes."""

    checkpoint: Path = Field(description="The trained (fused) primary directory.")
    data: Path
    split: str | None = Field(None, description="The labelled split to learn from, one the primary did not train on "
                              "(default: validation).")
    out: Path = Path("runs/parl/orchestrator")
    reports_dir: Path = Path("reports")
    parl: ParlConfig = ParlConfig()
    endpoints: dict[str, str] = {}
    device: str = DEVICE_AUTO


def run_parl(cfg: PolicyRunConfig) -> dict:
    """Train and save the policy; returns its greedy plan's metrics on the split it trained on (in-sample: the
    unbiased estimate is the grouped cross-validation of `swarm orchestrator-report`)."""
    started = time.time()
    model, manifest = PrimaryModel.load(cfg.checkpoint)
    if model.fusion is None or not model.specialists:
        raise ValueError(f"{cfg.checkpoint}: this primary fuses no specialists; there is nothing to orchestrate")
    if not manifest.agent_dropout:
        print(f"warning: {cfg.checkpoint} was not trained with agent dropout (swarm train --agent-dropout); "
              "it may answer poorly with the subsets the policy picks")
    model.to(resolve_device(cfg.device))
    target, examples = labelled_columns(model, cfg.data, cfg.split)
    source = specialist_source(cfg.checkpoint, manifest, cfg.endpoints, cfg.device)
    assert source is not None
    with closing(source):
        caches = [cache_states(source, name, [e.text for e in examples]) for name in model.specialists]
    policy, out, parl_cfg, history = train_policy(model, examples, caches, cfg.parl, cfg.out,
                                                  f"{cfg.data} ({target.name})")
    with torch.no_grad():
        plan = rollout(policy, out, cost_of(parl_cfg, out.specialists))
    metrics = plan_metrics(out, plan.used, plan.spawned, plan.critical, plan.deep_steps, [])
    metrics.pop("per_class")
    result = metrics | {"policy": str(cfg.out), "primary": str(cfg.checkpoint), "columns": len(examples),
                        "tables": out.n_tables, "in_sample": True, "seconds": round(time.time() - started, 1),
                        "curves": [vars(step) for step in history]}
    reports.write_json(cfg.reports_dir / "parl_training.json", result)
    return result


def train_policy(model: PrimaryModel, examples: Sequence[ColumnExample], caches: Sequence[torch.Tensor],
                 parl: ParlConfig, out_dir: Path, trained_on: str
                 ) -> tuple[OrchestratorPolicy, Outcomes, ParlConfig, list]:
    """PARL on the frozen primary's answers for `examples` (columns it did not train on) under every subset of its
    specialists, whose states for them are `caches`; the policy is saved to `out_dir` bound to this primary."""
    out = outcomes_from_caches(model, examples, caches)
    parl_cfg = parl.model_copy(update={"budget": min(parl.budget, out.n)})
    torch.manual_seed(parl_cfg.seed)
    policy = OrchestratorPolicy(model.specialists, domain_masks_for(model), out.features.shape[1], parl_cfg.hidden,
                                parl_cfg.max_deep)
    history = train_parl(policy, out, parl_cfg)
    policy.save(out_dir, primary_fingerprint(model), {"trained_on": trained_on, "parl": parl_cfg.model_dump()})
    return policy, out, parl_cfg, history
