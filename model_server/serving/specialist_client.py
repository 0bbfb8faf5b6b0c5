"""Fan-out client for specialist servers: ask N specialists for their states concurrently and reassemble them.

One thread per specialist per call (the work is I/O-bound; gRPC releases the GIL while waiting). UNAVAILABLE
is retried with bounded exponential backoff inside the call's deadline; any other failure (a specialist dying
mid-stream, a deadline, a malformed stream) drops that specialist only: the result lists it as missing with
the reason, and the caller annotates with whatever arrived. A `Cancellation` passed to `fetch` cancels every
stream still in flight (the annotation server fires it when its own client goes away), so specialists stop
working for a caller that is gone.

Missing reasons are meant for the caller's client: a status code name and a short fixed phrase, never the
transport's details (they name internal addresses); the details go to the log. TLS: `tls` (default:
`$SWARM_TLS_DIR`, see grpc_runtime.ClientTls) makes every channel TLS, with this process's certificate for mTLS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from torch import Tensor

from swarm.model_server.serving.codec import StateAssembler, StateCodecError, WireChunk, parse_received_chunk
from swarm.model_server.serving.grpc_runtime import ClientTls, MiB, channel_options, open_channel
from swarm.v1 import specialist_pb2 as pb
from swarm.v1 import specialist_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

ChunkHook = Callable[[str, WireChunk], None]
# (a specialist's column texts, the bytes left for them in its request) -> the cell vectors to send, or None
VectorSource = Callable[[Sequence[str], int], "pb.CellVectors | None"]
REQUEST_HEADROOM = 64 << 10  # bytes of a request kept free for its other fields
_STREAM_STATES = "/swarm.v1.SpecialistService/StreamStates"


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_malloc_lock = threading.Lock()
_malloc_tuned: bool | None = None


def keep_freed_memory_for_reuse(mmap_threshold: int = 32 * MiB, trim_threshold: int = 256 * MiB) -> bool:
    """Make glibc malloc reuse freed multi-MB blocks instead of handing them back to the OS (once per process).

    gRPC Python materialises every received message as fresh bytes objects on its completion-queue thread
    and its transport reads into fresh buffers. With glibc's default *dynamic* thresholds, blocks of a few MB
    come from mmap or from a thread-arena heap whose top is trimmed again after each request, so every page of
    every message is faulted in anew: measured here, ~6,400 minor page faults and ~20 ms of client CPU per
    38 MB state stream (more than the copies themselves). Fixed thresholds keep up to `trim_threshold` of
    freed heap per arena in the process; blocks above `mmap_threshold` (32 MiB, glibc's maximum) still use
    mmap. Returns whether the thresholds are set (False off glibc, e.g. musl or macOS).
    """
    global _malloc_tuned
    with _malloc_lock:
        if _malloc_tuned is None:
            _malloc_tuned = False
            name = ctypes.util.find_library("c")
            try:
                libc = ctypes.CDLL(name) if name else None
                mallopt = libc.mallopt if libc is not None else None
            except (OSError, AttributeError):
                mallopt = None
            if mallopt is not None:
                _malloc_tuned = bool(
                    mallopt(_M_MMAP_THRESHOLD, mmap_threshold) and mallopt(_M_TRIM_THRESHOLD, trim_threshold)
                )
        return _malloc_tuned


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for UNAVAILABLE: attempts in total, first delay, growth, cap."""

    attempts: int = 4
    initial_s: float = 0.05
    multiplier: float = 2.0
    max_s: float = 1.0

    def delays(self) -> list[float]:
        return [min(self.initial_s * self.multiplier**i, self.max_s) for i in range(self.attempts - 1)]


@dataclass
class FanOutResult:
    states: dict[str, list[Tensor]] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    # name -> per column routed to it, what its knowledge sources found ("" none; empty list: it has no sources)
    evidence: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # name -> why no states arrived
    bytes_received: int = 0
    wall_ms: float = 0.0


class SpecialistFailure(Exception):
    """Why one specialist delivered no states (kept as the 'missing' reason)."""


MAX_REASON_CHARS = 200

# What a caller is told about a failed stream, per status code (the details stay in the log).
_REASONS = {
    grpc.StatusCode.UNAVAILABLE: "specialist unreachable or stopped mid-stream",
    grpc.StatusCode.DEADLINE_EXCEEDED: "no complete answer within the deadline",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "specialist over its limits (busy, or the request too large for it)",
    grpc.StatusCode.CANCELLED: "the request was cancelled",
    grpc.StatusCode.UNAUTHENTICATED: "specialist refused the credentials",
    grpc.StatusCode.PERMISSION_DENIED: "specialist refused the credentials",
}


def _reason(code: grpc.StatusCode, attempt: int) -> str:
    return f"{code.name}: {_REASONS.get(code, 'specialist failed')} (attempt {attempt})"


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


class Cancellation:
    """Cancels the fan-out's in-flight streams, at once and for any stream that starts afterwards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: set[grpc.RpcContext] = set()
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            calls, self._calls = self._calls, set()
        for call in calls:
            call.cancel()

    def track(self, call: grpc.RpcContext) -> bool:
        """Track a call until `untrack`; False (and the call cancelled) when already cancelled."""
        with self._lock:
            if not self.cancelled:
                self._calls.add(call)
                return True
        call.cancel()
        return False

    def untrack(self, call: grpc.RpcContext) -> None:
        with self._lock:
            self._calls.discard(call)


class SpecialistClient:
    """Persistent channels to named specialist servers; `fetch` fans one request out to several of them."""

    def __init__(
        self,
        addresses: Mapping[str, str],
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        max_message_bytes: int = 4 * MiB,
        on_chunk: ChunkHook | None = None,
        max_concurrent_fetches: int = 4,
        reuse_freed_memory: bool = True,
        tls: ClientTls | None | bool = True,
        max_request_bytes: int | None = None,
    ) -> None:
        """`tls`: a ClientTls, False/None for plaintext, True (default) for `$SWARM_TLS_DIR` when set;
        `max_request_bytes`: the largest request sent (default `max_message_bytes`), cell vectors included."""
        if reuse_freed_memory:
            keep_freed_memory_for_reuse()
        self.tls = ClientTls.from_env() if tls is True else (tls or None)
        self.addresses: dict[str, str] = {}
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.on_chunk = on_chunk  # observability/test hook, called for every chunk received
        self._max_message_bytes = max_message_bytes
        self._max_request_bytes = max_request_bytes or max_message_bytes
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, grpc.UnaryStreamMultiCallable] = {}
        for name, address in addresses.items():
            self.set_address(name, address)
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, len(self.addresses)) * max_concurrent_fetches, thread_name_prefix="fanout"
        )

    def set_address(self, name: str, address: str) -> None:
        """(Re)point specialist `name` at `address` (a restarted local specialist may come back on a new port)."""
        with self._lock:
            if self.addresses.get(name) == address and name in self._channels:
                return
        channel = open_channel(address, channel_options(self._max_message_bytes), self.tls)
        # StreamStates with the copy-saving chunk parser instead of the generated stub's generic one.
        stub = channel.unary_stream(
            _STREAM_STATES,
            request_serializer=pb.ColumnsRequest.SerializeToString,
            response_deserializer=parse_received_chunk,
        )
        with self._lock:
            old = self._channels.get(name)
            self.addresses[name] = address
            self._channels[name], self._stubs[name] = channel, stub
        if old is not None:
            old.close()

    def check_health(self, name: str, timeout_s: float = 1.0) -> bool:
        """Whether specialist `name` answers its health check with SERVING within `timeout_s`."""
        with self._lock:
            channel = self._channels.get(name)
        if channel is None:
            return False
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="swarm.v1.SpecialistService"), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            channels = list(self._channels.values())
        for channel in channels:
            channel.close()

    def __enter__(self) -> SpecialistClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, pb.DescribeResponse]:
        """Each specialist server's Describe: geometry, labels and the size of its state decoder."""
        return {
            name: pb_grpc.SpecialistServiceStub(channel).Describe(pb.DescribeRequest(), timeout=self.timeout_s)
            for name, channel in self._channels.items()
        }

    def decoder(self, name: str) -> bytes:
        """The specialist's state decoder (safetensors), streamed in chunks under the message limit. Raises
        SpecialistFailure when the server has none (synthetic states) or its chunks do not add up."""
        stub = pb_grpc.SpecialistServiceStub(self._channels[name])
        received = bytearray()
        total: int | None = None
        try:
            for chunk in stub.StreamDecoder(pb.DecoderRequest(), timeout=self.timeout_s):
                if chunk.offset != len(received) or total not in (None, chunk.total_bytes):
                    raise SpecialistFailure(
                        f"specialist {name}: decoder chunk at offset {chunk.offset} (of {chunk.total_bytes} bytes) "
                        f"after {len(received)} bytes (of {total})"
                    )
                total = chunk.total_bytes
                received += chunk.data
        except grpc.RpcError as exc:
            raise SpecialistFailure(f"specialist {name}: {exc.code().name}: {exc.details()}") from None
        if total is None or len(received) != total:
            raise SpecialistFailure(f"specialist {name}: decoder stream ended at {len(received)} of {total} bytes")
        return bytes(received)

    def fetch(
        self,
        columns: Mapping[str, Sequence[str]],
        request_id: str = "",
        timeout_s: float | None = None,
        cancellation: Cancellation | None = None,
        cell_vectors: VectorSource | None = None,
    ) -> FanOutResult:
        """States of each named specialist for its column texts, fetched concurrently within one deadline;
        `cancellation` ends every stream still in flight when fired. `cell_vectors` gives each request the cell
        vectors the caller already has (within the message limit: the specialist encodes any others itself)."""
        start = time.perf_counter()
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.timeout_s)
        result = FanOutResult()
        jobs = {}
        for name, texts in columns.items():
            if not texts:
                continue
            if name not in self._stubs:
                result.missing[name] = "no address configured for this specialist"
                continue
            jobs[name] = self._pool.submit(self._fetch_one, name, list(texts), request_id, deadline, cancellation,
                                           cell_vectors)
        for name, job in jobs.items():
            try:
                states, steps, nbytes, evidence = job.result()
            except SpecialistFailure as exc:
                result.missing[name] = _bounded(str(exc))
                continue
            result.states[name], result.steps[name], result.evidence[name] = states, steps, evidence
            result.bytes_received += nbytes
        result.wall_ms = (time.perf_counter() - start) * 1e3
        return result

    def _request(self, name: str, texts: list[str], request_id: str, cell_vectors: VectorSource | None
                 ) -> pb.ColumnsRequest:
        request = pb.ColumnsRequest(request_id=request_id, columns=texts, specialist=name)
        if cell_vectors is not None:
            room = self._max_request_bytes - request.ByteSize() - REQUEST_HEADROOM
            vectors = cell_vectors(texts, room) if room > 0 else None
            if vectors is not None and vectors.texts:
                request.cell_vectors.CopyFrom(vectors)
        return request

    def _fetch_one(
        self, name: str, texts: list[str], request_id: str, deadline: float, cancellation: Cancellation | None,
        cell_vectors: VectorSource | None = None,
    ) -> tuple[list[Tensor], int, int, list[str]]:
        request = self._request(name, texts, request_id, cell_vectors)
        delays = self.retry.delays()
        for attempt in range(self.retry.attempts):
            remaining = deadline - time.monotonic()
            if cancellation is not None and cancellation.cancelled:
                raise SpecialistFailure(_reason(grpc.StatusCode.CANCELLED, attempt + 1))
            if remaining <= 0:
                raise SpecialistFailure(f"DEADLINE_EXCEEDED: deadline passed before attempt {attempt + 1}")
            try:
                return self._stream_once(name, request, remaining, cancellation)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
                log.warning(
                    "request %s: specialist %s: %s: %s (attempt %d)", request_id, name, code.name, details, attempt + 1
                )
                if code != grpc.StatusCode.UNAVAILABLE or attempt == len(delays):
                    raise SpecialistFailure(_reason(code, attempt + 1)) from None
                pause = min(delays[attempt], max(0.0, deadline - time.monotonic()))
                time.sleep(pause)
            except StateCodecError as exc:
                log.warning("request %s: specialist %s: malformed state stream: %s", request_id, name, exc)
                raise SpecialistFailure(f"malformed state stream: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _stream_once(
        self, name: str, request: pb.ColumnsRequest, timeout_s: float, cancellation: Cancellation | None
    ) -> tuple[list[Tensor], int, int, list[str]]:
        assembler = StateAssembler(f"specialist {name}")
        with self._lock:
            stub = self._stubs[name]
        call = stub(request, timeout=timeout_s)
        if cancellation is not None and not cancellation.track(call):
            raise SpecialistFailure(_reason(grpc.StatusCode.CANCELLED, 1))
        try:
            for chunk in call:
                assembler.add(chunk)
                if self.on_chunk is not None:
                    self.on_chunk(name, chunk)
            states = assembler.result()
        except StateCodecError:
            call.cancel()
            raise
        finally:
            if cancellation is not None:
                cancellation.untrack(call)
        if len(states[0]) != len(request.columns):
            raise StateCodecError(
                f"specialist {name}: {len(states[0])} state rows for {len(request.columns)} columns"
            )
        assert assembler.stats is not None
        evidence = list(assembler.stats.evidence)
        if evidence and len(evidence) != len(request.columns):
            raise StateCodecError(f"specialist {name}: evidence for {len(evidence)} of {len(request.columns)} columns")
        return states, assembler.stats.steps, assembler.bytes_received, evidence
