"""Transport security (issue item 7): mTLS between the primary and the specialists (certificates from a folder laid
out like a cert-manager Secret), TLS plus a bearer token or client certificates for annotation clients, plaintext
health on a port of its own for kubelet probes. Test certificates come from `cryptography`, on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_serving_tools import Pki, make_pki

from swarm.model_server.serving.annotation_server import AnnotationLimits, build_annotation_server
from swarm.model_server.serving.grpc_runtime import (
    TLS_DIR_ENV,
    ClientTls,
    ManagedServer,
    ServerSecurity,
    TlsFiles,
    mtls_server_security,
    open_channel,
)
from swarm.model_server.serving.launcher import AnnotatorFactory, LocalSwarm, start_local_swarm
from swarm.model_server.serving.specialist_client import SpecialistClient
from swarm.model_server.serving.specialist_server import ServerOptions, build_specialist_server, load_source
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc
from swarm.v1 import specialist_pb2 as pb
from swarm.v1 import specialist_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(120)

COLUMNS = ["2021-03-04 | 1999-12-31", "Paris | Rome"]
TABLE = apb.Table(name="t", rows=[apb.Row(cells=["2021-03-04", "Paris"]), apb.Row(cells=["1999-12-31", "Rome"])])
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pytest.importorskip("cryptography", reason="test certificates need the `cryptography` package (dev extra)")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_specialist(pki: Pki) -> Iterator[ManagedServer]:
    options = ServerOptions(security=mtls_server_security(pki.server), health_port=0)
    server = build_specialist_server(load_source("temporal")[0], options=options).start()
    yield server
    server.stop(0)


@pytest.mark.parametrize(
    ("who", "delivered"),
    [("client", True), ("plaintext", False), ("no-certificate", False), ("stranger", False)],
)
def test_specialists_serve_only_mtls_clients_of_their_ca(
    pki: Pki, mtls_specialist: ManagedServer, who: str, delivered: bool
) -> None:
    tls = {
        "client": ClientTls.from_dir(pki.client),
        "plaintext": False,
        "no-certificate": ClientTls(ca=pki.ca),
        "stranger": ClientTls(ca=pki.ca, identity=TlsFiles.from_dir(pki.stranger)),
    }[who]
    with SpecialistClient({"temporal": mtls_specialist.address}, tls=tls, timeout_s=5) as client:  # type: ignore[arg-type]
        result = client.fetch({"temporal": COLUMNS})
    if delivered:
        assert not result.missing and len(result.states["temporal"][0]) == 2
    else:
        assert result.missing["temporal"].startswith("UNAVAILABLE"), result.missing


def test_health_is_also_served_alone_in_plaintext_for_probes(mtls_specialist: ManagedServer) -> None:
    assert mtls_specialist.health_address is not None
    channel = grpc.insecure_channel(mtls_specialist.health_address)
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="swarm.v1.SpecialistService"), timeout=5)
    assert reply.status == SERVING
    with pytest.raises(grpc.RpcError) as info:  # nothing but health on that port
        list(pb_grpc.SpecialistServiceStub(channel).StreamStates(pb.ColumnsRequest(columns=["x"]), timeout=5))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_tls_folder_without_its_files_is_an_error_not_plaintext(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="lacks tls.crt, tls.key"):
        TlsFiles.from_dir(tmp_path)
    (tmp_path / "tls.crt").write_text("x")
    (tmp_path / "tls.key").write_text("x")
    with pytest.raises(FileNotFoundError, match="lacks ca.crt"):
        mtls_server_security(tmp_path)
    with pytest.raises(ValueError, match="mTLS"):
        ServerSecurity(client_ca=tmp_path / "tls.crt")


@pytest.fixture(scope="module")
def secured_api(swarm: LocalSwarm, pki: Pki) -> Iterator[ManagedServer]:
    security = ServerSecurity(tls=TlsFiles.from_dir(pki.server), token="s3cret-token")
    server = build_annotation_server(swarm.annotator, swarm.client, limits=AnnotationLimits(health_interval_s=0),  # type: ignore[arg-type]
                                     security=security).start()
    yield server
    server.stop(0)


@pytest.mark.parametrize(
    ("channel_kind", "token", "code"),
    [
        ("tls", "s3cret-token", grpc.StatusCode.OK),
        ("tls", None, grpc.StatusCode.UNAUTHENTICATED),
        ("tls", "wrong", grpc.StatusCode.UNAUTHENTICATED),
        ("plaintext", "s3cret-token", grpc.StatusCode.UNAVAILABLE),
    ],
    ids=["token", "no-token", "wrong-token", "plaintext"],
)
def test_annotation_clients_need_tls_and_the_token(
    pki: Pki, secured_api: ManagedServer, channel_kind: str, token: str | None, code: grpc.StatusCode
) -> None:
    channel = open_channel(secured_api.address, tls=ClientTls(ca=pki.ca) if channel_kind == "tls" else None)
    stub = apb_grpc.AnnotationServiceStub(channel)
    metadata = [("authorization", f"Bearer {token}")] if token else None
    if code == grpc.StatusCode.OK:
        assert len(stub.Annotate(TABLE, timeout=60, metadata=metadata).columns) == 2
        return
    with pytest.raises(grpc.RpcError) as info:
        stub.Annotate(TABLE, timeout=10, metadata=metadata)
    assert info.value.code() == code
    if code == grpc.StatusCode.UNAUTHENTICATED:
        # Probes carry no token: health is exempt.
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == SERVING


def test_annotation_clients_can_be_required_to_present_certificates(swarm: LocalSwarm, pki: Pki) -> None:
    security = ServerSecurity(tls=TlsFiles.from_dir(pki.server), client_ca=pki.ca)
    server = build_annotation_server(swarm.annotator, swarm.client, limits=AnnotationLimits(health_interval_s=0),  # type: ignore[arg-type]
                                     security=security).start()
    try:
        with_cert = apb_grpc.AnnotationServiceStub(open_channel(server.address, tls=ClientTls.from_dir(pki.client)))
        assert len(with_cert.Annotate(TABLE, timeout=60).columns) == 2
        without = apb_grpc.AnnotationServiceStub(open_channel(server.address, tls=ClientTls(ca=pki.ca)))
        with pytest.raises(grpc.RpcError) as info:
            without.Annotate(TABLE, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


@pytest.mark.slow
def test_a_local_swarm_uses_mtls_when_the_folder_is_set(
    pki: Pki, annotator_factory: AnnotatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TLS_DIR_ENV, str(pki.peer))
    with start_local_swarm(["temporal"], annotator=annotator_factory, torch_threads=1) as swarm:
        reply = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(swarm.annotation_address)).Annotate(
            TABLE, timeout=60)
        assert list(reply.specialists_used) == ["temporal"]
        with SpecialistClient(swarm.addresses, tls=False, timeout_s=5) as plaintext:
            assert plaintext.fetch({"temporal": COLUMNS}).missing["temporal"].startswith("UNAVAILABLE")


def test_the_pod_environment_turns_on_mtls_and_the_health_port(pki: Pki, tmp_path: Path) -> None:
    """What a specialist pod gets from its template: SWARM_TLS_DIR (the mounted Secret) and SWARM_HEALTH_PORT."""
    ready = tmp_path / "ready.json"
    env = {**os.environ, TLS_DIR_ENV: str(pki.server), "SWARM_HEALTH_PORT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm.trainer.commands.cli", "serve-specialist", "--specialist", "temporal",
         "--port", "0", "--ready-file", str(ready), "--torch-threads", "1"],
        env=env, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "serve-specialist did not start"
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(info["health_address"]))
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
        with SpecialistClient({"temporal": info["address"]}, tls=ClientTls.from_dir(pki.client)) as client:
            assert not client.fetch({"temporal": COLUMNS}).missing
        with SpecialistClient({"temporal": info["address"]}, tls=False, timeout_s=5) as client:
            assert client.fetch({"temporal": COLUMNS}).missing["temporal"].startswith("UNAVAILABLE")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
