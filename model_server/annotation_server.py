"""The annotation gRPC server (`swarm.v1.AnnotationService`): validates tables and drives an `TableAnnotator`.

Per table: proto Table → validated `sotab.Table` → `annotator.route` → states fetched from the specialist
servers through `SpecialistClient` (concurrently; lost specialists are reported, not fatal) →
`annotator.annotate`.

Input policy (every violation is a status code, never a crash):
- no rows, or no cells at all: INVALID_ARGUMENT;
- ragged rows (rows with different cell counts): INVALID_ARGUMENT naming the first offending row, unless the
  table sets `pad_ragged_rows`, which pads short rows with "" like SOTAB records with missing keys;
- more than `max_cells` cells or `max_columns` columns: RESOURCE_EXHAUSTED naming the limit;
- a message over `max_message_bytes`: RESOURCE_EXHAUSTED (enforced by gRPC itself);
- strings that are not valid UTF-8: INVALID_ARGUMENT (see grpc_runtime).

"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from swarm.model_server.annotator import AnnotationResult, TableAnnotator
from swarm.model_server.grpc_runtime import ManagedServer, MiB, service_handler
from swarm.model_server.specialist_client import SpecialistClient
from swarm.model_server.tables import Table
from swarm.v1 import annotation_pb2 as apb

log = logging.getLogger(__name__)

SERVICE = apb.DESCRIPTOR.services_by_name["AnnotationService"]


@dataclass(frozen=True)
class AnnotationLimits:
    max_cells: int = 200_000
    max_columns: int = 1024
    max_message_bytes: int = 16 * MiB
    max_concurrent: int = 8
    specialist_timeout_s: float = 30.0


class TableRejected(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def table_from_proto(msg: apb.Table, limits: AnnotationLimits) -> Table:
    """The column-major table of a proto Table, or TableRejected with the status code and what was wrong."""
    name = msg.name or "table"
    if not msg.rows:
        raise TableRejected(grpc.StatusCode.INVALID_ARGUMENT, f"table {name!r} has no rows")
    lengths = [len(row.cells) for row in msg.rows]
    cells = sum(lengths)
    if cells > limits.max_cells:
        raise TableRejected(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"table {name!r} has {cells} cells; the limit is {limits.max_cells} cells per table",
        )
    width = max(lengths)
    if width == 0:
        raise TableRejected(grpc.StatusCode.INVALID_ARGUMENT, f"table {name!r} has no cells")
    if width > limits.max_columns:
        raise TableRejected(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"table {name!r} has {width} columns; the limit is {limits.max_columns} columns per table",
        )
    if not msg.pad_ragged_rows:
        for i, n in enumerate(lengths):
            if n != lengths[0]:
                raise TableRejected(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"table {name!r} has ragged rows: row {i} has {n} cells, row 0 has {lengths[0]} "
                    "(set pad_ragged_rows to pad short rows with empty cells)",
                )
    columns = tuple(
        zip(
            *(
                itertools.chain(row.cells, itertools.repeat("", width - n))
                for row, n in zip(msg.rows, lengths, strict=True)
            ),
            strict=True,
        )
    )
    return Table(name=name, columns=columns)


class AnnotationServicer:
    def __init__(self, annotator: TableAnnotator, client: SpecialistClient, limits: AnnotationLimits) -> None:
        self.annotator = annotator
        self.client = client
        self.limits = limits

    def annotate_table(self, table: Table, request_id: str, timeout_s: float | None = None) -> apb.Annotation:
        """Route, fetch states over gRPC, fuse and label; specialists lost on the way are reported missing."""
        start = time.perf_counter()
        texts = self.annotator.serialize(table)
        routing = {name: cols for name, cols in self.annotator.route(table).items() if cols}
        fetched = self.client.fetch(
            {name: [texts[i] for i in cols] for name, cols in routing.items()},
            request_id=request_id,
            timeout_s=timeout_s,
        )
        result = self.annotator.annotate(table, fetched.states, routing, fetched.steps)
        _check_result(result, table)
        reasons = dict(fetched.missing)
        for name in result.specialists_missing:
            reasons.setdefault(name, "not delivered")
        return apb.Annotation(
            request_id=request_id,
            table_name=table.name,
            columns=[
                apb.ColumnAnnotation(column=i, label=label, confidence=conf)
                for i, (label, conf) in enumerate(zip(result.labels, result.confidences, strict=True))
            ],
            specialists_used=result.specialists_used,
            specialists_missing=[apb.MissingSpecialist(name=n, reason=r) for n, r in sorted(reasons.items())],
            critical_steps=result.critical_steps,
            latency_ms=(time.perf_counter() - start) * 1e3,
        )

    def _annotate_message(
        self, msg: apb.Table, context: grpc.ServicerContext, position: str = ""
    ) -> apb.Annotation:
        try:
            table = table_from_proto(msg, self.limits)
        except TableRejected as exc:
            context.abort(exc.code, f"{exc}{position}")
        request_id = msg.request_id or uuid.uuid4().hex[:12]
        remaining = context.time_remaining()
        timeout = (
            self.limits.specialist_timeout_s
            if remaining is None
            else min(remaining, self.limits.specialist_timeout_s)
        )
        try:
            return self.annotate_table(table, request_id, timeout)
        except Exception as exc:
            log.exception("request %s: annotating table %r failed", request_id, table.name)
            context.abort(
                grpc.StatusCode.INTERNAL,
                f"annotating table {table.name!r} failed: {type(exc).__name__}: {exc}",
            )

    def Annotate(self, request: apb.Table, context: grpc.ServicerContext) -> apb.Annotation:
        return self._annotate_message(request, context)

    def AnnotateStream(
        self, requests: Iterator[apb.Table], context: grpc.ServicerContext
    ) -> Iterator[apb.Annotation]:
        for i, msg in enumerate(requests):
            if not context.is_active():
                return
            yield self._annotate_message(msg, context, f" (table {i} of the stream)")


def _check_result(result: AnnotationResult, table: Table) -> None:
    n = len(table.columns)
    if len(result.labels) != n or len(result.confidences) != n:
        raise RuntimeError(
            f"annotator returned {len(result.labels)} labels and {len(result.confidences)} "
            f"confidences for {n} columns"
        )


def build_annotation_server(
    annotator: TableAnnotator,
    client: SpecialistClient,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: AnnotationLimits | None = None,
) -> ManagedServer:
    limits = limits or AnnotationLimits()
    handler = service_handler(SERVICE, AnnotationServicer(annotator, client, limits))
    return ManagedServer(
        [(SERVICE, handler)],
        host,
        port,
        max_workers=limits.max_concurrent,
        max_message_bytes=limits.max_message_bytes,
    )
