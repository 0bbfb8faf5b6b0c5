"""Serving side of spawning on Kubernetes: a specialist the orchestrator routes columns to but that is not running
(unreachable, or without an address) is asked from its SpecialistPool through the servicer's demand publisher, the
table degrades meanwhile and the reply says the specialist was requested; once the specialist is up, it is used.

The publisher here is a fake that records the demand (model_server/serving/demand.py's own tests, against an
emulated API server, are in tests/operator/test_demand.py); in the last test it plays the operator and starts the
specialist."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable

import grpc
import pytest
import torch

from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.orchestrator import OrchestratorPolicy, domain_masks_for
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.tables import Table, load_labels
from swarm.model_server.serving.annotation_server import AnnotationLimits, build_annotation_server
from swarm.model_server.serving.demand import REQUESTED, DemandPublisher
from swarm.model_server.serving.primary_annotator import PrimaryAnnotator
from swarm.model_server.serving.specialist_client import SpecialistClient
from swarm.model_server.serving.specialist_server import build_specialist_server, load_source
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc

pytestmark = pytest.mark.timeout(120)

SPECIALISTS = ["temporal", "geographic", "numeric"]
WANTED = "numeric"  # the one specialist the policy routes every column to
ROWS = [["2021-03-04", "Paris", "12.5 kg"], ["1999-12-31", "Rome", "3 kg"], ["2000-01-01", "Oslo", "7 kg"]]
LIMITS = AnnotationLimits(health_interval_s=0)


class FakePublisher:
    """Records demand; `on_demand` runs on each call (the operator's part in the last test)."""

    def __init__(self, on_demand: Callable[[list[str]], None] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.on_demand = on_demand
        self.closed = False

    def demand(self, names: Iterable[str]) -> set[str]:
        asked = sorted(names)
        self.calls.append(asked)
        if self.on_demand is not None:
            self.on_demand(asked)
        return set(asked)

    def close(self) -> None:
        self.closed = True


def _table() -> apb.Table:
    return apb.Table(name="t", rows=[apb.Row(cells=row) for row in ROWS])


def _policy_annotator() -> PrimaryAnnotator:
    """A primary whose (untrained) policy routes every column to WANTED only, with no deep stage."""
    torch.manual_seed(0)
    primary = PrimaryModel(get_config("tiny"), load_labels(), "gated", SPECIALISTS).eval()
    policy = OrchestratorPolicy(primary.specialists, domain_masks_for(primary), primary.cfg.d_model, max_deep=2)
    names = primary.specialists
    with torch.no_grad():
        for module in (policy.complexity_head, policy.route_head, policy.deep_head[-1]):
            module.weight.zero_()
        policy.complexity_head.bias.copy_(torch.tensor([0.0, 10.0] + [0.0] * (len(names) - 1)))  # k = 1
        policy.route_head.bias.copy_(torch.tensor([10.0 if n == WANTED else -10.0 for n in names]))
        stop = torch.full((len(names) + 2,), -10.0)
        stop[len(names) + 1] = 0.0  # the stop action, after one per specialist and "all of them"
        policy.deep_head[-1].bias.copy_(stop)
    return PrimaryAnnotator(primary, policy=policy.eval())


def _annotate(annotator: PrimaryAnnotator, client: SpecialistClient, publisher: FakePublisher | None
              ) -> tuple[apb.Annotation, DemandPublisher | FakePublisher]:
    server = build_annotation_server(annotator, client, limits=LIMITS, publisher=publisher).start()  # type: ignore[arg-type]
    try:
        with grpc.insecure_channel(server.address) as channel:
            reply = apb_grpc.AnnotationServiceStub(channel).Annotate(_table(), timeout=60)
    finally:
        server.stop(1.0)
    return reply, server.servicer.publisher


def test_a_cold_specialist_the_policy_wants_is_requested_from_its_pool() -> None:
    """Only the specialist the plan routed columns to is asked for (the others are not configured either, but the
    policy did not want them); the table degrades to the primary alone and says why."""
    annotator = _policy_annotator()
    alone = annotator.annotate(Table("t", tuple(zip(*ROWS, strict=True))), {}, {})
    publisher = FakePublisher()
    with SpecialistClient({WANTED: "127.0.0.1:1"}, timeout_s=5.0) as client:  # nothing listens there
        reply, used = _annotate(annotator, client, publisher)
    assert publisher.calls == [[WANTED]]
    (missing,) = reply.specialists_missing
    assert missing.name == WANTED
    assert missing.reason.startswith("UNAVAILABLE: ") and missing.reason.endswith(f"; cold, {REQUESTED}")
    assert [c.label for c in reply.columns] == alone.labels and list(reply.specialists_used) == []
    assert used is publisher and publisher.closed  # the server closes its publisher when it stops


def test_without_an_address_it_is_requested_too() -> None:
    annotator = PrimaryAnnotator.untrained([WANTED, "temporal"])  # no policy: both read every column
    publisher = FakePublisher()
    with SpecialistClient({WANTED: "127.0.0.1:1"}, timeout_s=5.0) as client:
        reply, _ = _annotate(annotator, client, publisher)
    assert publisher.calls == [[WANTED, "temporal"]]  # one stage, one call
    reasons = {m.name: m.reason for m in reply.specialists_missing}
    assert reasons["temporal"] == f"no address configured for this specialist; cold, {REQUESTED}"
    assert reasons[WANTED].endswith(REQUESTED)


def test_outside_a_cluster_nothing_is_requested(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default publisher comes from the environment: without SWARM_POOL_NAME it does nothing, and the reply
    does not claim a request was made."""
    monkeypatch.delenv("SWARM_POOL_NAME", raising=False)
    with SpecialistClient({WANTED: "127.0.0.1:1"}, timeout_s=5.0) as client:
        reply, used = _annotate(PrimaryAnnotator.untrained([WANTED]), client, None)
    assert isinstance(used, DemandPublisher) and not used.enabled
    (missing,) = reply.specialists_missing
    assert missing.reason.startswith("UNAVAILABLE: ") and REQUESTED not in missing.reason


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_requested_specialist_is_used_once_it_is_up() -> None:
    """Degraded while the specialist starts (the fake publisher starts it when asked, as the operator would scale
    its Deployment up), then used: the client's channel reconnects by itself."""
    port = _free_port()
    started: list[object] = []

    def scale_up(names: list[str]) -> None:
        if WANTED in names and not started:
            source, config, labels, untrained = load_source(WANTED)
            started.append(
                build_specialist_server(
                    source, port=port, config=config, labels=labels, untrained=untrained
                ).start()
            )

    publisher = FakePublisher(scale_up)
    annotator = PrimaryAnnotator.untrained([WANTED])
    client = SpecialistClient({WANTED: f"127.0.0.1:{port}"}, timeout_s=10.0)
    server = build_annotation_server(annotator, client, limits=LIMITS, publisher=publisher).start()  # type: ignore[arg-type]
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = apb_grpc.AnnotationServiceStub(channel)
            first = stub.Annotate(_table(), timeout=60)
            assert [m.name for m in first.specialists_missing] == [WANTED] and started
            assert first.specialists_missing[0].reason.endswith(REQUESTED)
            deadline = time.monotonic() + 30
            reply = stub.Annotate(_table(), timeout=60)
            while reply.specialists_missing and time.monotonic() < deadline:
                time.sleep(0.2)
                reply = stub.Annotate(_table(), timeout=60)
    finally:
        server.stop(1.0)
        client.close()
        for specialist in started:
            specialist.stop(0.5)  # type: ignore[attr-defined]
    assert list(reply.specialists_used) == [WANTED] and not reply.specialists_missing
    assert [list(c.specialists) for c in reply.columns] == [[WANTED]] * 3
    assert publisher.calls[0] == [WANTED] and all(call == [WANTED] for call in publisher.calls)
