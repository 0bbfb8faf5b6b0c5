"""Specialists on the training side: fine-tune the shared backbone per label domain, freeze, cache their states.

A specialist is trained as a classifier over its domain's labels plus `[other]` (columns of other domains,
down-sampled so they do not swamp the domain), starting from the shared pre-trained backbone, then frozen.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from swarm.model_server.model.backbone import BackboneConfig
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.devices import resolve_device
from swarm.model_server.model.specialist import Domain, DomainModel, Specialist, save_dir
from swarm.trainer.data.columns import ColumnExample
from swarm.trainer.training.train import TrainConfig, encode, train


def domain_examples(examples: Sequence[ColumnExample], labels: Sequence[str], domain: Domain,
                    other_ratio: float = 1.0, seed: int = 0) -> tuple[list[str], list[int]]:
    """Texts and domain-label indices: in-domain columns, plus `other_ratio` times as many others as `[other]`."""
    index = {label: i for i, label in enumerate(domain.labels)}
    inside = [(e.text, index[labels[e.label]]) for e in examples if labels[e.label] in index]
    outside = [(e.text, len(domain.labels)) for e in examples if labels[e.label] not in index]
    if not inside:
        raise ValueError(f"no training column carries a label of domain {domain.name!r}")
    random.Random(seed).shuffle(outside)
    chosen = inside + outside[: int(other_ratio * len(inside))]
    return [t for t, _ in chosen], [y for _, y in chosen]


def train_specialist(domain: Domain, cfg: BackboneConfig, examples: Sequence[ColumnExample], labels: Sequence[str],
                     train_cfg: TrainConfig, run_dir: Path, backbone_init: dict[str, Tensor] | None = None,
                     knowledge: bool = False) -> Specialist:
    """Fine-tune a domain model (from `backbone_init` when given; reading the domain's knowledge sources when
    `knowledge`), save it to run_dir/<name>, return it frozen."""
    torch.manual_seed(train_cfg.seed)
    model = DomainModel(cfg, domain.labels, domain.knowledge if knowledge else ())
    if backbone_init is not None:
        # A generic pre-trained backbone has no knowledge projection: that starts from its own initialisation.
        model.backbone.load_state_dict(backbone_init, strict=not knowledge)
    texts, targets = domain_examples(examples, labels, domain, seed=train_cfg.seed)
    data = encode(texts, targets, ColumnEncoder(cfg.max_len))
    out = run_dir / domain.name
    train(model, data, train_cfg, out / "training", {"kind": "specialist", "domain": domain.name},
          desc=f"specialist {domain.name}")
    # Recorded conservatively: every table of `examples`, though only a sample of other domains' columns was read.
    seen = frozenset(e.table for e in examples)
    save_dir(out, domain.name, model, seen)
    return Specialist(domain.name, model, device=resolve_device(train_cfg.device), trained_tables=seen)
