"""Annotating SOTAB tables through the real serving path: the annotation API over gRPC, with the primary's
specialists as processes (local loopback swarm) or remote endpoints (e.g. a SpecialistPool's Services).

Used by `swarm annotate` (and the operator's annotate jobs) and by `swarm demo`, which checks that the swarm
served over gRPC scores what the in-process evaluation scored.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from swarm.model_server.choices import DEVICE_AUTO
from swarm.model_server.model.tables import Table
from swarm.trainer.data.sotab import Split
from swarm.trainer.training.metrics import Scores, score

if TYPE_CHECKING:
    from swarm.client import TableAnnotation


def annotate_over_grpc(address: str, tables: Sequence[Table], timeout_s: float = 600.0) -> list[TableAnnotation]:
    """One TableAnnotation per table, in order, through the client's AnnotateStream batch."""
    from swarm.client import Annotator
    from swarm.client import Table as ClientTable

    with Annotator(address, timeout_s=timeout_s) as client:
        return client.annotate_many([ClientTable(table_rows(t), name=t.name) for t in tables])


def table_rows(table: Table) -> list[list[str]]:
    """A column-major table as the client's rows of cells."""
    return [[column[i] for column in table.columns] for i in range(table.n_rows)]


@dataclass
class SwarmAnnotation:
    annotations: list[TableAnnotation]
    seconds: float
    scores: Scores | None = None
    missing: dict[str, int] = field(default_factory=dict)  # specialist -> tables it was missing from

    def summary(self) -> dict:
        latencies = sorted(a.latency_ms for a in self.annotations)
        complexities = [a.complexity for a in self.annotations if a.complexity is not None]
        out = {
            "tables": len(self.annotations),
            "columns": sum(len(a.columns) for a in self.annotations),
            "seconds": round(self.seconds, 2),
            "tables_per_s": len(self.annotations) / self.seconds if self.seconds else None,
            "latency_p50_ms": statistics.median(latencies) if latencies else None,
            "latency_p99_ms": percentile(latencies, 0.99) if latencies else None,
            "critical_steps_max": max((a.critical_steps for a in self.annotations), default=0),
            "critical_steps_mean": statistics.fmean(a.critical_steps for a in self.annotations)
            if self.annotations else None,
            "specialist_calls_per_column": sum(len(c.specialists) for a in self.annotations for c in a.columns)
            / max(1, sum(len(a.columns) for a in self.annotations)),
            "deep_stages_max": max((a.deep_stages for a in self.annotations), default=0),
            "complexity_mean": statistics.fmean(complexities) if complexities else None,
            "specialists_used": sorted({s for a in self.annotations for s in a.specialists_used}),
            "specialists_missing": self.missing,
        }
        if self.scores is not None:
            out |= {"micro_f1": self.scores.micro_f1, "macro_f1": self.scores.macro_f1}
        return out


def score_annotations(split: Split, annotations: Sequence[TableAnnotation]) -> Scores:
    return score_predictions(split, {(a.table_name, c.column): c.label for a in annotations for c in a.columns})


def score_predictions(split: Split, predicted: Mapping[tuple[str, int], str]) -> Scores:
    """Scores of labels predicted per (table, column) on the split's labelled columns."""
    labelled = [(r, r.label) for r in split.columns if r.label is not None]
    return score([label for _, label in labelled], [predicted[(r.table, r.column)] for r, _ in labelled])


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile of `values` (nearest rank from below, as the latency reports give it)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def annotation_endpoint(model_dir: Path, endpoints: dict[str, str] | None = None, port: int = 0,
                        device: str = DEVICE_AUTO, host: str = "127.0.0.1", policy: Path | str | None = None,
                        spawn_budget: int | None = None) -> Iterator[str]:
    """The address of an annotation API for the primary in `model_dir` (see launcher.served_swarm)."""
    from swarm.model_server.model.devices import resolve_device
    from swarm.model_server.serving.launcher import served_swarm
    from swarm.model_server.serving.primary_annotator import PrimaryAnnotator

    annotator = PrimaryAnnotator.load(model_dir, resolve_device(device), policy, spawn_budget)
    with served_swarm(annotator, endpoints, device=device, host=host, port=port) as server:
        yield server.address


def annotate_split(split: Split, model_dir: Path, endpoints: dict[str, str] | None = None,
                   device: str = DEVICE_AUTO, policy: Path | str | None = None, spawn_budget: int | None = None
                   ) -> SwarmAnnotation:
    tables = list(split.tables.values())
    with annotation_endpoint(model_dir, endpoints, device=device, policy=policy,
                             spawn_budget=spawn_budget) as address:
        start = time.perf_counter()
        annotations = annotate_over_grpc(address, tables)
        seconds = time.perf_counter() - start
    missing: dict[str, int] = {}
    for a in annotations:
        for m in a.specialists_missing:
            missing[m.name] = missing.get(m.name, 0) + 1
    scores = score_annotations(split, annotations) if split.columns else None
    return SwarmAnnotation(annotations, seconds, scores, missing)
