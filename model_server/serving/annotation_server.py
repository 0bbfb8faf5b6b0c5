"""The annotation gRPC server (`swarm.v1.AnnotationService`): validates tables and drives an `TableAnnotator`.

Per table: proto Table → validated `sotab.Table` → its cells held in the cell-vector store (never-seen ones priced,
admitted and encoded once, here) → `annotator.route` → priced and admitted (admission.py) → states fetched from the
specialist servers through `SpecialistClient` (concurrently; lost specialists are reported, not fatal), each request
carrying the vectors of its columns' cells so that no specialist encodes them again → `annotator.annotate`.

Cells: the process's store is a serving one (cell_vectors.configure_serving): at most `cell_cache_capacity` texts in
memory, least recently used evicted, nothing written to disk unless `keep_cell_vectors_dir` (or
$SWARM_KEEP_CELL_VECTORS_DIR) names a private directory. A table whose cells are all cached costs a lookup. One with
never-seen cells is first checked against the per-table caps as if every specialist read every column (so no
encoding is spent on a table that will be refused) and against its deadline (DEADLINE_EXCEEDED up front when its
cells cannot be encoded in time at the rate this server has measured), then its encoding is priced
(`admission.encoding_cost`) and admitted like a table, and run on an encoder thread of its own (batched; stopped
when the caller goes or its deadline passes), so the primary's threads keep serving cached tables meanwhile.

Degradation is explicit: a reply whose table lost a specialist on the way (routed columns, no states for some of
them: timed out, died, malformed stream, not running yet) says `degraded` beside `specialists_missing`; with
`require_specialists` the server answers UNAVAILABLE (with a retry hint) instead of a degraded annotation.

Input policy (every violation is a status code, never a crash; limits are checked before the data is walked,
and messages never echo unbounded input):
- a name over `max_name_chars`, a request_id over `max_request_id_chars` or with characters outside printable
  ASCII: INVALID_ARGUMENT (messages quote at most the first 64 characters of a name, and never a request_id);
- no rows, or no cells at all: INVALID_ARGUMENT;
- more than `max_rows` rows, `max_cells` cells or `max_columns` columns: RESOURCE_EXHAUSTED naming the limit;
- ragged rows (rows with different cell counts): INVALID_ARGUMENT naming the first offending row, unless the
  table sets `pad_ragged_rows`, which pads short rows with "" like SOTAB records with missing keys;
- a message over `max_message_bytes`: RESOURCE_EXHAUSTED (enforced by gRPC itself);
- strings that are not valid UTF-8: INVALID_ARGUMENT (see grpc_runtime);
- a table whose estimated memory or compute is over the per-request cap: RESOURCE_EXHAUSTED saying how many
  columns per table would fit; one that cannot be admitted under the global memory budget within the queue
  wait: RESOURCE_EXHAUSTED (retry with backoff);
- every RESOURCE_EXHAUSTED has one message shape and a `retry-after-ms` trailer (grpc_runtime.Refused): a
  positive wait when the server is busy (queue, budget, streams, calls in flight), -1 when the table itself is
  over a limit. Only a message over `max_message_bytes` is refused by gRPC itself, in its own words;
- cells longer than `max_cell_chars` are clipped (serialization reads the first 64 characters of a cell).

Deadlines: each table runs under the earlier of the client's deadline and `max_request_s`; the context is checked
before every stage (admission, fan-out, the primary), so work whose caller has gone or whose deadline has passed
is not started, and the specialist fan-out is cancelled when the client goes away. AnnotateStream is limited to
`max_streams` concurrent streams, each closed (DEADLINE_EXCEEDED) after `stream_idle_s` without a table or
`stream_max_s` in all. Health runs on threads of its own (grpc_runtime), and the worker pool is larger than all
the calls admission lets in, so idle streams cannot starve anything.

Health: "" is SERVING while the server runs (liveness); `swarm.v1.AnnotationService` is SERVING only while every
specialist answers its own health check (NOT_SERVING: answers are degraded), and `specialist/<name>` reports each
one (checked every `health_interval_s`).
"""

from __future__ import annotations

import itertools
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import torch

from swarm.model_server.model.backbone import BackboneConfig, get_config
from swarm.model_server.model.cell_vectors import (
    DEFAULT_SERVING_CAPACITY,
    ENCODER,
    CellHold,
    CellVectorStore,
    EncodingAbandoned,
    configure_serving,
    keep_dir_from_env,
    store,
)
from swarm.model_server.model.column_encoder import SERVING_FEATURE_ROWS, feature_rows
from swarm.model_server.model.column_features import is_empty_cell
from swarm.model_server.model.knowledge.base import clip
from swarm.model_server.model.tables import Table
from swarm.model_server.serving.admission import (
    Admission,
    AdmissionLimits,
    AdmissionRejected,
    ComputeThreads,
    GiB,
    SpecialistPace,
    annotation_cost,
    encoding_cost,
    machine_memory_bytes,
    state_bytes_per_column,
)
from swarm.model_server.serving.annotator import AnnotationResult, Routing, SpecialistStates, Stage, TableAnnotator
from swarm.model_server.serving.codec import cell_vectors_message, columns_cell_texts
from swarm.model_server.serving.demand import DemandPublisher, annotate_requested
from swarm.model_server.serving.grpc_runtime import (
    DEFAULT_RETRY_AFTER_MS,
    ManagedServer,
    MiB,
    Refused,
    ServerSecurity,
    service_handler,
)
from swarm.model_server.serving.specialist_client import Cancellation, SpecialistClient
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import specialist_pb2 as spb

log = logging.getLogger(__name__)
ENCODING_MARGIN = 2.0  # the up-front deadline check wants this many times the expected encoding time left
T = TypeVar("T")

SERVICE = apb.DESCRIPTOR.services_by_name["AnnotationService"]
SPECIALIST_HEALTH_PREFIX = "specialist/"
_REQUEST_ID = re.compile(r"[\x21-\x7e]*")  # printable ASCII, no spaces or control characters
DEFAULT_BUDGET_FRACTION = 0.25  # of the machine's (or the pod's) memory, when no budget is given


@dataclass(frozen=True)
class AnnotationLimits:
    max_cells: int = 200_000
    max_rows: int = 200_000
    max_columns: int = 1024
    max_message_bytes: int = 16 * MiB
    max_concurrent: int = 4  # tables admitted at once (fetching states or computing)
    compute_threads: int = 2  # threads that run the primary (at most this many forward passes at once)
    max_queued: int = 8  # tables waiting for admission
    max_streams: int = 4  # concurrent AnnotateStream calls
    memory_budget_bytes: int | None = None  # all tables being served together; None: a quarter of the memory
    max_request_bytes: int = 2 * GiB  # one table's estimate
    max_request_token_passes: int = 1024 * 256 * 6  # one table's columns x tokens x models
    max_queue_wait_s: float = 10.0
    max_request_s: float = 300.0  # server-side deadline of one table, whatever the client asked for
    stream_idle_s: float = 30.0  # AnnotateStream: longest wait for the next table
    stream_max_s: float = 3600.0  # AnnotateStream: longest stream
    # A stage's specialist timeout: this, or 3x the time its widest request is expected to take at the pace the
    # specialists have shown (admission.SpecialistPace), whichever is longer; never past the table's deadline.
    specialist_timeout_s: float = 30.0
    max_name_chars: int = 256
    max_request_id_chars: int = 128
    max_cell_chars: int = 4096
    health_interval_s: float = 2.0
    retry_after_ms: int = DEFAULT_RETRY_AFTER_MS  # the retry hint of a busy server (RESOURCE_EXHAUSTED, UNAVAILABLE)
    require_specialists: bool = False  # UNAVAILABLE instead of an answer without a routed specialist's states
    send_cell_vectors: bool = True  # specialists get the cell vectors encoded here instead of encoding them again
    cell_cache_capacity: int = DEFAULT_SERVING_CAPACITY  # cell texts held in memory (least recently used evicted)
    # Where encoded cells (client data: plaintext texts) may be written, 0700/0600; None: $SWARM_KEEP_CELL_VECTORS_DIR
    # or, unset, nowhere.
    keep_cell_vectors_dir: Path | None = None
    # Measure the encoder's rate at start (loads MiniLM, ~1 s on a CPU): without it the first never-seen tables are
    # admitted whatever their deadline, until the server has measured a rate on real ones.
    calibrate_encoder: bool = False

    def admission_limits(self) -> AdmissionLimits:
        return AdmissionLimits(
            budget_bytes=self.memory_budget_bytes or int(machine_memory_bytes() * DEFAULT_BUDGET_FRACTION),
            max_request_bytes=self.max_request_bytes,
            max_request_token_passes=self.max_request_token_passes,
            max_active=self.max_concurrent,
            max_queued=self.max_queued,
            max_wait_s=self.max_queue_wait_s,
            retry_after_ms=self.retry_after_ms,
        )

    @property
    def workers(self) -> int:
        """Worker threads: every call admission may hold (running, queued, streams) plus room to refuse more."""
        return self.max_concurrent + self.max_queued + self.max_streams + 4


class TableRejected(Refused):
    """A table refused before any work (its status code and what was wrong)."""


def _invalid(message: str) -> TableRejected:
    return TableRejected(grpc.StatusCode.INVALID_ARGUMENT, message)


def _too_large(detail: str) -> TableRejected:
    return TableRejected.too_large(detail, "split the table and send the parts as separate tables")


def _excerpt(text: str, limit: int = 64) -> str:
    """A client-supplied string fit for a status message: repr'd and cut to `limit` characters."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def request_id_of(msg: apb.Table, limits: AnnotationLimits) -> str:
    """The table's request_id (validated) or a fresh one."""
    rid = msg.request_id
    if len(rid) > limits.max_request_id_chars:
        raise _invalid(f"request_id has {len(rid)} characters; the limit is {limits.max_request_id_chars}")
    if not _REQUEST_ID.fullmatch(rid):
        raise _invalid("request_id must be printable ASCII without spaces")
    return rid or uuid.uuid4().hex[:12]


def table_from_proto(msg: apb.Table, limits: AnnotationLimits) -> Table:
    """The column-major table of a proto Table, or TableRejected with the status code and what was wrong.

    The O(1) bounds (name, rows) come first, so a huge message of empty rows is refused without walking it."""
    if len(msg.name) > limits.max_name_chars:
        raise _invalid(f"the table name has {len(msg.name)} characters; the limit is {limits.max_name_chars}")
    name = f"table {_excerpt(msg.name or 'table')}"  # bounded: names longer than 64 characters are cut
    n_rows = len(msg.rows)
    if not n_rows:
        raise _invalid(f"{name} has no rows")
    if n_rows > limits.max_rows:
        raise _too_large(f"{name} has {n_rows} rows and the limit is {limits.max_rows} rows per table")
    lengths = [len(row.cells) for row in msg.rows]
    cells = sum(lengths)
    if cells > limits.max_cells:
        raise _too_large(f"{name} has {cells} cells and the limit is {limits.max_cells} cells per table")
    width = max(lengths)
    if width == 0:
        raise _invalid(f"{name} has no cells")
    if width > limits.max_columns:
        raise _too_large(f"{name} has {width} columns and the limit is {limits.max_columns} columns per table")
    if not msg.pad_ragged_rows:
        for i, n in enumerate(lengths):
            if n != lengths[0]:
                raise _invalid(
                    f"{name} has ragged rows: row {i} has {n} cells, row 0 has {lengths[0]} "
                    "(set pad_ragged_rows to pad short rows with empty cells)"
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
    clip = limits.max_cell_chars
    if msg.ByteSize() > clip:  # else no cell can be longer than the clip
        columns = tuple(tuple(c if len(c) <= clip else c[:clip] for c in column) for column in columns)
    return Table(name=msg.name or "table", columns=columns)


def cell_store(annotator: TableAnnotator) -> CellVectorStore:
    """The cell-vector store the annotator's column encoder reads (the process's store unless it has its own)."""
    for owner in (annotator, getattr(annotator, "inner", None)):
        cells = getattr(getattr(owner, "tokenizer", None), "cells", None)
        if isinstance(cells, CellVectorStore):
            return cells
    return store()


def primary_config(annotator: TableAnnotator) -> BackboneConfig:
    """The backbone config the annotator's primary runs (what a table's memory is priced with)."""
    for owner in (getattr(annotator, "model", None), getattr(annotator, "backbone", None), annotator):
        cfg = getattr(owner, "cfg", None)
        if isinstance(cfg, BackboneConfig):
            return cfg
    log.warning("cannot tell the annotator's model config; pricing tables as the base config (pessimistic)")
    return get_config("base")


def merge_stage(states: SpecialistStates, merged: Routing, reasons: dict[str, str], stage: Routing,
                delivered: SpecialistStates, missing: dict[str, str]) -> None:
    """Add one stage's delivered states to the table's: a specialist's new rows follow its earlier ones, and its
    routing grows with them, so rows and columns stay aligned; one that delivered nothing keeps what it gave before
    (its new columns simply go without it)."""
    for name, layers in delivered.items():
        if name in states:
            states[name] = [torch.cat([old, new]) for old, new in zip(states[name], layers, strict=True)]
            merged[name] = merged[name] + list(stage[name])
        else:
            states[name], merged[name] = layers, list(stage[name])
    for name, reason in missing.items():
        reasons.setdefault(name, reason)
        merged.setdefault(name, list(stage.get(name, [])))


MAX_EVIDENCE_LINE = 200


def column_evidence(found: dict[str, str], fused: Sequence[str]) -> list[str]:
    """One line per specialist fused into a column's answer whose knowledge sources recognised something in it."""
    return [clip(f"{name}: {found[name]}", MAX_EVIDENCE_LINE) for name in fused if found.get(name)]


def _at(values: Sequence[T], index: int, default: T) -> T:
    return values[index] if index < len(values) else default


class _Gone(Exception):
    """The client cancelled or went away: nothing to answer."""


class AnnotationServicer:
    def __init__(self, annotator: TableAnnotator, client: SpecialistClient, limits: AnnotationLimits,
                 publisher: DemandPublisher | None = None) -> None:
        self.annotator = annotator
        self.client = client
        self.limits = limits
        # Cold specialists a stage wanted are asked from their SpecialistPool (model_server/serving/demand.py).
        self.publisher = publisher if publisher is not None else DemandPublisher.from_env()
        self.primary_cfg = primary_config(annotator)
        self.state_bytes = state_bytes_per_column(self.primary_cfg)
        self.admission = Admission(limits.admission_limits(), what="table")
        self.pace = SpecialistPace()  # the specialists' timeout of a stage, scaled by its widest request
        self._backlog = 0  # never-seen texts admitted to the encoder thread and not encoded yet
        self._backlog_lock = threading.Lock()
        self.compute = ComputeThreads(limits.compute_threads, "primary")
        # MiniLM runs on a thread of its own: a table of never-seen cells never takes a thread the primary's
        # forward passes of other tables need.
        self.encoder = ComputeThreads(1, "encoder")
        self.cells = configure_serving(limits.cell_cache_capacity, limits.keep_cell_vectors_dir or keep_dir_from_env(),
                                       target=cell_store(annotator))
        feature_rows().bound(SERVING_FEATURE_ROWS)
        self._streams = threading.BoundedSemaphore(limits.max_streams)

    # -- stages ------------------------------------------------------------------------------------------------

    def hold_cells(self, table: Table, texts: Sequence[str], context: grpc.ServicerContext, deadline: float,
                   request_bytes: int = 0) -> CellHold:
        """Every cell text of the table present in the store and held for the table's life: a lookup when all are
        cached. Otherwise the table is first checked against the per-table caps as if every specialist read every
        column (routing needs the encoded cells, and encoding is not spent on a table that will be refused), then
        the never-seen texts are priced (admission.encoding_cost), admitted, and encoded once, in batches, on the
        encoder thread (stopping when the caller goes or its deadline passes)."""
        wanted = columns_cell_texts(texts)
        unseen = self.cells.unseen(wanted)
        if not unseen:
            return self.cells.hold(wanted)
        filled = sum(1 for column in table.columns if any(not is_empty_cell(c) for c in column))
        widest = filled * len(getattr(self.annotator, "specialist_names", ()))
        deep_bound = getattr(self.annotator, "deep_call_bound", lambda _: 0)(table)
        self.admission.check(annotation_cost(self.primary_cfg, texts, widest + deep_bound, self.state_bytes,
                                             request_bytes))
        self._in_time(len(unseen), filled, deadline)
        cost = encoding_cost(unseen, len(table.columns), self.cells.encode_batch)

        def gone() -> bool:
            return not context.is_active() or time.monotonic() >= deadline

        # Bytes from the budget but no table slot: the encoder has a thread of its own, and cached tables must not
        # wait for slots held by tables that are only waiting for it.
        with self.admission.admit(cost, deadline, lambda: not context.is_active(), slot=False):
            self._alive(context, deadline, "before the cells were encoded")
            with self._backlog_lock:
                self._backlog += len(unseen)
            try:
                return self.encoder.run(self.cells.hold, wanted, None, gone)
            except EncodingAbandoned:
                self._alive(context, deadline, "while the cells were encoded")
                raise
            finally:
                with self._backlog_lock:
                    self._backlog -= len(unseen)

    def _in_time(self, unseen: int, columns: int, deadline: float) -> None:
        """Refuse up front a table that cannot be answered before its deadline: its never-seen cells wait for the
        texts other tables have queued on the one encoder thread, are encoded at the rate this server measured
        (calibrated at start by `swarm up`; nothing is refused before a rate exists), and its specialists then read
        its columns at the pace they have shown."""
        rate = self.cells.encode_rate()
        left = deadline - time.monotonic()
        if rate is None:
            return
        with self._backlog_lock:
            ahead = self._backlog
        encoding = (ahead + unseen) / rate
        # Twice the encoding estimate must fit: the rate was measured on a quieter encoder than a loaded server's (a
        # 1,024-column table admitted on the plain estimate ran past its 120 s deadline under four clients).
        if ENCODING_MARGIN * encoding + self.pace.expected_s(columns) <= left:
            return
        queued = f" behind {ahead:,} of other tables" if ahead else ""
        raise AdmissionRejected(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"refused up front: this table has {unseen:,} never-seen cell texts{queued}, ~{encoding:,.0f} s of "
            f"encoding at this server's {rate:,.0f} texts/s (twice that is allowed for) before its specialists read "
            f"its {columns:,} columns, and its deadline leaves {max(0.0, left):,.1f} s; send fewer columns per table "
            "or allow a longer deadline",
        )

    def vectors_for(self, texts: Sequence[str], max_bytes: int) -> spb.CellVectors | None:
        """The cell vectors of a specialist request's columns (cached here: a lookup), within `max_bytes`."""
        keys, vectors = self.cells.vectors(columns_cell_texts(texts))
        return cell_vectors_message(keys, vectors, ENCODER, max_bytes) if keys else None

    @staticmethod
    def _alive(context: grpc.ServicerContext, deadline: float, stage: str) -> None:
        if not context.is_active():
            raise _Gone(stage)
        if time.monotonic() >= deadline:
            raise AdmissionRejected(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline passed {stage}")

    def annotate_table(
        self,
        table: Table,
        request_id: str,
        context: grpc.ServicerContext,
        deadline: float,
        cancellation: Cancellation,
        request_bytes: int = 0,
    ) -> apb.Annotation:
        """Price and admit, route, fetch states over gRPC (the wide stage, then any deep stages the annotator
        asks for), fuse and label; specialists lost on the way are reported missing and the reply degraded (or,
        with `require_specialists`, the table refused UNAVAILABLE at the first loss). The context is checked before
        every stage."""
        start = time.perf_counter()
        self._alive(context, deadline, "before the table was routed")
        texts = self.annotator.serialize(table)
        with self.hold_cells(table, texts, context, deadline, request_bytes):
            return self._annotate_held(table, texts, request_id, context, deadline, cancellation, request_bytes,
                                       start)

    def _annotate_held(self, table: Table, texts: list[str], request_id: str, context: grpc.ServicerContext,
                       deadline: float, cancellation: Cancellation, request_bytes: int, start: float
                       ) -> apb.Annotation:
        """annotate_table once the table's cells are held in the store."""
        routing = {name: cols for name, cols in self.annotator.route(table).items() if cols}
        deep_bound = getattr(self.annotator, "deep_call_bound", lambda _: 0)(table)
        cost = annotation_cost(
            self.primary_cfg, texts, sum(len(c) for c in routing.values()) + deep_bound, self.state_bytes,
            request_bytes,
        )
        with self.admission.admit(cost, deadline, lambda: not context.is_active()):
            states: SpecialistStates = {}
            merged: Routing = {}
            reasons: dict[str, str] = {}
            lost: dict[str, str] = {}  # every specialist that missed a stage, even one that delivered another
            stages: list[Stage] = []
            found: dict[int, dict[str, str]] = {}  # column -> specialist -> what its knowledge sources found
            stage = routing
            while stage:
                self._alive(context, deadline, f"before stage {len(stages) + 1}")
                widest = max(len(cols) for cols in stage.values())
                began = time.monotonic()
                fetched = self.client.fetch(
                    {name: [texts[i] for i in cols] for name, cols in stage.items()},
                    request_id=request_id,
                    timeout_s=self.pace.timeout_s(widest, self.limits.specialist_timeout_s, deadline - began),
                    cancellation=cancellation,
                    cell_vectors=self.vectors_for if self.limits.send_cell_vectors else None,
                )
                if not fetched.missing:
                    self.pace.record(widest, time.monotonic() - began)
                for name, lines in fetched.evidence.items():
                    for column, line in zip(stage[name], lines, strict=False):
                        if line:
                            found.setdefault(column, {})[name] = line
                missing = annotate_requested(fetched.missing, self.publisher)  # cold ones: asked from the pool
                lost.update(missing)
                self._require(lost)
                merge_stage(states, merged, reasons, stage, fetched.states, missing)
                stages.append(Stage(stage, dict(fetched.steps)))
                self._alive(context, deadline, "while the specialists' states were fetched")
                stage = {name: cols for name, cols in
                         self.compute.run(self.annotator.next_stage, table, states, merged, stages).items() if cols}
            result = self.compute.run(self.annotator.annotate, table, states, merged, stages)
            assert isinstance(result, AnnotationResult)
        _check_result(result, table)
        for name in result.specialists_missing:
            reasons.setdefault(name, "not delivered")
        reasons = {name: reason for name, reason in reasons.items() if name not in states}
        self._require({**lost, **reasons})
        annotation = apb.Annotation(
            request_id=request_id,
            table_name=table.name,
            columns=[
                apb.ColumnAnnotation(column=i, label=label, confidence=conf,
                                     specialists=_at(result.column_specialists, i, []),
                                     deep_steps=_at(result.deep_steps, i, 0),
                                     evidence=column_evidence(found.get(i, {}),
                                                              _at(result.column_specialists, i, [])))
                for i, (label, conf) in enumerate(zip(result.labels, result.confidences, strict=True))
            ],
            specialists_used=result.specialists_used,
            specialists_missing=[apb.MissingSpecialist(name=n, reason=r) for n, r in sorted(reasons.items())],
            critical_steps=result.critical_steps,
            latency_ms=(time.perf_counter() - start) * 1e3,
            deep_stages=max(0, len(stages) - 1),
            degraded=bool(lost or reasons),
        )
        if result.complexity is not None:
            annotation.complexity = result.complexity
        return annotation

    def _require(self, lost: dict[str, str]) -> None:
        """UNAVAILABLE (with a retry hint) when specialists were lost and the server must not degrade."""
        if lost and self.limits.require_specialists:
            who = ", ".join(f"{name} ({reason})" for name, reason in sorted(lost.items()))
            raise Refused(
                grpc.StatusCode.UNAVAILABLE,
                f"specialists delivered no states: {who}; this server answers only with every specialist it routes "
                f"to (require_specialists): retry after {self.limits.retry_after_ms} ms",
                self.limits.retry_after_ms,
            )

    def _annotate_message(
        self,
        msg: apb.Table,
        context: grpc.ServicerContext,
        deadline: float,
        cancellation: Cancellation,
        position: str = "",
    ) -> apb.Annotation:
        """One table, every failure turned into its status code (aborting the call)."""
        code, message = grpc.StatusCode.INTERNAL, ""
        request_id = ""
        try:
            request_id = request_id_of(msg, self.limits)
            table = table_from_proto(msg, self.limits)
            return self.annotate_table(table, request_id, context, deadline, cancellation, msg.ByteSize())
        except Refused as exc:  # TableRejected, AdmissionRejected, UNAVAILABLE of require_specialists
            exc.abort(context, position)
        except _Gone as exc:
            log.info("request %s: the client went away (%s); the table was not finished", request_id, exc)
            code, message = grpc.StatusCode.CANCELLED, f"cancelled{position}"
        except Exception:
            log.exception("request %s: annotating the table failed", request_id)
            code = grpc.StatusCode.INTERNAL
            message = f"annotating the table failed{position} (request id {request_id}; details in the server log)"
        context.abort(code, message)
        raise AssertionError("unreachable")  # context.abort raises

    def _deadline(self, context: grpc.ServicerContext, server_limit_s: float) -> float:
        remaining = context.time_remaining()
        limit = server_limit_s if remaining is None else min(remaining, server_limit_s)
        return time.monotonic() + limit

    @staticmethod
    def _cancellation(context: grpc.ServicerContext) -> Cancellation:
        cancellation = Cancellation()
        if not context.add_callback(cancellation.cancel):  # the call has already ended
            cancellation.cancel()
        return cancellation

    # -- RPCs --------------------------------------------------------------------------------------------------

    def Annotate(self, request: apb.Table, context: grpc.ServicerContext) -> apb.Annotation:
        deadline = self._deadline(context, self.limits.max_request_s)
        return self._annotate_message(request, context, deadline, self._cancellation(context))

    def AnnotateStream(
        self, requests: Iterator[apb.Table], context: grpc.ServicerContext
    ) -> Iterator[apb.Annotation]:
        if not self._streams.acquire(blocking=False):
            Refused.busy(
                f"the server is serving its limit of {self.limits.max_streams} concurrent AnnotateStream calls",
                self.limits.retry_after_ms, ", or use Annotate",
            ).abort(context)
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self._streams.release()

        context.add_callback(release)
        try:
            yield from self._stream(requests, context)
        finally:
            release()

    def _stream(self, requests: Iterator[apb.Table], context: grpc.ServicerContext) -> Iterator[apb.Annotation]:
        stream_deadline = self._deadline(context, self.limits.stream_max_s)
        cancellation = self._cancellation(context)
        inbox: queue.Queue[object] = queue.Queue(maxsize=1)
        finished = threading.Event()
        end = object()

        def read() -> None:
            """Pull the client's tables on a thread of its own, so the handler can time out an idle stream."""
            item: object = end
            try:
                for msg in requests:
                    while not finished.is_set():
                        try:
                            inbox.put(msg, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if finished.is_set():
                        return
            except Exception as exc:  # the client cancelled, or a message failed to parse (already aborted)
                item = exc
            while not finished.is_set():
                try:
                    inbox.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        reader = threading.Thread(target=read, name="stream-reader", daemon=True)
        reader.start()
        try:
            for i in itertools.count():
                now = time.monotonic()
                wait = min(self.limits.stream_idle_s, stream_deadline - now)
                try:
                    item = inbox.get(timeout=max(0.0, wait))
                except queue.Empty:
                    if stream_deadline - time.monotonic() <= 0:
                        context.abort(
                            grpc.StatusCode.DEADLINE_EXCEEDED,
                            f"the stream reached its deadline (at most {self.limits.stream_max_s:g}s per stream)",
                        )
                    context.abort(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no table for {self.limits.stream_idle_s:g}s: idle streams are closed",
                    )
                if item is end:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, grpc.RpcError) or not context.is_active():
                        return  # the client cancelled: nobody to answer
                    # not a message the reader already refused (bad UTF-8). grpc's ServicerContext has code()
                    # (grpcio >= 1.38); its type stubs lack it.
                    if context.code() is None:  # type: ignore[attr-defined]
                        log.error("reading an AnnotateStream failed: %r", item)
                        context.abort(grpc.StatusCode.INTERNAL, "reading the stream failed (see the server log)")
                    raise item
                assert isinstance(item, apb.Table)
                deadline = min(stream_deadline, time.monotonic() + self.limits.max_request_s)
                yield self._annotate_message(item, context, deadline, cancellation, f" (table {i} of the stream)")
        finally:
            finished.set()


def _check_result(result: AnnotationResult, table: Table) -> None:
    n = len(table.columns)
    if len(result.labels) != n or len(result.confidences) != n:
        raise RuntimeError(
            f"annotator returned {len(result.labels)} labels and {len(result.confidences)} "
            f"confidences for {n} columns"
        )


class SpecialistHealthMonitor:
    """Checks every specialist's health on a timer and publishes it in the annotation server's health."""

    def __init__(self, server: ManagedServer, client: SpecialistClient, interval_s: float) -> None:
        self.server = server
        self.client = client
        self.interval_s = interval_s
        self.status: dict[str, bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="specialist-health", daemon=True)

    def check_now(self) -> dict[str, bool]:
        names = list(self.client.addresses)
        timeout = max(0.2, min(1.0, self.interval_s))
        status = {name: self.client.check_health(name, timeout) for name in names}
        for name, ok in status.items():
            self.server.set_health(SPECIALIST_HEALTH_PREFIX + name, ok)
            if self.status.get(name, True) != ok:
                (log.info if ok else log.warning)("specialist %s is %s", name, "back" if ok else "not answering")
        self.server.set_health(SERVICE.full_name, all(status.values()))
        self.status = status
        return status

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_now()
            except Exception:  # never let the monitor die
                log.exception("checking the specialists' health failed")
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


class AnnotationServer(ManagedServer):
    """The annotation API's ManagedServer plus the specialist health monitor and the servicer (for stats)."""

    servicer: AnnotationServicer
    monitor: SpecialistHealthMonitor | None = None

    def start(self) -> AnnotationServer:
        if self.servicer.limits.calibrate_encoder:
            rate = self.servicer.cells.calibrate()
            log.info("cell encoder calibrated: %.0f texts/s", rate)
        super().start()
        if self.monitor is not None:
            self.monitor.check_now()
            self.monitor.start()
        return self

    def stop(self, grace_s: float) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        super().stop(grace_s)
        self.servicer.compute.shutdown()
        self.servicer.encoder.shutdown()
        self.servicer.publisher.close()


def build_annotation_server(
    annotator: TableAnnotator,
    client: SpecialistClient,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: AnnotationLimits | None = None,
    security: ServerSecurity | None = None,
    health_port: int | None = None,
    publisher: DemandPublisher | None = None,
) -> AnnotationServer:
    limits = limits or AnnotationLimits()
    servicer = AnnotationServicer(annotator, client, limits, publisher)
    handler = service_handler(SERVICE, servicer)
    server = AnnotationServer(
        [(SERVICE, handler)],
        host,
        port,
        max_workers=limits.workers,
        max_message_bytes=limits.max_message_bytes,
        security=security,
        health_port=health_port,
        max_rpcs=4 * limits.workers,
        retry_after_ms=limits.retry_after_ms,
    )
    server.servicer = servicer
    if client.addresses and limits.health_interval_s > 0:
        server.monitor = SpecialistHealthMonitor(server, client, limits.health_interval_s)
    return server
