"""Shared gRPC test fixtures: a real local swarm (specialist processes on 127.0.0.1) and an annotator.

`annotator_factory` is the project's PrimaryAnnotator (untrained, tiny) when
`swarm.model_server.serving.primary_annotator` exists, else `MeanStateAnnotator`: a small real model (untrained tiny
backbone + head) that starts every layer from the mean of the specialist states delivered for that column. Neither
hard-codes outputs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence

import pytest
import torch
from torch import Tensor, nn

from swarm.model_server.model.backbone import Backbone, get_config
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.tables import Table, load_labels, serialize_table
from swarm.model_server.serving.annotator import AnnotationResult, SpecialistStates, Stage, TableAnnotator
from swarm.model_server.serving.launcher import LocalSwarm, start_local_swarm

SPECIALISTS = ["temporal", "geographic", "numeric"]


class MeanStateAnnotator:
    """Test annotator: every specialist reads every column; the primary starts from their mean state."""

    def __init__(self, specialist_names: Sequence[str], config: str = "tiny") -> None:
        torch.manual_seed(0)
        self.specialist_names = list(specialist_names)
        self.labels = load_labels()
        self.backbone = Backbone(get_config(config)).eval()
        self.head = nn.Linear(self.backbone.cfg.d_model, len(self.labels)).eval()
        self.tokenizer = ColumnEncoder(self.backbone.cfg.max_len)

    def serialize(self, table: Table) -> list[str]:
        return serialize_table(table)

    def route(self, table: Table) -> dict[str, list[int]]:
        return {name: list(range(len(table.columns))) for name in self.specialist_names}

    def next_stage(self, table: Table, states: SpecialistStates, routing: dict[str, list[int]],
                   stages: Sequence[Stage]) -> dict[str, list[int]]:
        return {}  # wide search only

    @torch.inference_mode()
    def annotate(
        self,
        table: Table,
        states: SpecialistStates,
        routing: dict[str, list[int]],
        stages: Sequence[Stage] | None = None,
    ) -> AnnotationResult:
        ids, mask = self.tokenizer(self.serialize(table))
        initial: list[Tensor | None] | None = None
        if states:
            initial = []
            cfg = self.backbone.cfg
            for layer in range(len(self.backbone.layers)):
                per_column = torch.zeros(len(table.columns), cfg.n_heads, cfg.head_k, cfg.head_v)
                counts = torch.zeros(len(table.columns))
                for name, layers in states.items():
                    rows = torch.tensor(routing[name])
                    per_column.index_add_(0, rows, layers[layer].float())
                    counts.index_add_(0, rows, torch.ones(len(rows)))
                initial.append(per_column / counts.clamp_min(1)[:, None, None, None])
        probs = self.head(self.backbone(ids, mask, initial).pooled).softmax(-1)
        conf, idx = probs.max(-1)
        steps = stages[0].steps if stages else {}
        return AnnotationResult(
            labels=[self.labels[i] for i in idx.tolist()],
            confidences=conf.tolist(),
            specialists_used=sorted(states),
            specialists_missing=sorted(set(routing) - set(states)),
            critical_steps=1 + max((steps.get(n, 1) for n in states), default=0),
        )


def _annotator_factory() -> Callable[[list[str]], TableAnnotator]:
    if importlib.util.find_spec("swarm.model_server.serving.primary_annotator") is not None:
        from swarm.model_server.serving.primary_annotator import PrimaryAnnotator

        return lambda names: PrimaryAnnotator.untrained(names, config="tiny")
    return MeanStateAnnotator


@pytest.fixture(scope="session")
def annotator_factory() -> Callable[[list[str]], TableAnnotator]:
    """Specialist names -> annotator (PrimaryAnnotator once it exists, else MeanStateAnnotator)."""
    return _annotator_factory()


@pytest.fixture(scope="session")
def swarm(annotator_factory: Callable[[list[str]], TableAnnotator]) -> Iterator[LocalSwarm]:
    """Three real specialist processes plus the annotation server, shared by every gRPC test module."""
    with start_local_swarm(SPECIALISTS, annotator=annotator_factory, torch_threads=1) as local:
        yield local
