"""What annotates a table: the contract between the primary model and whoever delivers specialist states.

The annotation server (gRPC) and the embedded swarm both drive an `TableAnnotator` in two steps: `route` says which
columns each specialist should read (wide search), the caller fetches those states however it can (in process or
over gRPC, possibly losing a specialist on the way), then `annotate` fuses what arrived and decides.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor

from swarm.model_server.tables import Table

# specialist name -> per-layer states (B_routed, H, K, V), rows in the order of the routed column indices.
SpecialistStates = dict[str, list[Tensor]]


@dataclass
class AnnotationResult:
    labels: list[str]  # one per column of the table
    confidences: list[float]
    specialists_used: list[str]
    specialists_missing: list[str] = field(default_factory=list)
    critical_steps: int = 1


class TableAnnotator(Protocol):
    specialist_names: Sequence[str]

    def serialize(self, table: Table) -> list[str]:
        """The serialized text of every column of the table (what specialists and the primary read)."""
        ...

    def route(self, table: Table) -> dict[str, list[int]]:
        """Specialist name -> column indices it should read for this table."""
        ...

    def annotate(self, table: Table, states: SpecialistStates, routing: dict[str, list[int]],
                 specialist_steps: dict[str, int] | None = None) -> AnnotationResult:
        """Fuse the delivered states (missing specialists simply absent) and label every column."""
        ...
