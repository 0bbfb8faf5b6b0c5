"""Never-seen cells on real servers (issue #29): served processes keep no client cells at rest unless the operator
names a private directory; the encoding of unseen cells is priced before it runs and refused like any table over
a cap; a cached table is answered while another table's cells are being encoded; a passed deadline stops the
annotation server's encoding. Loopback only."""

from __future__ import annotations

import stat
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import torch
from grpc_serving_tools import cli_swarm, novel_table

from swarm.model_server.model.cell_vectors import KEEP_ENV
from swarm.model_server.serving.admission import annotation_cost, encoding_cost
from swarm.model_server.serving.annotation_server import (
    ENCODING_MARGIN,
    AnnotationLimits,
    AnnotationServer,
    build_annotation_server,
    table_from_proto,
)
from swarm.model_server.serving.codec import columns_cell_texts
from swarm.model_server.serving.launcher import AnnotatorFactory, LocalSwarm
from swarm.model_server.serving.specialist_client import SpecialistClient
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc

pytestmark = pytest.mark.timeout(240)


def _files_with(folder: Path, needle: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.mark.parametrize("keep", [False, True], ids=["default", "kept"])
def test_served_processes_keep_client_cells_at_rest_only_when_asked(tmp_path: Path, keep: bool) -> None:
    cache, kept = tmp_path / "cache", tmp_path / "kept"
    env = {"SWARM_CACHE_DIR": str(cache), **({KEEP_ENV: str(kept)} if keep else {})}
    tag = uuid.uuid4().hex[:10]
    with cli_swarm(tmp_path, "--local", "temporal,geographic", "--config", "tiny", env=env) as swarm:
        stub = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(swarm.address))
        reply = stub.Annotate(novel_table(tag, columns=3, rows=4), timeout=120)
        assert len(reply.columns) == 3 and not reply.degraded
    assert not cache.exists() or not _files_with(cache, tag), "client cells written to the shared cache"
    if not keep:
        assert not kept.exists()
        return
    holding = _files_with(kept, tag)
    assert holding, "the operator asked for the encoded cells to be kept"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in kept.rglob("*") if p.is_file())


@pytest.fixture
def serve(swarm: LocalSwarm, annotator_factory: AnnotatorFactory
          ) -> Iterator[Callable[[AnnotationLimits], tuple[AnnotationServer, apb_grpc.AnnotationServiceStub]]]:
    """Start annotation servers (this process) with the given limits over the session swarm's specialists."""
    started: list[tuple[AnnotationServer, SpecialistClient, grpc.Channel]] = []

    def start(limits: AnnotationLimits) -> tuple[AnnotationServer, apb_grpc.AnnotationServiceStub]:
        client = SpecialistClient(dict(swarm.addresses), timeout_s=60)
        server = build_annotation_server(annotator_factory(sorted(swarm.addresses)), client, limits=limits).start()
        channel = grpc.insecure_channel(server.address)
        started.append((server, client, channel))
        return server, apb_grpc.AnnotationServiceStub(channel)

    yield start
    for server, client, channel in started:
        channel.close()
        server.stop(0)
        client.close()


def _slow_encoder(server: AnnotationServer, monkeypatch: pytest.MonkeyPatch, per_text_s: float) -> list[int]:
    """Make the server's MiniLM take `per_text_s` more per text (as on a busy CPU), still computing real vectors;
    the returned list gets the size of every batch it starts."""
    cells = server.servicer.cells
    real = cells._encode
    started: list[int] = []

    def slow(texts: Sequence[str]) -> torch.Tensor:
        started.append(len(texts))
        time.sleep(per_text_s * len(texts))
        return real(texts)

    monkeypatch.setattr(cells, "_encode", slow)
    return started


def test_unseen_cells_are_priced_before_they_are_encoded(
        serve: Callable[[AnnotationLimits], tuple[AnnotationServer, apb_grpc.AnnotationServiceStub]]) -> None:
    """A cap between the table's own price and its encoding's: refused while its cells are unseen (nothing
    encoded), answered once they are cached."""
    tag = uuid.uuid4().hex[:8]
    message = novel_table(tag + " " + "long value " * 8, columns=3, rows=12)
    probe, _ = serve(AnnotationLimits(health_interval_s=0))
    table = table_from_proto(message, AnnotationLimits())
    texts = probe.servicer.annotator.serialize(table)
    routed = len(table.columns) * len(probe.servicer.annotator.specialist_names)
    own = annotation_cost(probe.servicer.primary_cfg, texts, routed, probe.servicer.state_bytes,
                          message.ByteSize()).token_passes
    encoding = encoding_cost(columns_cell_texts(texts), len(table.columns), 64).token_passes
    assert encoding > own + 1
    server, stub = serve(AnnotationLimits(health_interval_s=0, max_request_token_passes=own + 1))
    before = server.servicer.cells.texts_encoded
    with pytest.raises(grpc.RpcError) as info:
        stub.Annotate(message, timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "token passes" in (info.value.details() or "")
    assert server.servicer.cells.texts_encoded == before  # refused before MiniLM ran
    server.servicer.cells.ids(columns_cell_texts(texts))  # now cached (this process's store is the server's)
    assert len(stub.Annotate(message, timeout=60).columns) == 3


def test_a_cached_table_is_answered_while_another_tables_cells_are_encoded(
        serve: Callable[[AnnotationLimits], tuple[AnnotationServer, apb_grpc.AnnotationServiceStub]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One table at a time (max_concurrent=1): a table waiting for the encoder holds no table slot."""
    server, stub = serve(AnnotationLimits(health_interval_s=0, max_concurrent=1))
    cached = novel_table(uuid.uuid4().hex[:8], columns=4, rows=5, name="cached")
    stub.Annotate(cached, timeout=120)  # its cells encoded once, here
    _slow_encoder(server, monkeypatch, per_text_s=0.05)
    novel = novel_table(uuid.uuid4().hex[:8], columns=12, rows=12, name="novel")  # ~190 texts: ~10 s to encode
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(stub.Annotate, novel, timeout=180)
        waited = time.monotonic() + 60
        while not server.servicer.cells._encoding and time.monotonic() < waited:  # the novel table's encoding
            time.sleep(0.02)
        latencies = []
        for _ in range(3):
            started = time.perf_counter()
            reply = stub.Annotate(cached, timeout=60)
            latencies.append(time.perf_counter() - started)
            assert not reply.degraded
        assert not slow.done(), "the novel table finished first: the test measured nothing"
        assert max(latencies) < 2.0, f"cached tables waited for another table's encoding: {latencies}"
        assert len(slow.result().columns) == 12


def test_a_passed_deadline_stops_the_annotation_servers_encoding(
        serve: Callable[[AnnotationLimits], tuple[AnnotationServer, apb_grpc.AnnotationServiceStub]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    server, stub = serve(AnnotationLimits(health_interval_s=0))
    stub.Annotate(novel_table(uuid.uuid4().hex[:8], columns=2, rows=2), timeout=120)  # MiniLM loaded
    started = _slow_encoder(server, monkeypatch, per_text_s=0.01)
    monkeypatch.setattr(server.servicer.cells, "encode_rate", lambda: None)  # not refused up front: started
    novel = novel_table(uuid.uuid4().hex[:8], columns=30, rows=12)
    total = len(server.servicer.cells.unseen(columns_cell_texts(
        server.servicer.annotator.serialize(table_from_proto(novel, AnnotationLimits())))))
    with pytest.raises(grpc.RpcError) as info:
        stub.Annotate(novel, timeout=1.0)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    settled = time.monotonic() + 60  # the batch under way when the deadline passed finishes, then nothing more
    while server.servicer.admission.stats()["in_use_bytes"] and time.monotonic() < settled:
        time.sleep(0.1)
    assert server.servicer.admission.stats()["in_use_bytes"] == 0
    time.sleep(1.0)  # anything still encoding for nobody would show here
    batch = server.servicer.cells.encode_batch
    assert total > 4 * batch and started, "the test measured nothing"
    assert sum(started) <= 2 * batch, f"{sum(started)} of {total} texts encoded for a caller that had gone"


def test_a_table_that_cannot_be_encoded_in_time_is_refused_up_front(
        serve: Callable[[AnnotationLimits], tuple[AnnotationServer, apb_grpc.AnnotationServiceStub]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """At the rate the server has measured (here: set to 20 texts/s), ~400 never-seen texts cannot be encoded in
    a 5 s deadline: DEADLINE_EXCEEDED at once, saying so, and nothing encoded; a small table still fits."""
    server, stub = serve(AnnotationLimits(health_interval_s=0))
    monkeypatch.setattr(server.servicer.cells, "encode_rate", lambda: 20.0)
    before = server.servicer.cells.texts_encoded
    started = time.perf_counter()
    with pytest.raises(grpc.RpcError) as info:
        stub.Annotate(novel_table(uuid.uuid4().hex[:8], columns=30, rows=12), timeout=5.0)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "never-seen cell texts" in (info.value.details() or "") and time.perf_counter() - started < 2.0
    assert server.servicer.cells.texts_encoded == before
    assert len(stub.Annotate(novel_table(uuid.uuid4().hex[:8], columns=2, rows=2), timeout=60).columns) == 2


def test_a_calibrated_server_refuses_an_unencodable_table_from_its_first_request(
        swarm: LocalSwarm, annotator_factory: AnnotatorFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """`calibrate_encoder` (what `swarm up` and serve-annotation set) measures the encoder's rate at start, so the
    very first table of never-seen cells that cannot be encoded before its deadline is refused at once, instead of
    being encoded until its deadline passes (what an uncalibrated server, with no rate yet, did)."""
    client = SpecialistClient(dict(swarm.addresses), timeout_s=60)
    server = build_annotation_server(annotator_factory(sorted(swarm.addresses)), client,
                                     limits=AnnotationLimits(health_interval_s=0, calibrate_encoder=True))
    cells = server.servicer.cells
    monkeypatch.setattr(cells, "texts_encoded", 0)  # nothing measured before: the process's store may be shared
    monkeypatch.setattr(cells, "encode_s", 0.0)
    _slow_encoder(server, monkeypatch, per_text_s=0.05)  # at most 20 texts/s
    server.start()
    channel = grpc.insecure_channel(server.address)
    try:
        rate = cells.encode_rate()
        assert rate is not None and rate < 20.5
        stub = apb_grpc.AnnotationServiceStub(channel)
        before, started = cells.texts_encoded, time.perf_counter()
        with pytest.raises(grpc.RpcError) as info:
            stub.Annotate(novel_table(uuid.uuid4().hex[:8], columns=30, rows=12), timeout=5.0)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "refused up front" in (info.value.details() or "") and time.perf_counter() - started < 2.0
        assert cells.texts_encoded == before
    finally:
        channel.close()
        server.stop(0)
        client.close()


def test_the_server_learns_the_specialists_pace_from_what_they_answer(
        serve: Callable[[AnnotationLimits], tuple[AnnotationServer, apb_grpc.AnnotationServiceStub]]) -> None:
    """After a table the specialists answered, a stage asking for far more columns than the base timeout covers at
    that pace gets a longer timeout (admission.SpecialistPace), still within the table's deadline."""
    server, stub = serve(AnnotationLimits(health_interval_s=0))
    pace, base = server.servicer.pace, server.servicer.limits.specialist_timeout_s
    assert pace.timeout_s(100_000, base, 600.0) == base  # nothing learnt yet
    reply = stub.Annotate(novel_table(uuid.uuid4().hex[:8], columns=3, rows=2), timeout=120)
    assert len(reply.columns) == 3 and not reply.specialists_missing
    assert base < pace.timeout_s(100_000, base, 600.0) <= 600.0
    assert pace.timeout_s(3, base, 600.0) == base


def test_a_table_behind_other_tables_encoding_is_refused_when_it_cannot_make_its_deadline(
        serve: Callable[[AnnotationLimits], tuple[AnnotationServer, apb_grpc.AnnotationServiceStub]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoder is one thread: a table's never-seen cells wait for those other tables queued first. A table
    that alone would be encoded in time, but not behind another one's texts, is refused up front, saying so."""
    server, stub = serve(AnnotationLimits(health_interval_s=0))
    stub.Annotate(novel_table(uuid.uuid4().hex[:8], columns=2, rows=2), timeout=120)  # MiniLM loaded
    _slow_encoder(server, monkeypatch, per_text_s=0.05)
    monkeypatch.setattr(server.servicer.cells, "encode_rate", lambda: 20.0)  # what the slow encoder does

    def unseen(message: apb.Table) -> int:
        texts = server.servicer.annotator.serialize(table_from_proto(message, AnnotationLimits()))
        return len(server.servicer.cells.unseen(columns_cell_texts(texts)))

    first, second = (novel_table(uuid.uuid4().hex[:8], columns=4, rows=8) for _ in range(2))
    alone = ENCODING_MARGIN * unseen(second) / 20.0  # what the check wants left for the second table alone
    assert alone > 1.0  # so that the deadline below leaves room for it alone, not behind the first
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(stub.Annotate, first, timeout=120)
        end = time.monotonic() + 10
        while not server.servicer._backlog and time.monotonic() < end:
            time.sleep(0.02)
        assert server.servicer._backlog, "the first table never reached the encoder"
        started = time.perf_counter()
        with pytest.raises(grpc.RpcError) as info:
            stub.Annotate(second, timeout=alone + 1.0)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.perf_counter() - started < 1.0
        assert "behind" in (info.value.details() or "")
        assert len(running.result().columns) == 4
