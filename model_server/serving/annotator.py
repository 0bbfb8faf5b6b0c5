"""What annotates a table: the contract between the primary model and whoever delivers specialist states.

The annotation server (gRPC) and the embedded swarm drive a `TableAnnotator` in stages: `route` says which columns
each specialist should read (wide search); the caller fetches those states however it can (in process or over gRPC,
possibly losing a specialist on the way); `next_stage` then names further specialists for the columns still
ambiguous (deep search: one more stage per call, empty when done), whose states are fetched and added the same way;
finally `annotate` fuses everything that arrived and decides. Each stage costs one critical step: a primary step
plus its slowest specialist.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor

from swarm.model_server.model.tables import Table

# specialist name -> per-layer states (B_routed, H, K, V), rows in the order of the routed column indices.
SpecialistStates = dict[str, list[Tensor]]
# specialist name -> column indices
Routing = dict[str, list[int]]


@dataclass
class Stage:
    """One stage of a table's plan: what was routed and each delivering specialist's steps."""

    routing: Routing
    steps: dict[str, int] = field(default_factory=dict)


@dataclass
class AnnotationResult:
    labels: list[str]  # one per column of the table
    confidences: list[float]
    specialists_used: list[str]
    specialists_missing: list[str] = field(default_factory=list)
    critical_steps: int = 1
    column_specialists: list[list[str]] = field(default_factory=list)  # per column, fused specialists
    deep_steps: list[int] = field(default_factory=list)  # per column, stages after the wide one
    complexity: float | None = None  # the orchestrator's estimate; None without a policy


class TableAnnotator(Protocol):
    @property
    def specialist_names(self) -> Sequence[str]:  # read-only here: an implementation may keep a list
        ...

    def serialize(self, table: Table) -> list[str]:
        """The serialized text of every column of the table (what specialists and the primary read)."""
        ...

    def route(self, table: Table) -> dict[str, list[int]]:
        """Specialist name -> column indices it should read for this table."""
        ...

    def next_stage(self, table: Table, states: SpecialistStates, routing: Routing, stages: Sequence[Stage]
                   ) -> Routing:
        """Deep search: further specialists for the columns still ambiguous, given everything delivered so far
        (`routing`: all columns routed per specialist; `stages`: the stages run so far, the wide one first);
        empty when the plan is done."""
        ...

    def annotate(self, table: Table, states: SpecialistStates, routing: Routing,
                 stages: Sequence[Stage] | None = None) -> AnnotationResult:
        """Fuse the delivered states (missing specialists simply absent) and label every column."""
        ...
