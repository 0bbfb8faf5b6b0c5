"""swarm.client against real annotation servers on loopback (issue #29): degraded answers are visible, and calls
refused with a retry hint are retried with backoff, bounded by attempts and by the call's deadline; calls without
a hint (or with -1) are not."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence

import grpc
import pytest

from swarm.client import AnnotationError, Annotator
from swarm.model_server.serving.annotation_server import AnnotationLimits, AnnotationServer, build_annotation_server
from swarm.model_server.serving.launcher import LocalSwarm
from swarm.model_server.serving.primary_annotator import PrimaryAnnotator
from swarm.model_server.serving.specialist_client import SpecialistClient
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc

pytestmark = pytest.mark.timeout(120)

ROWS = [["2021-03-04", "Paris"], ["1999-12-31", "Rome"]]


def _dead_address() -> str:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


class HeldAnnotator:
    """The real annotator, whose `annotate` (the primary, run while the table holds its admission slot) waits
    until `release` is set."""

    def __init__(self, inner: PrimaryAnnotator) -> None:
        self.inner = inner
        self.specialist_names = inner.specialist_names
        self.model = inner.model
        self.release = threading.Event()

    def serialize(self, table: object) -> list[str]:
        return self.inner.serialize(table)  # type: ignore[arg-type]

    def route(self, table: object) -> dict[str, list[int]]:
        return self.inner.route(table)  # type: ignore[arg-type]

    def next_stage(self, *args: object) -> dict[str, list[int]]:
        return self.inner.next_stage(*args)  # type: ignore[arg-type]

    def annotate(self, *args: object) -> object:
        self.release.wait(60)
        return self.inner.annotate(*args)  # type: ignore[arg-type]


@pytest.fixture
def busy(client_swarm: LocalSwarm) -> Iterator[tuple[AnnotationServer, HeldAnnotator]]:
    """A server that runs one table at a time with no room to wait, hinting retries after 200 ms."""
    annotator = HeldAnnotator(client_swarm.annotator)  # type: ignore[arg-type]
    limits = AnnotationLimits(max_concurrent=1, max_queued=0, max_streams=1, retry_after_ms=200,
                              health_interval_s=0)
    server = build_annotation_server(annotator, client_swarm.client, limits=limits).start()  # type: ignore[arg-type]
    yield server, annotator
    annotator.release.set()
    server.stop(0)


def _occupy(server: AnnotationServer, annotator: HeldAnnotator) -> threading.Thread:
    """One table holding the server's only slot until `annotator.release` is set."""
    def annotate() -> None:
        with Annotator(server.address, timeout_s=60, max_retries=0) as client, contextlib.suppress(AnnotationError):
            client.annotate(ROWS)  # cancelled when a test stops the server first

    thread = threading.Thread(target=annotate, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while server.servicer.admission.stats()["active"] == 0:
        assert time.monotonic() < end, "the first table was never admitted"
        time.sleep(0.01)
    return thread


def _rejected(server: AnnotationServer) -> int:
    return server.servicer.admission.stats()["rejected"]


def test_a_degraded_answer_says_so(client_swarm: LocalSwarm, address: str) -> None:
    with Annotator(address, timeout_s=60) as client:
        assert not client.annotate(ROWS).degraded
    client = SpecialistClient({"temporal": client_swarm.addresses["temporal"], "geographic": _dead_address()})
    server = build_annotation_server(client_swarm.annotator, client,  # type: ignore[arg-type]
                                     limits=AnnotationLimits(health_interval_s=0)).start()
    try:
        with Annotator(server.address, timeout_s=60) as annotator:
            result = annotator.annotate(ROWS)
            (batch,) = annotator.annotate_many([ROWS])
    finally:
        server.stop(0)
        client.close()
    for answer in (result, batch):
        assert answer.degraded and answer.specialists_used == ("temporal",)
        assert [m.name for m in answer.specialists_missing] == ["geographic"]


def test_a_busy_server_is_retried_until_it_has_room(busy: tuple[AnnotationServer, HeldAnnotator]) -> None:
    server, annotator = busy
    first = _occupy(server, annotator)
    threading.Timer(0.8, annotator.release.set).start()
    start = time.monotonic()
    with Annotator(server.address, timeout_s=30, max_retries=20, backoff_s=0.05, max_backoff_s=0.3) as client:
        result = client.annotate(ROWS)
    assert len(result.columns) == 2 and time.monotonic() - start >= 0.7
    assert _rejected(server) >= 2  # refused while the first table ran, then retried with its hint
    first.join(30)


def test_retries_off_and_bounded_by_attempts(busy: tuple[AnnotationServer, HeldAnnotator]) -> None:
    server, annotator = busy
    _occupy(server, annotator)
    with Annotator(server.address, timeout_s=30, max_retries=0) as client, pytest.raises(AnnotationError) as off:
        client.annotate(ROWS)
    assert off.value.code == "RESOURCE_EXHAUSTED" and off.value.retry_after_ms == 200 and off.value.attempts == 1
    assert off.value.message.startswith("server busy: ")
    before = _rejected(server)
    start = time.monotonic()
    with (Annotator(server.address, timeout_s=30, max_retries=2, backoff_s=0.01) as client,
          pytest.raises(AnnotationError) as bounded):
        client.annotate(ROWS)
    elapsed = time.monotonic() - start
    assert bounded.value.code == "RESOURCE_EXHAUSTED" and bounded.value.attempts == 3
    assert _rejected(server) - before == 3
    assert 2 * 0.2 <= elapsed < 2 * 0.2 * 1.5 + 2.0  # two waits of at least the 200 ms hint, jittered up to 1.5x


def test_retries_stop_at_the_calls_deadline(busy: tuple[AnnotationServer, HeldAnnotator]) -> None:
    server, annotator = busy
    _occupy(server, annotator)
    start = time.monotonic()
    with (Annotator(server.address, timeout_s=1.0, max_retries=100, backoff_s=0.2) as client,
          pytest.raises(AnnotationError) as info):
        client.annotate(ROWS)
    elapsed = time.monotonic() - start
    assert info.value.code == "RESOURCE_EXHAUSTED" and 1 < info.value.attempts < 10
    assert elapsed < 1.0, f"retrying went {elapsed:.2f}s past a 1 s deadline"


def test_annotate_many_is_retried_when_the_streams_are_in_use(busy: tuple[AnnotationServer, HeldAnnotator]
                                                              ) -> None:
    server, annotator = busy
    annotator.release.set()
    opened = threading.Event()
    done = threading.Event()

    def idle() -> Iterator[apb.Table]:
        opened.set()
        done.wait(30)
        return
        yield  # a generator that sends no table

    channel = grpc.insecure_channel(server.address)
    holder = apb_grpc.AnnotationServiceStub(channel).AnnotateStream(idle(), timeout=60)
    assert opened.wait(10)
    time.sleep(0.2)  # the stream has its slot on the server
    with Annotator(server.address, timeout_s=30, max_retries=0) as client, pytest.raises(AnnotationError) as info:
        client.annotate_many([ROWS, ROWS])
    assert info.value.code == "RESOURCE_EXHAUSTED" and "AnnotateStream" in info.value.message
    threading.Timer(0.6, done.set).start()
    start = time.monotonic()
    with Annotator(server.address, timeout_s=30, max_retries=20, backoff_s=0.05) as client:
        results = client.annotate_many([ROWS, ROWS])
    assert [len(r.columns) for r in results] == [2, 2] and time.monotonic() - start >= 0.5
    assert list(holder) == []
    channel.close()


@pytest.mark.parametrize("case", ["too-large", "no-server", "invalid"])
def test_refusals_without_a_hint_are_not_retried(case: str, client_swarm: LocalSwarm, address: str) -> None:
    server = build_annotation_server(client_swarm.annotator, client_swarm.client,  # type: ignore[arg-type]
                                     limits=AnnotationLimits(max_columns=1, health_interval_s=0)).start()
    target = {"too-large": server.address, "no-server": _dead_address(), "invalid": address}[case]
    rows: Sequence[Sequence[str]] = [] if case == "invalid" else ROWS
    try:
        with Annotator(target, timeout_s=10, max_retries=5) as client, pytest.raises(AnnotationError) as info:
            client.annotate(rows)
    finally:
        server.stop(0)
    assert info.value.attempts == 1
    expected = {"too-large": ("RESOURCE_EXHAUSTED", -1), "no-server": ("UNAVAILABLE", None),
                "invalid": ("INVALID_ARGUMENT", None)}[case]
    assert (info.value.code, info.value.retry_after_ms) == expected


def test_a_server_requiring_its_specialists_is_retried_then_unavailable(client_swarm: LocalSwarm) -> None:
    client = SpecialistClient({"temporal": client_swarm.addresses["temporal"], "geographic": _dead_address()})
    limits = AnnotationLimits(require_specialists=True, retry_after_ms=50, health_interval_s=0)
    server = build_annotation_server(client_swarm.annotator, client, limits=limits).start()  # type: ignore[arg-type]
    try:
        with (Annotator(server.address, timeout_s=60, max_retries=2, backoff_s=0.01) as annotator,
              pytest.raises(AnnotationError) as info):
            annotator.annotate(ROWS)
    finally:
        server.stop(0)
        client.close()
    assert info.value.code == "UNAVAILABLE" and info.value.attempts == 3 and info.value.retry_after_ms == 50
    assert "geographic" in info.value.message and "require_specialists" in info.value.message
