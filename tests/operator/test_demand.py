"""Spawning on Kubernetes: the annotation service's demand for cold specialists (model_server/serving/demand.py)
reaches its SpecialistPool as the `swarm.ai/demand` annotation, which the operator (operator/pool.py) turns into claims
admitted within the GPU memory budget after the warm set and the jobs' claims; expired demand scales back to zero after
the pool's idle timeout; malformed demand is ignored with a condition, never a crashed reconcile."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from status_conditions import find_condition

from swarm.model_server.choices import DEMAND_ANNOTATION, GROUP
from swarm.model_server.serving import demand as demand_module
from swarm.model_server.serving.demand import DemandPublisher, annotate_requested, is_cold, merged_demand
from swarm.operator import budget
from swarm.operator.builders import specialist_object_name
from swarm.operator.kube import DEPLOYMENTS, POOLS
from swarm.operator.models import ConditionReason, ConditionType, SpecialistPoolSpec
from swarm.operator.pool import DEMAND_JOB, Claim, demand_claims, demand_condition, parse_demand, plan
from swarm.testing.emulator import EmulatedCluster, OperatorProcess, pool_body, wait_for

NS = "swarm"
GIB = 1 << 30
NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
NAMES = {"a", "b", "c", "d"}
A, B, C = (specialist_object_name("pool", n) for n in "abc")  # the pool fixture's Deployments
pytestmark = pytest.mark.timeout(60)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------- parsing
def test_parse_demand_reads_times_per_specialist() -> None:
    raw = json.dumps({"b": _iso(NOW - timedelta(seconds=5)), "c": "2025-01-01T13:00:00+01:00"})
    demand, problems = parse_demand(raw, NAMES, NOW)
    assert problems == []
    assert demand == {"b": NOW - timedelta(seconds=5), "c": NOW}  # offsets are converted to UTC
    assert parse_demand(None, NAMES, NOW) == ({}, []) and parse_demand("  ", NAMES, NOW) == ({}, [])
    # A little in the future (clock skew between the service and the operator) counts as now.
    assert parse_demand(json.dumps({"b": _iso(NOW + timedelta(seconds=30))}), NAMES, NOW) == ({"b": NOW}, [])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("[]", "not a JSON object of specialist -> time (a JSON array)"),
        ("null", "not a JSON object of specialist -> time (a JSON null)"),
        ("42", "not a JSON object of specialist -> time (a JSON number)"),
        ('"b"', "not a JSON object of specialist -> time (a JSON string)"),
        ("{not json", "not JSON (Expecting property name enclosed in double quotes)"),
    ],
)
def test_parse_demand_ignores_a_value_that_is_not_an_object(raw: str, expected: str) -> None:
    assert parse_demand(raw, NAMES, NOW) == ({}, [expected])


def test_parse_demand_ignores_bad_entries_and_keeps_the_good_ones() -> None:
    raw = json.dumps(
        {
            "b": _iso(NOW),
            "zz": _iso(NOW),  # not in the pool
            "c": "yesterday",
            "d": 42,
            "a": "2025-01-01T12:00:00",  # no offset
            "x" * 500: None,  # a huge name is cut in the message
        }
    )
    demand, problems = parse_demand(raw, NAMES, NOW)
    assert demand == {"b": NOW}
    assert problems[:4] == [
        "'zz' is not a specialist of this pool",
        "'c': \"yesterday\" is not an RFC3339 time with an offset",
        "'d': 42 is not an RFC3339 time with an offset",
        "'a': \"2025-01-01T12:00:00\" is not an RFC3339 time with an offset",
    ]
    assert len(problems[4]) < 110 and problems[4].endswith("... is not a specialist of this pool")
    far = parse_demand(json.dumps({"b": _iso(NOW + timedelta(hours=1))}), NAMES, NOW)
    assert far == ({}, ["'b': \"2025-01-01T13:00:00Z\" is in the future"])  # would keep it up for ever


def test_demand_condition_names_what_was_ignored_boundedly() -> None:
    ok = demand_condition([])
    assert (ok["type"], ok["status"], ok["reason"]) == ("DemandValid", "True", ConditionReason.Parsed)
    bad = demand_condition([f"problem {i}" for i in range(8)])
    assert (bad["status"], bad["reason"]) == ("False", ConditionReason.Ignored)
    assert bad["message"] == (
        f"ignored in {DEMAND_ANNOTATION}: problem 0; problem 1; problem 2; problem 3; problem 4; and 3 more"
    )


def test_demand_claims_only_within_the_idle_timeout() -> None:
    demand = {"b": NOW - timedelta(seconds=59), "c": NOW - timedelta(seconds=60), "a": NOW}
    claims = demand_claims(demand, NOW, 60)
    assert claims == [
        Claim(DEMAND_JOB, ("a",), _iso(NOW), demand=True),
        Claim(DEMAND_JOB, ("b",), _iso(NOW - timedelta(seconds=59)), demand=True),
    ]
    assert demand_claims(demand, NOW, 0) == []  # idleTimeoutSeconds 0: demand keeps nothing up


# ---------------------------------------------------------------------------------------------- planning
def _spec(idle: int = 60) -> SpecialistPoolSpec:
    return SpecialistPoolSpec.model_validate(
        pool_body(names=("a", "b", "c", "d"), warm=("a",), idleTimeoutSeconds=idle)["spec"]
    )


def _gpus(room_for: int) -> list[budget.Gpu]:
    size = budget.resident_bytes(dtype="bfloat16", params=120_000_000)
    return [budget.Gpu("n", 0, GIB + room_for * size + size // 2, 0, "nvml")]


def _states(rows: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(r["name"], r["state"], r["replicas"]) for r in rows]


def test_plan_admits_demand_within_the_budget_and_shows_it() -> None:
    spec = _spec()
    asked = NOW - timedelta(seconds=10)
    claims = demand_claims({"c": asked}, NOW, spec.idle_timeout_seconds)
    rows, placement = plan(spec, _gpus(3), claims, {}, NOW)
    assert set(placement.admitted) == {"a", "c"}
    assert _states(rows) == [("a", "Warm", 1), ("b", "Cold", 0), ("c", "Active", 1), ("d", "Cold", 0)]
    assert rows[2]["requestedBy"] == [DEMAND_JOB]
    assert rows[2]["lastRequested"] == _iso(asked)  # the time of the demand, not of the reconcile


def test_plan_puts_demand_after_the_warm_set_and_the_jobs() -> None:
    spec = _spec()
    # The demand is older than the job, yet the job's claim comes first: room for the warm one and one more.
    claims = [Claim("job", ("b",), _iso(NOW)), *demand_claims({"c": NOW - timedelta(seconds=30)}, NOW, 60)]
    rows, placement = plan(spec, _gpus(2), claims, {}, NOW)
    assert set(placement.admitted) == {"a", "b"}
    assert _states(rows) == [("a", "Warm", 1), ("b", "Active", 1), ("c", "OverBudget", 0), ("d", "Cold", 0)]
    assert rows[2]["requestedBy"] == [DEMAND_JOB]
    # A specialist both a job and the service want: one row, both claimants, requested now.
    claims = [Claim("job", ("c",), _iso(NOW)), *demand_claims({"c": NOW - timedelta(seconds=30)}, NOW, 60)]
    rows, _ = plan(spec, _gpus(2), claims, {}, NOW)
    assert rows[2]["requestedBy"] == ["job", DEMAND_JOB] and rows[2]["lastRequested"] == _iso(NOW)


def test_plan_drops_demand_after_the_idle_timeout() -> None:
    spec = _spec(idle=60)
    asked = NOW
    rows, _ = plan(spec, _gpus(3), demand_claims({"c": asked}, NOW, 60), {}, NOW)
    assert _states(rows)[2] == ("c", "Active", 1)
    previous = {r["name"]: r for r in rows}
    # The service stops asking: within the idle timeout the demand still claims it, then nothing does.
    later = NOW + timedelta(seconds=59)
    rows, _ = plan(spec, _gpus(3), demand_claims({"c": asked}, later, 60), previous, later)
    assert _states(rows)[2] == ("c", "Active", 1) and rows[2]["lastRequested"] == _iso(asked)
    previous = {r["name"]: r for r in rows}
    expired = NOW + timedelta(seconds=61)
    claims = demand_claims({"c": asked}, expired, 60)
    assert claims == []
    rows, placement = plan(spec, _gpus(3), claims, previous, expired)
    assert _states(rows)[2] == ("c", "Cold", 0) and "c" not in placement.admitted


# ---------------------------------------------------------------------------------------------- the publisher
class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _publisher(cluster: EmulatedCluster, clock: _Clock, **kwargs: Any) -> DemandPublisher:
    return DemandPublisher("pool", NS, api_base=cluster.url, token="annotation-token", clock=clock, **kwargs)


def _patches(cluster: EmulatedCluster) -> list[Any]:
    return cluster.requests(lambda r: r.method == "PATCH" and str(r.url.path).startswith(f"/apis/{GROUP}/"))


def _demand_of(cluster: EmulatedCluster) -> dict[str, str]:
    return json.loads(cluster.get(POOLS, NS, "pool")["metadata"]["annotations"][DEMAND_ANNOTATION])


def test_publisher_merge_patches_the_pools_demand_annotation(cluster: EmulatedCluster) -> None:
    body = pool_body()
    body["metadata"]["annotations"] = {"keep": "me"}
    cluster.create(POOLS, body)
    clock = _Clock()
    publisher = _publisher(cluster, clock)
    try:
        before = datetime.now(UTC).replace(microsecond=0)
        assert publisher.demand(["b"]) == {"b"}
        assert publisher.flush(10)
        (patch,) = _patches(cluster)
        assert str(patch.url.path) == f"/apis/{GROUP}/v1alpha1/namespaces/{NS}/specialistpools/pool"
        assert patch.headers["Content-Type"] == "application/merge-patch+json"
        assert patch.headers["Authorization"] == "Bearer annotation-token"
        assert set(patch.data) == {"metadata"} and set(patch.data["metadata"]["annotations"]) == {DEMAND_ANNOTATION}
        annotations = cluster.get(POOLS, NS, "pool")["metadata"]["annotations"]
        assert annotations["keep"] == "me"  # a merge patch: the other annotations are untouched
        stamp = datetime.fromisoformat(json.loads(annotations[DEMAND_ANNOTATION])["b"].replace("Z", "+00:00"))
        assert before <= stamp <= datetime.now(UTC)

        # Rate limited per specialist: b again within the interval is not written (but still reported requested).
        assert publisher.demand(["b"]) == {"b"}
        assert publisher.flush(10) and len(_patches(cluster)) == 1
        # A new specialist is written, and merged with what the annotation holds.
        assert publisher.demand(["b", "c"]) == {"b", "c"}
        assert publisher.flush(10) and len(_patches(cluster)) == 2
        assert set(_demand_of(cluster)) == {"b", "c"}
        assert set(json.loads(_patches(cluster)[-1].data["metadata"]["annotations"][DEMAND_ANNOTATION])) == {"b", "c"}
        clock.now += 10.0  # the interval has passed: b is written again
        assert publisher.demand(["b"]) == {"b"}
        assert publisher.flush(10) and len(_patches(cluster)) == 3
        assert publisher.published == 3 and publisher.failed == 0
    finally:
        publisher.close()


def test_publisher_retries_a_conflict(cluster: EmulatedCluster) -> None:
    cluster.create(POOLS, pool_body())
    cluster.conflict(lambda r: r.method == "PATCH", times=1)  # another replica wrote between our GET and PATCH
    publisher = _publisher(cluster, _Clock())
    publisher.demand(["c"])
    assert publisher.flush(10)
    assert len(_patches(cluster)) == 2 and publisher.published == 1
    assert set(_demand_of(cluster)) == {"c"}
    # The PATCH carries the resourceVersion it read, so a real API server refuses a lost update with 409.
    assert _patches(cluster)[0].data["metadata"]["resourceVersion"]
    publisher.close()


def test_publisher_never_raises_and_never_blocks(
    cluster: EmulatedCluster, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level(logging.INFO, logger=demand_module.__name__):
        # No such pool: HTTP 404, one log line.
        missing_pool = _publisher(cluster, _Clock())
        assert missing_pool.demand(["b"]) == {"b"}
        assert missing_pool.flush(10) and missing_pool.failed == 1
        # Nothing listening, and the API held: demand() still returns at once.
        release = cluster.hold(lambda r: r.method == "GET" and "specialistpools" in str(r.url.path))
        held = _publisher(cluster, _Clock(), timeout_s=5)
        started = time.monotonic()
        assert held.demand(["b"]) == {"b"}
        assert time.monotonic() - started < 0.5
        assert not held.flush(0.2)  # the write is still waiting on the API
        release()
        assert held.flush(10)
        refused = DemandPublisher("pool", NS, api_base="http://127.0.0.1:9", token="t", timeout_s=2)
        refused.demand(["b"])
        assert refused.flush(10) and refused.failed == 1
        # No token file in the service-account directory.
        no_token = DemandPublisher("pool", NS, api_base=cluster.url, service_account_dir=tmp_path)
        no_token.demand(["b"])
        assert no_token.flush(10) and no_token.failed == 1
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(messages) == 4 and all(m.startswith("demand for ['b'] not published: ") for m in messages), messages
    assert "HTTP 404" in messages[0] and "no service-account token" in messages[-1]
    for publisher in (missing_pool, held, refused, no_token):
        publisher.close()


def test_publisher_reads_the_service_account_token(cluster: EmulatedCluster, tmp_path: Path) -> None:
    cluster.create(POOLS, pool_body())
    (tmp_path / "token").write_text("sa-token\n")
    publisher = DemandPublisher("pool", NS, api_base=cluster.url, service_account_dir=tmp_path)
    publisher.demand(["b"])
    assert publisher.flush(10) and publisher.published == 1
    assert _patches(cluster)[0].headers["Authorization"] == "Bearer sa-token"
    publisher.close()


def test_publisher_is_a_no_op_outside_a_cluster_or_without_a_pool(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "SWARM_POOL_NAME", "POD_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level(logging.INFO, logger=demand_module.__name__):
        publisher = DemandPublisher.from_env()
    assert not publisher.enabled and publisher.demand(["b"]) == set() and publisher._thread is None
    assert "SWARM_POOL_NAME and POD_NAMESPACE unset" in caplog.text
    env = {"SWARM_POOL_NAME": "pool", "POD_NAMESPACE": NS}
    assert not DemandPublisher.from_env(env).enabled  # no KUBERNETES_SERVICE_HOST: not in a cluster
    inside = DemandPublisher.from_env(
        {**env, "SWARM_DEMAND_INTERVAL_SECONDS": "2.5"}, api_base="https://10.0.0.1:443"
    )
    assert inside.enabled and (inside.pool, inside.namespace, inside.min_interval_s) == ("pool", NS, 2.5)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert DemandPublisher.from_env(env).api_base == "https://10.0.0.1:443"
    assert DemandPublisher.from_env({**env, "SWARM_DEMAND_INTERVAL_SECONDS": "soon"}).min_interval_s == 10.0


def test_merged_demand_keeps_the_latest_time_and_drops_garbage() -> None:
    current = json.dumps({"b": _iso(NOW), "c": _iso(NOW - timedelta(days=2)), "d": "bad", "e": 1})
    merged = merged_demand(current, {"b": NOW - timedelta(seconds=5), "a": NOW}, NOW)
    assert merged == {"a": _iso(NOW), "b": _iso(NOW)}  # c too old, d and e unparseable
    assert merged_demand("[]", {"a": NOW}, NOW) == {"a": _iso(NOW)}


def test_only_cold_specialists_are_requested() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def demand(self, names: Any) -> set[str]:
            self.asked += sorted(names)
            return set(self.asked)

    missing = {
        "a": "UNAVAILABLE: specialist unreachable or stopped mid-stream (attempt 4)",
        "b": "no address configured for this specialist",
        "c": "DEADLINE_EXCEEDED: no complete answer within the deadline (attempt 1)",
        "d": "malformed state stream: boom",
    }
    recorder = Recorder()
    reasons = annotate_requested(missing, recorder)  # type: ignore[arg-type]
    assert recorder.asked == ["a", "b"]
    assert reasons["a"] == missing["a"] + "; cold, requested from its pool"
    assert reasons["b"] == missing["b"] + "; cold, requested from its pool"
    assert reasons["c"] == missing["c"] and reasons["d"] == missing["d"]
    assert annotate_requested(missing, None) == missing
    assert [is_cold(r) for r in missing.values()] == [True, True, False, False]


# ---------------------------------------------------------------------------------------------- the operator
def _replicas(cluster: EmulatedCluster) -> dict[str, int]:
    return {d["metadata"]["name"]: d["spec"]["replicas"] for d in cluster.list(DEPLOYMENTS, NS)}


def _status(cluster: EmulatedCluster) -> dict[str, Any]:
    return (cluster.get(POOLS, NS, "pool") or {}).get("status") or {}


def _row(cluster: EmulatedCluster, name: str) -> dict[str, Any]:
    return next(r for r in _status(cluster).get("specialists", []) if r["name"] == name)


@pytest.mark.timeout(150)
def test_demand_scales_a_cold_specialist_up_and_idle_back_to_zero(cluster: EmulatedCluster, add_node: Any) -> None:
    idle = 15
    add_node()
    cluster.create(POOLS, pool_body(idleTimeoutSeconds=idle))
    # A resync timer that never fires during this phase: what reacts to the annotation is its own handler.
    with OperatorProcess(cluster, NS, resync=120) as op:
        wait_for(lambda: _replicas(cluster) == {A: 1, B: 0, C: 0}, what=f"pool\n{op.log()}")
        publisher = DemandPublisher("pool", NS, api_base=cluster.url, token="annotation-token")
        asked = time.time()
        assert publisher.demand(["b"]) == {"b"}
        assert publisher.flush(10) and publisher.published == 1
        wait_for(lambda: _replicas(cluster)[B] == 1, timeout=idle - 3, what=f"b scaled up\n{op.log()}")
        # The status is written after the Deployments (and what they report) are read back: wait for it too.
        row = wait_for(
            lambda: _row(cluster, "b")["replicas"] == 1 and _row(cluster, "b"),
            timeout=idle - 3,
            what=f"b's status row\n{op.log()}",
        )
        assert (row["state"], row["replicas"], row["requestedBy"]) == ("Active", 1, [DEMAND_JOB])
        # Placed, pinned to its GPU; not ready: the emulator runs no controller, so no pod reports ready.
        assert (row["node"], row["gpu"], row["ready"], row["message"]) == ("gpu-1", 0, False, "no pod yet")
        assert find_condition(_status(cluster), ConditionType.DemandValid)["status"] == "True"
        assert _replicas(cluster)[C] == 0

        # Malformed demand: ignored with a condition, the operator carries on; b stays up within its idle timeout.
        cluster.patch(POOLS, NS, "pool", {"metadata": {"annotations": {DEMAND_ANNOTATION: "[]"}}})
        cond = wait_for(
            lambda: find_condition(_status(cluster), ConditionType.DemandValid).get("status") == "False"
            and find_condition(_status(cluster), ConditionType.DemandValid),
            timeout=idle - 3,
            what=f"DemandValid False\n{op.log()}",
        )
        assert cond["reason"] == ConditionReason.Ignored and "a JSON array" in cond["message"]
        assert _replicas(cluster)[B] == 1 and op.proc is not None and op.proc.poll() is None
        cluster.patch(
            POOLS, NS, "pool", {"metadata": {"annotations": {DEMAND_ANNOTATION: json.dumps({"zz": "x"})}}}
        )
        wait_for(
            lambda: "'zz' is not a specialist of this pool"
            in find_condition(_status(cluster), ConditionType.DemandValid).get("message", ""),
            what=f"unknown name named\n{op.log()}",
        )
        assert "Traceback" not in op.log(), op.log()[op.log().find("Traceback") - 200 :][:3000]

    # The resync timer (1 s here) brings b back to zero once its demand is older than the idle timeout.
    with OperatorProcess(cluster, NS, resync=1.0) as op:
        # The Deployment is scaled before the status is written: wait for both.
        wait_for(
            lambda: _replicas(cluster)[B] == 0 and _row(cluster, "b")["state"] == "Cold",
            timeout=idle + 30,
            what=f"b back to zero\n{op.log()}",
        )
        assert time.time() - asked >= idle - 1  # not before the idle timeout (lastRequested has 1 s resolution)
        assert _replicas(cluster)[A] == 1
