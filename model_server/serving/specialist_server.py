"""The specialist gRPC server (swarm.v1.SpecialistService): a frozen specialist streaming its layer states.

Serves its states and its state decoder (each streamed in chunks under the message limit) and describes itself.
Owns request validation, bounded concurrency (RESOURCE_EXHAUSTED beyond `max_streams` concurrent streams),
memory admission (swarm.model_server.serving.admission: each request priced as columns x tokens x states before it runs,
a per-request cap, a global budget and a bounded wait), micro-batched computation (`batch_columns` columns per
forward pass, so activations stay bounded however wide the request), deadline/cancellation checks before and
between batches and chunks (abandoned work stops), the copy-saving chunk serializer and graceful SIGTERM shutdown.
`swarm serve-specialist` runs it.

Cells: a request may bring the vectors of its cell texts (ColumnsRequest.cell_vectors: the annotation server sends
those it encoded, so each distinct cell is encoded once per swarm); they are validated (encoder, width, finite unit
vectors: INVALID_ARGUMENT otherwise) and taken instead of encoding. Texts without a vector (a specialist called
alone, or vectors over the message limit) are encoded here; the request is priced with them
(admission.specialist_cost). The store is a serving one (cell_vectors.configure_serving): bounded, nothing written
to disk unless `keep_cell_vectors_dir` (or $SWARM_KEEP_CELL_VECTORS_DIR) names a private directory. The last chunk's
StreamStats says how many texts the request had encoded here (`cells_encoded`) and how many vectors it brought.

Deadlines end work: before each batch's forward pass the cells it will read are held in the store and the missing
ones encoded (MiniLM, seconds for a batch of never-seen cells on a CPU) `ENCODE_CHUNK` texts at a time, and the
caller is checked (gone, or its deadline or the server's passed) before every chunk, before every forward pass
(also when a compute thread picks the pass up after waiting for one) and between chunks of the reply; a request
found abandoned is not computed further. Refusals follow grpc_runtime.Refused (RESOURCE_EXHAUSTED with a
`retry-after-ms` hint).

Every text is clipped to `text.MAX_SERIALIZED_CHARS` before it is parsed: no serialized column is longer (cells are
clipped and counted when serialized), so only a hand-written or hostile text is cut, and a multi-MB column no
longer costs seconds before it is refused or read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
import torch
from torch import Tensor

from swarm.model_server.model.cell_vectors import (
    DEFAULT_SERVING_CAPACITY,
    DIM,
    ENCODER,
    MAX_TEXT_CHARS,
    CellHold,
    CellVectorStore,
    EncodingAbandoned,
    configure_serving,
    keep_dir_from_env,
)
from swarm.model_server.model.column_encoder import SERVING_FEATURE_ROWS, feature_rows
from swarm.model_server.model.devices import DTYPES
from swarm.model_server.model.text import MAX_SERIALIZED_CHARS, parse_column, serialize_column
from swarm.model_server.serving import codec
from swarm.model_server.serving.admission import (
    Admission,
    AdmissionLimits,
    AdmissionRejected,
    ComputeThreads,
    GiB,
    machine_memory_bytes,
    specialist_cost,
)
from swarm.model_server.serving.grpc_runtime import (
    DEFAULT_RETRY_AFTER_MS,
    ManagedServer,
    MiB,
    Refused,
    ServerSecurity,
    service_handler,
)
from swarm.v1 import specialist_pb2 as pb

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["SpecialistService"]


class StateProducer(Protocol):
    """What the server serves: a frozen Specialist (or, in benchmarks, synthetic states: bench/synthetic_states.py)."""

    name: str
    dtype: torch.dtype

    def extract_states(self, columns: Sequence[str]) -> list[Tensor]: ...


CellVectorsGiven = tuple[list[str], Tensor] | None  # cell vectors a request brought: (keys, vectors)

# What the server reads once at start to learn its states' geometry: an empty column, which reads no cell (so no
# sentence encoder is loaded for it: a specialist sent the vectors of its cells never loads one).
PROBE_COLUMN = serialize_column([])
MAX_REQUEST_ID_CHARS = 128
ENCODE_CHUNK = 32  # cell texts encoded between two checks of the caller (~5 ms a never-seen text on a CPU)
_ABANDONED = object()  # what a compute task returns when its caller was gone before it started
DEFAULT_BUDGET_FRACTION = 0.25  # of the machine's (or the pod's) memory, when no budget is given


def default_memory_budget(fraction: float = DEFAULT_BUDGET_FRACTION) -> int:
    return int(machine_memory_bytes() * fraction)


@dataclass(frozen=True)
class ServerOptions:
    max_streams: int = 8
    max_columns: int = 4096
    max_message_bytes: int = 4 * MiB
    chunk_bytes: int = codec.DEFAULT_CHUNK_BYTES
    chunk_delay_s: float = 0.0  # test-only: sleep between chunks so a test can kill the server mid-stream
    wire_dtype: str | None = None  # cast states to this dtype before sending (e.g. bfloat16 halves the bytes)
    batch_columns: int = 64  # columns per forward pass
    compute_threads: int = 2  # threads that run the model (at most this many forward passes at once)
    memory_budget_bytes: int | None = None  # all running requests together; None: a quarter of the memory
    max_request_bytes: int = 1 * GiB  # one request's estimate
    max_queue_wait_s: float = 10.0  # longest wait for memory before RESOURCE_EXHAUSTED
    max_request_s: float = 300.0  # server-side deadline of one stream, whatever the client asked for
    retry_after_ms: int = DEFAULT_RETRY_AFTER_MS  # the retry hint of a busy server (RESOURCE_EXHAUSTED)
    security: ServerSecurity | None = None
    health_port: int | None = None  # also serve health alone, in plaintext, on this port (kubelet probes)
    cell_cache_capacity: int = DEFAULT_SERVING_CAPACITY  # cell texts held in memory (least recently used evicted)
    # Where encoded cells (client data: plaintext texts) may be written, 0700/0600; None: $SWARM_KEEP_CELL_VECTORS_DIR
    # or, unset, nowhere.
    keep_cell_vectors_dir: Path | None = None

    def admission_limits(self, max_len: int) -> AdmissionLimits:
        return AdmissionLimits(
            budget_bytes=self.memory_budget_bytes or default_memory_budget(),
            max_request_bytes=self.max_request_bytes,
            max_request_token_passes=self.max_columns * max_len,
            max_active=self.max_streams,
            max_queued=self.max_streams,
            max_wait_s=self.max_queue_wait_s,
            retry_after_ms=self.retry_after_ms,
        )


def _excerpt(text: str, limit: int = 64) -> str:
    """A client-supplied string safe to put in a status message: bounded, with its length when cut."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


class _Lease:
    """One slot of the concurrent-stream budget, released exactly once (stream end or RPC termination)."""

    def __init__(self, semaphore: threading.Semaphore) -> None:
        self._semaphore = semaphore
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._semaphore.release()


class SpecialistServicer:
    def __init__(
        self,
        source: StateProducer,
        options: ServerOptions,
        *,
        config: str = "",
        labels: Sequence[str] = (),
        untrained: bool = False,
    ) -> None:
        self.source = source
        self.options = options
        self.config = config
        self.labels = list(labels)
        self.untrained = untrained
        encode_decoder = getattr(source, "decoder_bytes", None)  # synthetic sources have none
        self._decoder = encode_decoder() if encode_decoder is not None else b""
        self._streams = threading.Semaphore(options.max_streams)
        # The model config (Specialist.config; synthetic sources: .cfg), for the clip and the activation estimate.
        self.model_config = getattr(source, "config", None) or getattr(source, "cfg", None)
        self.max_len = int(getattr(self.model_config, "max_len", 128))
        self.max_text_chars = MAX_SERIALIZED_CHARS
        cells = self._cells()
        if cells is not None:  # before the probe: a serving store writes nothing to the shared cache
            configure_serving(options.cell_cache_capacity, options.keep_cell_vectors_dir or keep_dir_from_env(),
                              target=cells)
        feature_rows().bound(SERVING_FEATURE_ROWS)
        self._probe = [t.detach() for t in source.extract_states([PROBE_COLUMN])]
        wire = DTYPES[options.wire_dtype] if options.wire_dtype else self._probe[0].dtype
        itemsize = max(torch.empty((), dtype=wire).element_size(), self._probe[0].element_size())
        self.state_bytes = sum(t[0].numel() for t in self._probe) * itemsize
        self.admission = Admission(options.admission_limits(self.max_len), what="request")
        self.compute = ComputeThreads(options.compute_threads, "specialist")

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeResponse:
        probe = self._probe
        _, heads, head_k, head_v = probe[0].shape
        return pb.DescribeResponse(
            specialist=self.source.name,
            config=self.config,
            num_layers=len(probe),
            num_heads=heads,
            head_k=head_k,
            head_v=head_v,
            dtype=codec.wire_dtype(
                DTYPES[self.options.wire_dtype] if self.options.wire_dtype else probe[0].dtype
            ),
            labels=self.labels,
            max_columns=self.options.max_columns,
            untrained=self.untrained,
            decoder_bytes=len(self._decoder),
            trained_tables=sorted(getattr(self.source, "trained_tables", ())),
        )

    def StreamDecoder(
        self, request: pb.DecoderRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DecoderChunk]:
        if not self._decoder:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"specialist {self.source.name!r} serves synthetic states: there is no decoder for them",
            )
        step = self.options.chunk_bytes
        for offset in range(0, len(self._decoder), step):
            yield pb.DecoderChunk(
                offset=offset, total_bytes=len(self._decoder), data=self._decoder[offset : offset + step]
            )

    def _validate(self, request: pb.ColumnsRequest, context: grpc.ServicerContext) -> None:
        """Bounds first (O(1) each), before anything walks the columns."""
        if len(request.request_id) > MAX_REQUEST_ID_CHARS:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request_id has {len(request.request_id)} characters; the limit is {MAX_REQUEST_ID_CHARS}",
            )
        if request.specialist and request.specialist != self.source.name:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"this server serves specialist {self.source.name!r}, not {_excerpt(request.specialist)}",
            )
        if not request.columns:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ColumnsRequest.columns is empty")
        if len(request.columns) > self.options.max_columns:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{len(request.columns)} columns in one request; the limit is {self.options.max_columns}",
            )

    def StreamStates(
        self, request: pb.ColumnsRequest, context: grpc.ServicerContext
    ) -> Iterator[codec.WireChunk]:
        self._validate(request, context)
        if not self._streams.acquire(blocking=False):
            Refused.busy(
                f"specialist {self.source.name!r} is serving its limit of {self.options.max_streams} concurrent "
                "streams", self.options.retry_after_ms,
            ).abort(context)
        lease = _Lease(self._streams)
        done = threading.Event()
        context.add_callback(done.set)
        context.add_callback(lease.release)
        try:
            yield from self._stream(request, context, done)
        finally:
            lease.release()

    def _deadline(self, context: grpc.ServicerContext) -> float:
        """The earlier of the client's deadline and the server's own limit, as a time.monotonic() instant."""
        remaining = context.time_remaining()
        limit = self.options.max_request_s if remaining is None else min(remaining, self.options.max_request_s)
        return time.monotonic() + limit

    @staticmethod
    def _check_alive(context: grpc.ServicerContext, deadline: float, stage: str) -> bool:
        """False when the client has gone (cancelled, or its deadline passed); aborts past the server's deadline."""
        if not context.is_active():
            return False
        if time.monotonic() >= deadline:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline passed {stage}")
        return True

    def _run_alive(self, context: grpc.ServicerContext, deadline: float, fn: Callable[..., object],
                   *args: object) -> object:
        """`fn(*args)` on a compute thread, unless the caller is gone or past its deadline by the time a thread is
        free (then _ABANDONED): a request queued behind others is not computed for nobody."""

        def task() -> object:
            if not context.is_active() or time.monotonic() >= deadline:
                return _ABANDONED
            return fn(*args)

        return self.compute.run(task)

    def _cells(self) -> CellVectorStore | None:
        """The source's cell-vector store (synthetic sources have none)."""
        store = getattr(getattr(self.source, "tokenizer", None), "cells", None)
        return store if isinstance(store, CellVectorStore) else None

    def _hold(self, texts: list[str], given: CellVectorsGiven, context: grpc.ServicerContext, deadline: float
              ) -> CellHold | None | object:
        """Hold the cells of `texts` in the source's store for one forward pass: vectors the caller sent are taken
        as they are, the others encoded ENCODE_CHUNK at a time with the caller checked before each chunk. None
        when the source has no store; _ABANDONED when the caller is gone."""
        store = self._cells()
        if store is None:
            return None

        def gone() -> bool:
            return not context.is_active() or time.monotonic() >= deadline

        try:
            held = self._run_alive(context, deadline, store.hold, codec.columns_cell_texts(texts), given, gone,
                                   ENCODE_CHUNK)
        except EncodingAbandoned:
            held = _ABANDONED
        if held is _ABANDONED:
            self._check_alive(context, deadline, "while encoding the cells")  # aborts past the server's deadline
        return held

    def _compute(self, texts: list[str], context: grpc.ServicerContext, deadline: float,
                 given: CellVectorsGiven = None, encoded: list[int] | None = None) -> list[Tensor] | None:
        """Per-layer states of every column, `batch_columns` at a time, in wire dtype on the host; None when the
        client went away (before or between the batches' encodings and forward passes: the rest is not
        computed). `given`: cell vectors the caller sent (keys, vectors); `encoded` gets the number of texts
        each batch had to encode."""
        out: list[Tensor] = []
        wire = DTYPES[self.options.wire_dtype] if self.options.wire_dtype is not None else None
        step = max(1, self.options.batch_columns)
        for start in range(0, len(texts), step):
            batch = texts[start : start + step]
            if not self._check_alive(context, deadline, "before computing the states"):
                return None
            held = self._hold(batch, given, context, deadline)
            if held is _ABANDONED:
                return None
            if isinstance(held, CellHold) and encoded is not None:
                encoded.append(held.encoded)
            try:
                states = self._run_alive(context, deadline, self.source.extract_states, batch)
            finally:
                if isinstance(held, CellHold):
                    held.release()
            if states is _ABANDONED:
                self._check_alive(context, deadline, "while computing the states")  # aborts past the deadline
                return None
            assert isinstance(states, list)
            for layer, state in enumerate(states):
                # Cast first (on the GPU: fewer bytes to copy), then one device-to-host copy per layer and batch.
                state = state.to(wire) if wire is not None else state
                if start == 0:
                    if len(texts) <= step:
                        out.append(state.cpu())
                        continue
                    out.append(torch.empty((len(texts), *state.shape[1:]), dtype=state.dtype))
                out[layer][start : start + len(state)].copy_(state)
            del states
        return out

    def _evidence(self, texts: Sequence[str]) -> list[str]:
        """Per column, what this specialist's knowledge sources found (none: no evidence at all)."""
        backbone = getattr(getattr(self.source, "model", None), "backbone", None)
        sources = getattr(backbone, "knowledge", ())
        if not sources:
            return []
        from swarm.model_server.model.knowledge.evidence import column_evidence

        return [column_evidence(sources, parse_column(text)[0]) for text in texts]

    def _given_vectors(self, request: pb.ColumnsRequest, context: grpc.ServicerContext) -> CellVectorsGiven:
        """The cell vectors sent with the request (validated; INVALID_ARGUMENT when malformed), or None."""
        if not request.HasField("cell_vectors") or self._cells() is None:
            return None
        try:
            keys, vectors = codec.read_cell_vectors(request.cell_vectors, ENCODER, DIM, MAX_TEXT_CHARS)
        except codec.CellVectorsError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"ColumnsRequest.cell_vectors: {exc}")
        return (keys, vectors) if keys else None

    def _unseen(self, texts: Sequence[str], given: CellVectorsGiven) -> list[str]:
        """The request's cell texts this server would have to encode itself (a lookup: what admission prices)."""
        store = self._cells()
        if store is None:
            return []
        sent = set(given[0]) if given is not None else set()
        return [t for t in store.unseen(codec.columns_cell_texts(texts)) if t not in sent]

    def _stream(
        self, request: pb.ColumnsRequest, context: grpc.ServicerContext, done: threading.Event
    ) -> Iterator[codec.WireChunk]:
        start = time.perf_counter()
        deadline = self._deadline(context)
        limit = self.max_text_chars
        texts = [t if len(t) <= limit else t[:limit] for t in request.columns]
        given = self._given_vectors(request, context)
        cost = specialist_cost(
            self.model_config, texts, self.state_bytes, self.options.batch_columns, self.max_len,
            vector_bytes=len(request.cell_vectors.data),
            unseen=self._unseen(texts, given), encode_batch=ENCODE_CHUNK,
        )
        try:
            lease = self.admission.admit(cost, deadline, lambda: not context.is_active())
        except AdmissionRejected as exc:
            if exc.code == grpc.StatusCode.CANCELLED:
                return
            exc.abort(context, prefix=f"specialist {self.source.name!r}: ")
        with lease:
            try:
                encoded: list[int] = []
                states = self._compute(texts, context, deadline, given, encoded)
            except Exception:
                # aborted on purpose (the server's deadline), not a failure. grpc's ServicerContext has code()
                # (grpcio >= 1.38); its type stubs lack it.
                if context.code() is not None:  # type: ignore[attr-defined]
                    raise
                log.exception("request %s: computing states failed", request.request_id)
                context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"specialist {self.source.name!r} failed to compute the states (see its log)",
                )
            if states is None:
                log.info("request %s: abandoned by the client; the rest was not computed", request.request_id)
                return
            computed = time.perf_counter()
            if not self._check_alive(context, deadline, "while computing the states"):
                return
            pieces = list(codec.iter_chunks(states, self.options.chunk_bytes))
            total_bytes = sum(len(d) for _, d in pieces)
            for i, (header, data) in enumerate(pieces):
                if not self._check_alive(context, deadline, "while streaming the states"):
                    log.info(
                        "request %s: stream ended by the client after %d/%d chunks",
                        request.request_id,
                        i,
                        len(pieces),
                    )
                    return
                # data stays empty here: serialize_chunk appends the tensor's bytes without copying them
                message = codec.to_message(header, b"", request_id=request.request_id, specialist=self.source.name)
                if i == len(pieces) - 1:
                    message.stats.CopyFrom(
                        pb.StreamStats(
                            steps=1,
                            compute_ms=(computed - start) * 1e3,
                            stream_ms=(time.perf_counter() - computed) * 1e3,
                            total_bytes=total_bytes,
                            evidence=self._evidence(texts),
                            cells_encoded=sum(encoded),
                            cells_given=len(given[0]) if given is not None else 0,
                        )
                    )
                yield codec.WireChunk(message, data)
                if self.options.chunk_delay_s and done.wait(self.options.chunk_delay_s):
                    return


def load_source(
    name: str,
    checkpoint_dir: Path | None = None,
    config: str = "tiny",
    dtype: str = "float32",
    device: str = "cpu",
) -> tuple[StateProducer, str, list[str], bool]:
    """(source, config name, labels, untrained?) for a specialist; warns loudly when weights are untrained."""
    from swarm.model_server.model.specialist import Specialist, domain_of, specialist_dir, untrained

    domain = domain_of(name)
    replica = name.partition("@")[2]  # an untrained replica gets its own seed
    if checkpoint_dir is not None:
        path = specialist_dir(checkpoint_dir, name)
        spec = Specialist.load(path, DTYPES[dtype], device)
        if spec.name != name:
            raise ValueError(f"{path} holds specialist {spec.name!r}, not {name!r}")
        return spec, spec.config.name, spec.labels, False
    log.warning(
        "!!! specialist %r has NO checkpoint: serving UNTRAINED %s weights (tests/smoke runs only); "
        "pass --checkpoint-dir to serve a trained one !!!",
        name,
        config,
    )
    base = untrained(domain.name, config, seed=int(replica or 0))
    spec = Specialist(name, base.model, DTYPES[dtype], device)
    return spec, config, spec.labels, True


def build_specialist_server(
    source: StateProducer,
    host: str = "127.0.0.1",
    port: int = 0,
    options: ServerOptions | None = None,
    *,
    config: str = "",
    labels: Sequence[str] = (),
    untrained: bool = False,
) -> ManagedServer:
    options = options or ServerOptions()
    servicer = SpecialistServicer(source, options, config=config, labels=labels, untrained=untrained)
    handler = service_handler(SERVICE, servicer, serializers={"StreamStates": codec.serialize_chunk})
    # Workers beyond the stream budget keep Describe, the decoder and over-limit rejections answerable (health
    # has threads of its own); gRPC itself refuses calls beyond a few times that.
    workers = options.max_streams + 4
    server = ManagedServer(
        [(SERVICE, handler)],
        host,
        port,
        max_workers=workers,
        max_message_bytes=options.max_message_bytes,
        security=options.security,
        health_port=options.health_port,
        max_rpcs=4 * workers,
        retry_after_ms=options.retry_after_ms,
    )
    server.servicer = servicer  # type: ignore[attr-defined]
    return server


def serve(
    name: str,
    port: int,
    host: str = "127.0.0.1",
    checkpoint_dir: Path | None = None,
    config: str = "tiny",
    dtype: str = "float32",
    device: str = "cpu",
    options: ServerOptions | None = None,
    grace_s: float = 10.0,
    ready_file: Path | None = None,
    torch_threads: int | None = None,
) -> None:
    """Load the specialist and serve it until SIGTERM/SIGINT (then drain in-flight streams for `grace_s`)."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    source, config_name, labels, is_untrained = load_source(name, checkpoint_dir, config, dtype, device)
    server = build_specialist_server(
        source, host, port, options, config=config_name, labels=labels, untrained=is_untrained
    )
    server.start()
    log.info("specialist %r (%s, %s on %s) serving on %s", name, config_name, dtype, device, server.address)
    server.serve_until_signalled(grace_s, ready_file)
    # Drained and stopped: skip interpreter teardown, which took seconds here (native thread pools of grpc,
    # torch and tokenizers), so that SIGTERM shutdowns finish well inside a pod's grace period.
    logging.shutdown()
    os._exit(0)

