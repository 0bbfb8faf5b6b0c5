"""What the orchestrator learns from: a frozen primary's answers for labelled columns under every subset of its
specialists (trainer/orchestration/env.Outcomes), computed from the specialists' cached states, plus the primary's
first-layer features that the policy reads."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.primary import PrimaryModel
from swarm.trainer.data.columns import ColumnExample
from swarm.trainer.orchestration.env import Outcomes
from swarm.trainer.training.state_sources import cached_inputs
from swarm.trainer.training.train import Encoded, collate, encode, model_device, predict, to_device


@torch.inference_mode()
def first_layer_features(model: PrimaryModel, data: Encoded, batch_size: int = 256) -> torch.Tensor:
    """(n, d): `Backbone.first_layer` of every encoded column, on the host."""
    rows = []
    for start in range(0, len(data), batch_size):
        ids, mask, _ = to_device(collate(data, range(start, min(start + batch_size, len(data)))),
                                 model_device(model))
        rows.append(model.backbone.first_layer(ids, mask).float().cpu())
    return torch.cat(rows)


def outcomes_from_caches(model: PrimaryModel, examples: Sequence[ColumnExample], caches: Sequence[torch.Tensor]
                         ) -> Outcomes:
    """The primary's log-probabilities for every example under all 2^N subsets of its N specialists, whose states
    for the examples are `caches[j]` (n, L, H, K, V), in the primary's specialist order."""
    if len(caches) != len(model.specialists):
        raise ValueError(f"{len(caches)} state caches for a primary that fuses {len(model.specialists)} specialists")
    data = encode([e.text for e in examples], [e.label for e in examples], ColumnEncoder(model.cfg.max_len))
    n = len(caches)
    log_probs = torch.stack([
        predict(model, data, cached_inputs(caches, agents=[j for j in range(n) if mask >> j & 1]))
        .clamp_min(1e-12).log()
        for mask in tqdm(range(2 ** n), desc="outcomes per specialist subset", leave=False)], dim=1)
    tables = {name: i for i, name in enumerate(dict.fromkeys(e.table for e in examples))}
    return Outcomes(list(model.specialists), list(model.labels), first_layer_features(model, data), log_probs,
                    data.labels, torch.tensor([tables[e.table] for e in examples]), len(tables))


def first_layer_features_of(model: PrimaryModel, examples: Sequence[ColumnExample]) -> torch.Tensor:
    """(n, d) the primary's first-layer features of these columns: what a policy playing with it reads."""
    data = encode([e.text for e in examples], [e.label for e in examples], ColumnEncoder(model.cfg.max_len))
    return first_layer_features(model, data)
