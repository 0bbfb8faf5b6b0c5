"""The typed client of the annotation API (`swarm.v1.AnnotationService`).

It speaks gRPC through the generated stubs but never hands them out: tables go in as lists of rows of cell
strings (or `Table`), results come back as frozen dataclasses, and every failed call is an `AnnotationError`
carrying the gRPC status code's name and the server's message. It imports grpc and the generated messages
only (no torch), so a caller needs nothing of the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

import grpc

from swarm.v1 import annotation_pb2 as _apb
from swarm.v1 import annotation_pb2_grpc as _apb_grpc

Rows = Sequence[Sequence[str]]

# The annotation server accepts messages up to 16 MiB (AnnotationLimits.max_message_bytes); gRPC's client
# default would refuse replies over 4 MiB.
DEFAULT_MAX_MESSAGE_BYTES = 16 << 20


@dataclass(frozen=True)
class Table:
    """One table to annotate: row-major cells, "" for an empty cell.

    Rows must all have the same number of cells unless `pad_ragged_rows` is set, in which case the server
    pads short rows with empty cells.
    """

    rows: Rows
    name: str = ""
    pad_ragged_rows: bool = False
    request_id: str = ""


@dataclass(frozen=True)
class ColumnAnnotation:
    """The label the swarm gives one column, and its confidence (the primary's probability of that label)."""

    column: int
    label: str
    confidence: float
    specialists: tuple[str, ...] = ()  # specialists fused into this column's answer
    deep_steps: int = 0  # chained passes after the wide stage


@dataclass(frozen=True)
class MissingSpecialist:
    """A specialist that was routed columns of the table but delivered no states, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class TableAnnotation:
    """The reply for one table: one `ColumnAnnotation` per column, in column order, and the table-level fields."""

    table_name: str
    request_id: str
    columns: tuple[ColumnAnnotation, ...]
    specialists_used: tuple[str, ...]
    specialists_missing: tuple[MissingSpecialist, ...]
    critical_steps: int
    latency_ms: float
    complexity: float | None = None  # the orchestrator's estimate in [0, 1]; None without a learnt policy
    deep_stages: int = 0

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(c.label for c in self.columns)

    @property
    def confidences(self) -> tuple[float, ...]:
        return tuple(c.confidence for c in self.columns)


class AnnotationError(Exception):
    """A failed call: `code` is the gRPC status code's name (e.g. "INVALID_ARGUMENT"), `message` the server's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def _from_rpc(cls, error: grpc.RpcError) -> AnnotationError:
        code = error.code() if isinstance(error, grpc.Call) else None
        details = error.details() if isinstance(error, grpc.Call) else None
        return cls(code.name if code is not None else "UNKNOWN", details or str(error))


def _table_message(table: Table) -> _apb.Table:
    if isinstance(table.rows, str | bytes):
        raise TypeError("rows must be a sequence of rows, each a sequence of cell strings")
    rows = []
    for i, row in enumerate(table.rows):
        if isinstance(row, str | bytes) or not all(isinstance(cell, str) for cell in row):
            raise TypeError(f"row {i} of table {table.name!r} must be a sequence of str cells, got {row!r}")
        rows.append(_apb.Row(cells=row))
    return _apb.Table(name=table.name, rows=rows, pad_ragged_rows=table.pad_ragged_rows, request_id=table.request_id)


def _annotation(msg: _apb.Annotation) -> TableAnnotation:
    return TableAnnotation(
        table_name=msg.table_name,
        request_id=msg.request_id,
        columns=tuple(ColumnAnnotation(c.column, c.label, c.confidence, tuple(c.specialists), c.deep_steps)
                      for c in msg.columns),
        specialists_used=tuple(msg.specialists_used),
        specialists_missing=tuple(MissingSpecialist(m.name, m.reason) for m in msg.specialists_missing),
        critical_steps=msg.critical_steps,
        latency_ms=msg.latency_ms,
        complexity=msg.complexity if msg.HasField("complexity") else None,
        deep_stages=msg.deep_stages,
    )


class Annotator:
    """A connection to an annotation server at `target` ("host:port"), plaintext.

    >>> with Annotator("127.0.0.1:50050") as annotator:
    ...     result = annotator.annotate([["Hotel Adlon", "Berlin"], ["The Savoy", "London"]], name="hotels")
    ...     print(result.labels, result.specialists_used)

    `timeout_s` is the deadline of each call (a whole `annotate_many` stream counts as one call); a call may
    pass its own. The channel opens lazily and is closed by `close()` or on leaving the `with` block.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float | None = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
        self._stub = _apb_grpc.AnnotationServiceStub(self._channel)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the channel (idempotent); later calls raise RuntimeError."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> Annotator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Annotator({self.target!r}{', closed' if self._closed else ''})"

    def _timeout(self, timeout_s: float | None) -> float | None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return self.timeout_s if timeout_s is None else timeout_s

    def annotate(
        self,
        rows: Rows,
        *,
        name: str = "",
        pad_ragged_rows: bool = False,
        request_id: str = "",
        timeout_s: float | None = None,
    ) -> TableAnnotation:
        """Annotate one table given as rows of cell strings; one `ColumnAnnotation` per column comes back.

        Raises AnnotationError (e.g. INVALID_ARGUMENT for an empty or ragged table, RESOURCE_EXHAUSTED for one
        over the server's limits, UNAVAILABLE when no server answers, DEADLINE_EXCEEDED past `timeout_s`).
        """
        timeout = self._timeout(timeout_s)
        message = _table_message(Table(rows, name, pad_ragged_rows, request_id))
        try:
            reply = self._stub.Annotate(message, timeout=timeout)
        except grpc.RpcError as exc:
            raise AnnotationError._from_rpc(exc) from None
        return _annotation(reply)

    def annotate_many(self, tables: Iterable[Table | Rows], *, timeout_s: float | None = None) -> list[TableAnnotation]:
        """Annotate a batch over one AnnotateStream call: one TableAnnotation per table, in order.

        Tables are `Table`s or bare rows (named "" like `annotate`'s default). The first table the server
        rejects ends the batch with an AnnotationError whose message names its position in the stream.
        """
        timeout = self._timeout(timeout_s)
        messages = [_table_message(t if isinstance(t, Table) else Table(t)) for t in tables]
        if not messages:
            return []
        try:
            return [_annotation(reply) for reply in self._stub.AnnotateStream(iter(messages), timeout=timeout)]
        except grpc.RpcError as exc:
            raise AnnotationError._from_rpc(exc) from None
