"""The specialist gRPC server (swarm.v1.SpecialistService): a frozen specialist streaming its layer states.

Serves its states and its state decoder (each streamed in chunks under the message limit) and describes itself.
Owns request validation, bounded concurrency (RESOURCE_EXHAUSTED beyond `max_streams` concurrent streams),
deadline/cancellation checks between chunks, the copy-saving chunk serializer and graceful SIGTERM shutdown.
`python -m swarm.model_server.specialist_server --specialist NAME --port P` runs it (so does `swarm serve-specialist`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
import torch
from torch import Tensor

from swarm.model_server import codec
from swarm.model_server.devices import DTYPES
from swarm.model_server.grpc_runtime import ManagedServer, MiB, service_handler
from swarm.v1 import specialist_pb2 as pb

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["SpecialistService"]


class StateProducer(Protocol):
    """What the server serves: a frozen Specialist (or, in benchmarks, synthetic states: bench/synthetic_states.py)."""

    name: str
    dtype: torch.dtype

    def extract_states(self, columns: Sequence[str]) -> list[Tensor]: ...


@dataclass(frozen=True)
class ServerOptions:
    max_streams: int = 8
    max_columns: int = 4096
    max_message_bytes: int = 4 * MiB
    chunk_bytes: int = codec.DEFAULT_CHUNK_BYTES
    chunk_delay_s: float = 0.0  # test-only: sleep between chunks so a test can kill the server mid-stream
    wire_dtype: str | None = None  # cast states to this dtype before sending (e.g. bfloat16 halves the bytes)


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

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeResponse:
        probe = self.source.extract_states(["describe"])
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
        if request.specialist and request.specialist != self.source.name:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"this server serves specialist {self.source.name!r}, not {request.specialist!r}",
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
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"specialist {self.source.name!r} is serving its limit of {self.options.max_streams} "
                "concurrent streams; retry later",
            )
        lease = _Lease(self._streams)
        done = threading.Event()
        context.add_callback(done.set)
        context.add_callback(lease.release)
        try:
            yield from self._stream(request, context, done)
        finally:
            lease.release()

    def _stream(
        self, request: pb.ColumnsRequest, context: grpc.ServicerContext, done: threading.Event
    ) -> Iterator[codec.WireChunk]:
        start = time.perf_counter()
        try:
            states = self.source.extract_states(list(request.columns))
        except Exception as exc:
            log.exception("request %s: computing states failed", request.request_id)
            context.abort(grpc.StatusCode.INTERNAL, f"specialist {self.source.name!r} failed: {exc}")
        if self.options.wire_dtype is not None:
            states = [s.to(DTYPES[self.options.wire_dtype]) for s in states]
        # Cast first (on the GPU: fewer bytes to copy), then one device-to-host copy per layer for the wire.
        states = [s.cpu() for s in states]
        computed = time.perf_counter()
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while computing the states")
        pieces = list(codec.iter_chunks(states, self.options.chunk_bytes))
        for i, (header, data) in enumerate(pieces):
            if not context.is_active():  # cancelled by the client, or its deadline passed
                log.info(
                    "request %s: stream ended by the client after %d/%d chunks",
                    request.request_id,
                    i,
                    len(pieces),
                )
                return
            message = pb.StateChunk(
                request_id=request.request_id,
                specialist=self.source.name,
                layer=header.layer,
                num_layers=header.num_layers,
                dtype=header.dtype,
                shape=header.shape,
                offset=header.offset,
                layer_nbytes=header.layer_nbytes,
            )
            if i == len(pieces) - 1:
                message.stats.CopyFrom(
                    pb.StreamStats(
                        steps=1,
                        compute_ms=(computed - start) * 1e3,
                        stream_ms=(time.perf_counter() - computed) * 1e3,
                        total_bytes=sum(len(d) for _, d in pieces),
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
    from swarm.model_server.specialist import Specialist, domain_of, specialist_dir, untrained

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
    **describe: object,
) -> ManagedServer:
    options = options or ServerOptions()
    servicer = SpecialistServicer(source, options, **describe)
    handler = service_handler(SERVICE, servicer, serializers={"StreamStates": codec.serialize_chunk})
    # Extra workers beyond the stream budget keep health checks and over-limit rejections answerable.
    return ManagedServer(
        [(SERVICE, handler)],
        host,
        port,
        max_workers=options.max_streams + 4,
        max_message_bytes=options.max_message_bytes,
    )


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

