"""Fan-out client for specialist servers: ask N specialists for their states concurrently and reassemble them.

One thread per specialist per call (the work is I/O-bound; gRPC releases the GIL while waiting). UNAVAILABLE
is retried with bounded exponential backoff inside the call's deadline; any other failure (a specialist dying
mid-stream, a deadline, a malformed stream) drops that specialist only: the result lists it as missing with
the reason, and the caller annotates with whatever arrived.
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
from torch import Tensor

from swarm.model_server.codec import StateAssembler, StateCodecError, WireChunk, parse_received_chunk
from swarm.model_server.grpc_runtime import MiB, channel_options
from swarm.v1 import specialist_pb2 as pb
from swarm.v1 import specialist_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

ChunkHook = Callable[[str, WireChunk], None]
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
    missing: dict[str, str] = field(default_factory=dict)  # name -> why no states arrived
    bytes_received: int = 0
    wall_ms: float = 0.0


class SpecialistFailure(Exception):
    """Why one specialist delivered no states (kept as the 'missing' reason)."""


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
    ) -> None:
        if reuse_freed_memory:
            keep_freed_memory_for_reuse()
        self.addresses = dict(addresses)
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.on_chunk = on_chunk  # observability/test hook, called for every chunk received
        self._channels = {
            name: grpc.insecure_channel(addr, options=channel_options(max_message_bytes))
            for name, addr in self.addresses.items()
        }
        # StreamStates with the copy-saving chunk parser instead of the generated stub's generic one.
        self._stubs = {
            name: ch.unary_stream(
                _STREAM_STATES,
                request_serializer=pb.ColumnsRequest.SerializeToString,
                response_deserializer=parse_received_chunk,
            )
            for name, ch in self._channels.items()
        }
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, len(self.addresses)) * max_concurrent_fetches, thread_name_prefix="fanout"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for channel in self._channels.values():
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
        self, columns: Mapping[str, Sequence[str]], request_id: str = "", timeout_s: float | None = None
    ) -> FanOutResult:
        """States of each named specialist for its column texts, fetched concurrently within one deadline."""
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
            jobs[name] = self._pool.submit(self._fetch_one, name, list(texts), request_id, deadline)
        for name, job in jobs.items():
            try:
                states, steps, nbytes = job.result()
            except SpecialistFailure as exc:
                log.warning("request %s: specialist %s missing: %s", request_id, name, exc)
                result.missing[name] = str(exc)
                continue
            result.states[name], result.steps[name] = states, steps
            result.bytes_received += nbytes
        result.wall_ms = (time.perf_counter() - start) * 1e3
        return result

    def _fetch_one(
        self, name: str, texts: list[str], request_id: str, deadline: float
    ) -> tuple[list[Tensor], int, int]:
        request = pb.ColumnsRequest(request_id=request_id, columns=texts, specialist=name)
        delays = self.retry.delays()
        for attempt in range(self.retry.attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SpecialistFailure(f"deadline passed before attempt {attempt + 1}")
            try:
                return self._stream_once(name, request, remaining)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
                if code != grpc.StatusCode.UNAVAILABLE or attempt == len(delays):
                    raise SpecialistFailure(f"{code.name}: {details} (attempt {attempt + 1})") from None
                pause = min(delays[attempt], max(0.0, deadline - time.monotonic()))
                log.info("specialist %s UNAVAILABLE (%s); retrying in %.2fs", name, details, pause)
                time.sleep(pause)
            except StateCodecError as exc:
                raise SpecialistFailure(f"malformed state stream: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _stream_once(
        self, name: str, request: pb.ColumnsRequest, timeout_s: float
    ) -> tuple[list[Tensor], int, int]:
        assembler = StateAssembler(f"specialist {name}")
        call = self._stubs[name](request, timeout=timeout_s)
        try:
            for chunk in call:
                assembler.add(chunk)
                if self.on_chunk is not None:
                    self.on_chunk(name, chunk)
            states = assembler.result()
        except StateCodecError:
            call.cancel()
            raise
        if len(states[0]) != len(request.columns):
            raise StateCodecError(
                f"specialist {name}: {len(states[0])} state rows for {len(request.columns)} columns"
            )
        assert assembler.stats is not None
        return states, assembler.stats.steps, assembler.bytes_received
