"""Plumbing every swarm gRPC server shares: handlers built from the proto descriptors, health, reflection,
loopback-friendly channel options, transport security, readiness reporting and graceful SIGTERM shutdown.

Handlers are built here rather than with the generated `add_*_to_server` so that a request that fails to parse
(proto3 rejects strings that are not valid UTF-8) becomes INVALID_ARGUMENT instead of gRPC's generic INTERNAL
"Exception deserializing request!", and so a service can pass its own response serializer.

Health is served by its own two threads, never by the worker pool: however many long calls occupy the workers,
`grpc.health.v1.Health/Check` answers at once (a Kubernetes probe must not time out because the server is busy).
It can also be served on a second, plaintext port (`health_port`) that carries nothing but health: kubelet gRPC
probes cannot speak TLS.

Transport security (`ServerSecurity`): without it a server listens in plaintext, which is the loopback default (a
local swarm on 127.0.0.1). With `tls` it serves TLS from PEM files (cert-manager's Secret layout: `tls.crt`,
`tls.key`, `ca.crt`); with `client_ca` it also requires client certificates signed by that CA (mTLS); with `token`
every call but health must carry `authorization: Bearer <token>` (UNAUTHENTICATED otherwise). A server bound to
an address that is not loopback without TLS logs a warning (the CLI refuses to start one without `--insecure`).

Refusals (`Refused`): every RESOURCE_EXHAUSTED the servers send has one message shape, `busy(...)` ("server busy:
...; retry after N ms ...") or `too_large(...)` ("too large: ...; <what to send instead> ..."), and trailing metadata
`retry-after-ms` (RETRY_AFTER_KEY): milliseconds to wait before retrying, or -1 (NO_RETRY) when the same call cannot
succeed. That includes the limit on calls in flight (`max_rpcs`): it is counted here, by the worker pool, and
refused by an interceptor in that shape; gRPC's own limit ("Concurrent RPC limit exceeded!", no metadata, and not
interceptable: gRPC sends it whatever the interceptors return) stays only as a backstop at twice that.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Self

import grpc
from google.protobuf import descriptor, message_factory
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)

MiB = 1 << 20

RETRY_AFTER_KEY = "retry-after-ms"  # trailing metadata of a refusal: ms to wait before retrying, or NO_RETRY
NO_RETRY = -1
DEFAULT_RETRY_AFTER_MS = 1000
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: localhost, 127.0.0.0/8, ::1."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def busy(detail: str, retry_after_ms: int, alternative: str = "") -> str:
    """The message of a RESOURCE_EXHAUSTED that waiting can clear (`detail`: what is in use)."""
    return (f"server busy: {detail}; retry after {retry_after_ms} ms with backoff{alternative} "
            f"({RETRY_AFTER_KEY} {retry_after_ms})")


def too_large(detail: str, remedy: str) -> str:
    """The message of a RESOURCE_EXHAUSTED that no retry of the same call can clear (`detail`: what was over which
    limit; `remedy`: what to send instead)."""
    return f"too large: {detail}; {remedy} (retrying it unchanged cannot succeed: {RETRY_AFTER_KEY} {NO_RETRY})"


class Refused(Exception):
    """A call the server refuses: its status code, a message fit for the client and, for RESOURCE_EXHAUSTED and
    a server's own UNAVAILABLE, the retry hint sent as `retry-after-ms` trailing metadata."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_ms = retry_after_ms

    @classmethod
    def busy(cls, detail: str, retry_after_ms: int, alternative: str = "") -> Self:
        return cls(grpc.StatusCode.RESOURCE_EXHAUSTED, busy(detail, retry_after_ms, alternative), retry_after_ms)

    @classmethod
    def too_large(cls, detail: str, remedy: str) -> Self:
        return cls(grpc.StatusCode.RESOURCE_EXHAUSTED, too_large(detail, remedy), NO_RETRY)

    def abort(self, context: grpc.ServicerContext, suffix: str = "", prefix: str = "") -> NoReturn:
        abort(context, self.code, f"{prefix}{self}{suffix}", self.retry_after_ms)


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str,
          retry_after_ms: int | None = None) -> NoReturn:
    """End the call with `code` and `message`, with the retry hint in the trailing metadata when there is one."""
    if retry_after_ms is not None:
        context.set_trailing_metadata(((RETRY_AFTER_KEY, str(retry_after_ms)),))
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort raises


# HTTP/2 SETTINGS_MAX_FRAME_SIZE each side advertises (the default is 16 KiB): a multi-MB state chunk then
# travels as one DATA frame instead of hundreds, which cut ~20% of the CPU per 38 MB state stream here.
MAX_FRAME_BYTES = 4 * MiB


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Message limits both ways; large HTTP/2 frames; no SO_REUSEPORT (two servers must never share a port);
    quick reconnects, so a client's own UNAVAILABLE retries reach a restarted server instead of waiting out
    gRPC's 1 s+ backoff."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.http2.max_frame_size", MAX_FRAME_BYTES),
        ("grpc.so_reuseport", 0),
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.min_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


@dataclass(frozen=True)
class UndecodableRequest:
    """Stands in for a request message that failed to parse; the handler turns it into INVALID_ARGUMENT."""

    type_name: str
    error: str


def _tolerant_parser(cls: type[Message]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return UndecodableRequest(cls.DESCRIPTOR.full_name, str(exc))

    return parse


def _reject(context: grpc.ServicerContext, bad: UndecodableRequest, position: str = "") -> None:
    context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"cannot parse {bad.type_name}{position}: {bad.error} "
        "(string fields must be valid UTF-8; send binary data as bytes)",
    )


def _checked_requests(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    for i, request in enumerate(requests):
        if isinstance(request, UndecodableRequest):
            _reject(context, request, f" (message {i} of the stream)")
        yield request


def _wrap(method: Callable[..., Any], client_streaming: bool) -> Callable[..., Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        if client_streaming:
            return method(_checked_requests(request, context), context)
        if isinstance(request, UndecodableRequest):
            _reject(context, request)
        return method(request, context)

    return handler


_HANDLER_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def service_handler(
    service: descriptor.ServiceDescriptor,
    servicer: object,
    serializers: dict[str, Callable[[Any], bytes]] | None = None,
) -> grpc.GenericRpcHandler:
    """A generic handler for every method of `service`, implemented by the servicer's same-named methods."""
    handlers = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        kind = _HANDLER_KINDS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = kind(
            _wrap(getattr(servicer, method.name), method.client_streaming),
            request_deserializer=_tolerant_parser(request_cls),
            response_serializer=(serializers or {}).get(method.name, response_cls.SerializeToString),
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


# ---------------------------------------------------------------------------------------------------------------
# Transport security

TLS_DIR_ENV = "SWARM_TLS_DIR"  # this process's certificate, key and the CA of its peers (specialists, primaries)
TLS_SERVER_NAME_ENV = "SWARM_TLS_SERVER_NAME"  # optional: the name to verify in the specialists' certificates
CERT_FILE, KEY_FILE, CA_FILE = "tls.crt", "tls.key", "ca.crt"  # cert-manager's Secret layout
HEALTH_PREFIX = "/grpc.health.v1.Health/"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: a certificate chain and its key, and optionally a CA bundle (to verify the peer)."""

    cert: Path
    key: Path
    ca: Path | None = None

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str]) -> TlsFiles:
        """`tls.crt`, `tls.key` and (when present) `ca.crt` of a folder, e.g. a mounted kubernetes.io/tls Secret.
        A folder without the certificate or key is an error, never a silent fallback to plaintext."""
        folder = Path(directory)
        missing = [name for name in (CERT_FILE, KEY_FILE) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"TLS folder {folder} lacks {', '.join(missing)}")
        ca = folder / CA_FILE
        return cls(folder / CERT_FILE, folder / KEY_FILE, ca if ca.is_file() else None)

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes() if self.ca else None


@dataclass(frozen=True)
class ServerSecurity:
    """How a server authenticates itself and its callers. All None: plaintext, anyone may call (loopback)."""

    tls: TlsFiles | None = None
    client_ca: Path | None = None  # require client certificates signed by this CA (mTLS)
    token: str | None = None  # require `authorization: Bearer <token>` on every call but health

    def __post_init__(self) -> None:
        if self.client_ca is not None and self.tls is None:
            raise ValueError("client certificates (mTLS) need the server's own TLS certificate and key")
        if self.token is not None and not self.token.strip():
            raise ValueError("an empty authentication token")

    @property
    def insecure(self) -> bool:
        return self.tls is None

    def credentials(self) -> grpc.ServerCredentials:
        assert self.tls is not None
        cert, key, _ = self.tls.read()
        ca = self.client_ca.read_bytes() if self.client_ca is not None else None
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def read_token(path: str | os.PathLike[str]) -> str:
    """A bearer token from a file (a mounted Secret): its content without surrounding whitespace."""
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"{path}: the token file is empty")
    return token


def mtls_server_security(tls_dir: str | os.PathLike[str]) -> ServerSecurity:
    """A server of the swarm's internal traffic (a specialist): its certificate, and client certificates required,
    signed by the folder's CA."""
    files = TlsFiles.from_dir(tls_dir)
    if files.ca is None:
        raise FileNotFoundError(f"TLS folder {tls_dir} lacks {CA_FILE}: mTLS needs the CA of the callers")
    return ServerSecurity(tls=files, client_ca=files.ca)


@dataclass(frozen=True)
class ClientTls:
    """How a client reaches TLS servers: the CA that signed them, optionally its own certificate (mTLS) and the
    name to expect in their certificates (when it differs from the host it dials)."""

    ca: Path | None = None
    identity: TlsFiles | None = None
    server_name: str | None = None

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str], server_name: str | None = None) -> ClientTls:
        files = TlsFiles.from_dir(directory)
        return cls(ca=files.ca, identity=files, server_name=server_name)

    @classmethod
    def from_env(cls) -> ClientTls | None:
        """`$SWARM_TLS_DIR` (and `$SWARM_TLS_SERVER_NAME`) when set, else None (plaintext)."""
        directory = os.environ.get(TLS_DIR_ENV)
        if not directory:
            return None
        return cls.from_dir(directory, os.environ.get(TLS_SERVER_NAME_ENV) or None)

    def credentials(self) -> grpc.ChannelCredentials:
        cert = key = None
        if self.identity is not None:
            cert, key, _ = self.identity.read()
        ca = self.ca.read_bytes() if self.ca is not None else None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def open_channel(address: str, options: Sequence[tuple[str, Any]] = (), tls: ClientTls | None = None) -> grpc.Channel:
    """A channel to `address`: TLS when `tls` is given, else plaintext."""
    if tls is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, tls.credentials(), options=[*options, *tls.options()])


class _TokenAuth(grpc.ServerInterceptor):
    """UNAUTHENTICATED for every call but health that lacks `authorization: Bearer <token>`."""

    def __init__(self, token: str, pool: futures.ThreadPoolExecutor) -> None:
        self._expected = f"Bearer {token}".encode()
        self._pool = pool

    def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX):
            return handler
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(given).encode(), self._expected):
            return handler
        return _refusing(handler, Refused(grpc.StatusCode.UNAUTHENTICATED,
                                          "missing or wrong bearer token (authorization metadata)"), self._pool)


class _CountingPool(futures.ThreadPoolExecutor):
    """The worker pool, counting the calls gRPC handed it that have not finished (queued or running): the number
    gRPC's own `maximum_concurrent_rpcs` compares, but readable by an interceptor."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._count_lock = threading.Lock()
        self.in_flight = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future:
        with self._count_lock:
            self.in_flight += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._finished()
            raise
        future.add_done_callback(lambda _future: self._finished())
        return future

    def _finished(self) -> None:
        with self._count_lock:
            self.in_flight -= 1


class _CallLimit(grpc.ServerInterceptor):
    """RESOURCE_EXHAUSTED, in the servers' one refusal shape with a retry hint, for a call arriving while `limit`
    calls are in the worker pool. Interceptors run on gRPC's polling thread, one call at a time, before the call
    is handed to the pool, so the count cannot be overtaken; the refusal runs on a pool of its own."""

    def __init__(self, workers: _CountingPool, limit: int, retry_after_ms: int,
                 pool: futures.ThreadPoolExecutor) -> None:
        self._workers = workers
        self._limit = limit
        self._retry_after_ms = retry_after_ms
        self._pool = pool

    def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX) or self._workers.in_flight < self._limit:
            return handler
        refusal = Refused.busy(f"the server has its limit of {self._limit} calls in flight", self._retry_after_ms)
        return _refusing(handler, refusal, self._pool)


def _refusing(handler: grpc.RpcMethodHandler, refusal: Refused,
              pool: futures.ThreadPoolExecutor) -> grpc.RpcMethodHandler:
    """A handler of the same kind that only refuses, on `pool` (so a refusal never queues behind busy workers)."""

    def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
        refusal.abort(context)

    refuse.experimental_thread_pool = pool  # type: ignore[attr-defined]
    kind = _HANDLER_KINDS[(handler.request_streaming, handler.response_streaming)]
    return kind(refuse, request_deserializer=None, response_serializer=None)


def _health_handler(servicer: health.HealthServicer, pool: futures.ThreadPoolExecutor) -> grpc.GenericRpcHandler:
    """Health's Check and Watch, run on `pool` (gRPC's per-method thread pool) instead of the worker pool."""

    def check(request: Any, context: grpc.ServicerContext) -> Any:
        return servicer.Check(request, context)

    def watch(request: Any, context: grpc.ServicerContext, send_response_callback: Any = None) -> Any:
        return servicer.Watch(request, context, send_response_callback)

    check.experimental_thread_pool = pool  # type: ignore[attr-defined]
    watch.experimental_thread_pool = pool  # type: ignore[attr-defined]
    watch.experimental_non_blocking = True  # type: ignore[attr-defined]
    request = health_pb2.HealthCheckRequest.FromString
    response = health_pb2.HealthCheckResponse.SerializeToString
    return grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {
            "Check": grpc.unary_unary_rpc_method_handler(check, request, response),
            "Watch": grpc.unary_stream_rpc_method_handler(watch, request, response),
        },
    )


class ManagedServer:
    """A grpc.Server with health checking and reflection, bound to host:port (0 picks a free port).

    `max_workers` threads run the services' calls; health runs on two threads of its own. `max_rpcs` bounds the
    calls in the worker pool at once (queued or running); more are refused with RESOURCE_EXHAUSTED and a retry
    hint of `retry_after_ms` (see Refused), on two threads of their own."""

    HEALTH_THREADS = 2
    REFUSAL_THREADS = 2

    def __init__(
        self,
        services: list[tuple[descriptor.ServiceDescriptor, grpc.GenericRpcHandler]],
        host: str,
        port: int,
        max_workers: int,
        max_message_bytes: int,
        security: ServerSecurity | None = None,
        health_port: int | None = None,
        max_rpcs: int | None = None,
        retry_after_ms: int = DEFAULT_RETRY_AFTER_MS,
    ) -> None:
        security = security or ServerSecurity()
        self.security = security
        self._health_pool = futures.ThreadPoolExecutor(self.HEALTH_THREADS, thread_name_prefix="health")
        self._refusal_pool = futures.ThreadPoolExecutor(self.REFUSAL_THREADS, thread_name_prefix="refuse")
        workers = _CountingPool(max_workers, "grpc-worker")
        self.workers = workers
        interceptors: list[grpc.ServerInterceptor] = []
        if security.token:
            interceptors.append(_TokenAuth(security.token, self._refusal_pool))
        if max_rpcs is not None:
            interceptors.append(_CallLimit(workers, max_rpcs, retry_after_ms, self._refusal_pool))
        self.server = grpc.server(
            workers,
            options=channel_options(max_message_bytes),
            interceptors=interceptors,
            # A backstop only: the refusals above count in gRPC's own number too, and a flood of them must not
            # make gRPC refuse in its own shape first.
            maximum_concurrent_rpcs=None if max_rpcs is None else 2 * max_rpcs + 16,
        )
        self.health = health.HealthServicer()
        self.server.add_generic_rpc_handlers((_health_handler(self.health, self._health_pool),))
        for _, handler in services:
            self.server.add_generic_rpc_handlers((handler,))
        self.service_names = [desc.full_name for desc, _ in services]
        reflection.enable_server_reflection(
            (
                *self.service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        if security.insecure:
            if not is_loopback(host) and security.token:
                log.warning(
                    "serving %s on %s WITHOUT TLS: the bearer token and every table travel in plaintext, so anyone "
                    "on the network path can read them and replay the token",
                    ", ".join(self.service_names),
                    host,
                )
            elif not is_loopback(host):
                log.warning(
                    "serving %s on %s WITHOUT TLS or authentication: anyone who can reach this address may call it",
                    ", ".join(self.service_names),
                    host,
                )
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        else:
            self.port = self.server.add_secure_port(f"{host}:{port}", security.credentials())
        if self.port == 0:
            raise OSError(f"cannot bind {host}:{port}")
        self.address = f"{host}:{self.port}"
        # Health alone, in plaintext, on a port of its own (kubelet gRPC probes speak no TLS).
        self.health_server: grpc.Server | None = None
        self.health_address: str | None = None
        if health_port is not None:
            self.health_server = grpc.server(self._health_pool, options=channel_options(64 << 10))
            self.health_server.add_generic_rpc_handlers((_health_handler(self.health, self._health_pool),))
            bound = self.health_server.add_insecure_port(f"{host}:{health_port}")
            if bound == 0:
                raise OSError(f"cannot bind the health port {host}:{health_port}")
            self.health_address = f"{host}:{bound}"
        self._stopped = threading.Event()

    def _set_health(self, status: int) -> None:
        for name in ("", *self.service_names):
            self.health.set(name, status)

    def set_health(self, service: str, serving: bool) -> None:
        """Report one service (or any other name a probe may ask for) SERVING or NOT_SERVING."""
        self.health.set(
            service,
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING,
        )

    def start(self) -> ManagedServer:
        self.server.start()
        if self.health_server is not None:
            self.health_server.start()
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        return self

    def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, refuse new RPCs, let in-flight ones finish for `grace_s`, then cancel them."""
        if self._stopped.is_set():
            return
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace_s).wait()
        if self.health_server is not None:
            self.health_server.stop(0).wait()
        self._health_pool.shutdown(wait=False, cancel_futures=True)
        self._refusal_pool.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()

    def serve_until_signalled(self, grace_s: float, ready_file: Path | None = None) -> None:
        """Block until SIGTERM/SIGINT, then drain in-flight streams for up to `grace_s` (main thread only)."""

        def on_signal(signum: int, _frame: object) -> None:
            log.info(
                "received %s: draining in-flight RPCs for up to %.1fs", signal.Signals(signum).name, grace_s
            )
            threading.Thread(target=self.stop, args=(grace_s,), daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if ready_file is not None:
            write_ready_file(ready_file, self.address, health_address=self.health_address)
        # Wake regularly: a blocking wait can keep CPython from running the signal handler for a long time.
        while not self._stopped.wait(0.2):
            pass
        log.info("server on %s stopped", self.address)


def write_ready_file(path: Path, address: str, **extra: object) -> None:
    """Atomically publish the bound address, so a parent that asked for port 0 learns the real port."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps({"address": address, "pid": os.getpid(), **extra}), encoding="utf-8")
    tmp.replace(path)


def read_ready_file(path: Path) -> str | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))["address"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def wait_serving(address: str, timeout_s: float, service: str = "", tls: ClientTls | None = None) -> None:
    """Block until the server's health check says SERVING; raises TimeoutError otherwise."""
    with open_channel(address, tls=tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        end = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < end:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                last = exc.code().name
            time.sleep(0.05)
    raise TimeoutError(f"{address} not SERVING after {timeout_s:.0f}s (last: {last})")
