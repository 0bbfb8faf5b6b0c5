"""The typed client of the annotation API (`swarm.v1.AnnotationService`).

It speaks gRPC through the generated stubs but never hands them out: tables go in as lists of rows of cell
strings (or `Table`), results come back as frozen dataclasses, and every failed call is an `AnnotationError`
carrying the gRPC status code's name and the server's message. It imports grpc and the generated messages
only (no torch), so a caller needs nothing of the model.

Retries: a call refused with RESOURCE_EXHAUSTED or UNAVAILABLE whose trailing metadata carries the server's
`retry-after-ms` hint (a busy server, or one that requires all its specialists while one is down) is retried with
exponential backoff and jitter, never sooner than the hint, at most `max_retries` times and never past the call's
own deadline; `max_retries=0` turns this off. A hint of -1 (the table itself is over a limit), a missing hint
(no server answering, gRPC's own refusals) and every other code are raised at once. `annotate_many` resends only
the tables not yet answered.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import grpc

from swarm.v1 import annotation_pb2 as _apb
from swarm.v1 import annotation_pb2_grpc as _apb_grpc

_T = TypeVar("_T")

Rows = Sequence[Sequence[str]]

# The annotation server accepts messages up to 16 MiB (AnnotationLimits.max_message_bytes); gRPC's client
# default would refuse replies over 4 MiB.
DEFAULT_MAX_MESSAGE_BYTES = 16 << 20
# = swarm.model_server.serving.grpc_runtime.RETRY_AFTER_KEY (not imported: no server code)
RETRY_AFTER_KEY = "retry-after-ms"
RETRIED_CODES = ("RESOURCE_EXHAUSTED", "UNAVAILABLE")


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
    # what the fused specialists' knowledge sources found in the column, one line each ("geographic: places: 5/5
    # city; 4 in DE")
    evidence: tuple[str, ...] = ()


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
    # A specialist routed columns of this table delivered no states for some of them: those columns were labelled
    # without it (see specialists_missing).
    degraded: bool = False

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(c.label for c in self.columns)

    @property
    def confidences(self) -> tuple[float, ...]:
        return tuple(c.confidence for c in self.columns)


class AnnotationError(Exception):
    """A failed call: `code` is the gRPC status code's name (e.g. "INVALID_ARGUMENT"), `message` the server's,
    `retry_after_ms` the server's retry hint (None: none sent; -1: retrying the same call cannot succeed) and
    `attempts` how many times the call was made."""

    def __init__(self, code: str, message: str, retry_after_ms: int | None = None, attempts: int = 1) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.attempts = attempts

    @classmethod
    def _from_rpc(cls, error: grpc.RpcError, attempts: int = 1) -> AnnotationError:
        if not isinstance(error, grpc.Call):
            return cls("UNKNOWN", str(error), None, attempts)
        code = error.code()
        return cls(code.name if code is not None else "UNKNOWN", error.details() or str(error),
                   _retry_after_ms(error), attempts)


def _retry_after_ms(call: grpc.Call) -> int | None:
    for key, value in call.trailing_metadata() or ():
        if key == RETRY_AFTER_KEY:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


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
        columns=tuple(ColumnAnnotation(c.column, c.label, c.confidence, tuple(c.specialists), c.deep_steps,
                                       tuple(c.evidence))
                      for c in msg.columns),
        specialists_used=tuple(msg.specialists_used),
        specialists_missing=tuple(MissingSpecialist(m.name, m.reason) for m in msg.specialists_missing),
        critical_steps=msg.critical_steps,
        latency_ms=msg.latency_ms,
        complexity=msg.complexity if msg.HasField("complexity") else None,
        deep_stages=msg.deep_stages,
        degraded=msg.degraded,
    )


class Annotator:
    """A connection to an annotation server at `target` ("host:port"), plaintext.

    >>> with Annotator("127.0.0.1:50050") as annotator:
    ...     result = annotator.annotate([["Hotel Adlon", "Berlin"], ["The Savoy", "London"]], name="hotels")
    ...     print(result.labels, result.specialists_used)

    `timeout_s` is the deadline of each call (a whole `annotate_many` stream counts as one call; its retries
    included); a call may pass its own. A call the server refuses with a retry hint is retried up to `max_retries`
    times, waiting the hint or `backoff_s` doubling per retry up to `max_backoff_s` (the longer), times a random
    1-1.5 (see the module doc). The channel opens lazily and is closed by `close()` or on leaving the `with` block.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float | None = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_retries: int = 4,
        backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
    ) -> None:
        if max_retries < 0 or backoff_s < 0 or max_backoff_s < 0:
            raise ValueError("max_retries, backoff_s and max_backoff_s must not be negative")
        self.target = target
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._random = random.Random()
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

    def _retry_delay(self, error: AnnotationError, retries: int, end: float | None) -> float | None:
        """Seconds to wait before retrying after `retries` retries, or None when the error is final (not
        retryable, no hint, out of attempts, or the wait would pass the call's deadline)."""
        hint = error.retry_after_ms
        if error.code not in RETRIED_CODES or hint is None or hint < 0 or retries >= self.max_retries:
            return None
        delay = max(hint / 1e3, min(self.max_backoff_s, self.backoff_s * 2**retries))
        delay *= self._random.uniform(1.0, 1.5)  # jitter: clients refused together do not come back together
        if end is not None and time.monotonic() + delay >= end:
            return None
        return delay

    @staticmethod
    def _remaining(end: float | None) -> float | None:
        return None if end is None else max(0.0, end - time.monotonic())

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
        end = None if timeout is None else time.monotonic() + timeout
        return self._retrying(end, lambda remaining: _annotation(self._stub.Annotate(message, timeout=remaining)))

    def annotate_many(self, tables: Iterable[Table | Rows], *, timeout_s: float | None = None) -> list[TableAnnotation]:
        """Annotate a batch over one AnnotateStream call: one TableAnnotation per table, in order.

        Tables are `Table`s or bare rows (named "" like `annotate`'s default). The first table the server
        rejects ends the batch with an AnnotationError whose message names its position in the stream (after a
        retry: in the stream of the tables resent). A retry resends only the tables not answered yet.
        """
        timeout = self._timeout(timeout_s)
        messages = [_table_message(t if isinstance(t, Table) else Table(t)) for t in tables]
        if not messages:
            return []
        end = None if timeout is None else time.monotonic() + timeout
        done: list[TableAnnotation] = []

        def attempt(remaining: float | None) -> list[TableAnnotation]:
            for reply in self._stub.AnnotateStream(iter(messages[len(done):]), timeout=remaining):
                done.append(_annotation(reply))
            return done

        return self._retrying(end, attempt)

    def _retrying(self, end: float | None, attempt: Callable[[float | None], _T]) -> _T:
        """`attempt(time left)` until it succeeds, retrying what the server says may be retried (see _retry_delay)
        until the retries or the deadline `end` run out; the last failure as an AnnotationError."""
        retries = 0
        while True:
            try:
                return attempt(self._remaining(end))
            except grpc.RpcError as exc:
                error = AnnotationError._from_rpc(exc, retries + 1)
            delay = self._retry_delay(error, retries, end)
            if delay is None:
                raise error
            time.sleep(delay)
            retries += 1
