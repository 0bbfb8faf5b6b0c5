"""Issue #31 (platform team): PodDisruptionBudgets of warm and job-held specialists, priorityClassName on specialist
and trainer pods, startup and liveness probes beside readiness (builders.py), and the pool's reconcile converging the
budgets against an in-memory API (fake_api.FakeApi)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fake_api import FakeApi

from swarm.operator import builders, crdgen, pool
from swarm.operator.kube import PDBS, POOLS, ApiError
from swarm.operator.models import SpecialistPoolSpec, SwarmJobSpec
from swarm.operator.nodes import reading
from swarm.testing.emulator import gpu_node, job_body, pool_body

NS = "swarm"
pytestmark = pytest.mark.timeout(30)


def _pool(**extra: Any) -> dict[str, Any]:
    body = pool_body(**extra)
    body["metadata"]["uid"] = "uid-pool"
    return body


def _deployment(pool_obj: dict[str, Any], name: str = "a") -> dict[str, Any]:
    spec = SpecialistPoolSpec.model_validate(pool_obj["spec"])
    (specialist,) = [s for s in spec.specialists if s.name == name]
    return builders.specialist_deployment(
        pool_obj, specialist, 1, spec.node_selector, builders.default_templates()["specialist"]
    )


# ---------------------------------------------------------------------------------------------- probes
def test_specialists_get_startup_liveness_and_readiness_probes_on_the_health_port() -> None:
    container = _deployment(_pool())["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for kind in ("readinessProbe", "startupProbe", "livenessProbe"):
        probe = container[kind]
        assert probe["grpc"]["port"] == ports["health"] == builders.HEALTH_PORT, kind  # plaintext: never the mTLS one
        assert probe["timeoutSeconds"] >= 1, kind
    startup, liveness = container["startupProbe"], container["livenessProbe"]
    # Startup: generous (a model loads from a volume onto the GPU); liveness only starts once it succeeded.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert startup["grpc"]["service"] == container["readinessProbe"]["grpc"]["service"] == builders.HEALTH_SERVICE
    # Liveness: modest, and of the server as a whole (""), not of the model's readiness.
    assert liveness["grpc"]["service"] == ""
    assert 30 <= liveness["periodSeconds"] * liveness["failureThreshold"] <= 120


def test_a_templates_own_probe_is_kept() -> None:
    template = builders.default_templates()["specialist"]
    own = {"grpc": {"port": builders.HEALTH_PORT, "service": ""}, "periodSeconds": 60, "failureThreshold": 1}
    template["spec"]["containers"][0]["livenessProbe"] = own
    pool_obj = _pool()
    spec = SpecialistPoolSpec.model_validate(pool_obj["spec"])
    dep = builders.specialist_deployment(pool_obj, spec.specialists[0], 1, spec.node_selector, template)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"] == own and "startupProbe" in container


def test_trainer_pods_have_no_probes() -> None:
    """A trainer runs a batch command (`swarm release`, `eval`, ...) that serves no health port."""
    job_obj = job_body()
    job_obj["metadata"]["uid"] = "uid-job"
    spec = SwarmJobSpec.model_validate(job_obj["spec"])
    pod = builders.trainer_pod(job_obj, spec, {}, builders.default_templates()["trainer"])
    container = pod["spec"]["containers"][0]
    assert not {"readinessProbe", "livenessProbe", "startupProbe"} & set(container)
    assert "ports" not in container


# ---------------------------------------------------------------------------------------------- priority
def test_priority_class_name_goes_on_specialist_and_trainer_pods() -> None:
    dep = _deployment(_pool(priorityClassName="swarm-specialist"))
    assert dep["spec"]["template"]["spec"]["priorityClassName"] == "swarm-specialist"
    assert "priorityClassName" not in _deployment(_pool())["spec"]["template"]["spec"]  # unset: the cluster default

    job_obj = job_body(priorityClassName="swarm-trainer")
    job_obj["metadata"]["uid"] = "uid-job"
    spec = SwarmJobSpec.model_validate(job_obj["spec"])
    pod = builders.trainer_pod(job_obj, spec, {}, builders.default_templates()["trainer"])
    assert pod["spec"]["priorityClassName"] == "swarm-trainer"
    plain = SwarmJobSpec.model_validate(job_body()["spec"])
    assert (
        "priorityClassName"
        not in builders.trainer_pod(job_obj, plain, {}, builders.default_templates()["trainer"])["spec"]
    )


@pytest.mark.parametrize("value", ["Upper", "-lead", "a_b", "", "x" * 254])
def test_priority_class_names_are_validated_by_the_crds(value: str) -> None:
    assert any("priorityClassName" in m for m in crdgen.validate_resource(pool_body(priorityClassName=value)))
    assert any("priorityClassName" in m for m in crdgen.validate_resource(job_body(priorityClassName=value)))


def test_valid_priority_class_names_and_the_pdb_switch_validate() -> None:
    for value in ("swarm-specialist", "high.priority", "p1"):
        assert crdgen.validate_resource(pool_body(priorityClassName=value)) == []
        assert crdgen.validate_resource(job_body(priorityClassName=value)) == []
    assert crdgen.validate_resource(pool_body(podDisruptionBudgets=False)) == []
    assert any("podDisruptionBudgets" in m for m in crdgen.validate_resource(pool_body(podDisruptionBudgets="no")))
    assert SpecialistPoolSpec.model_validate(pool_body()["spec"]).pod_disruption_budgets is True


# ---------------------------------------------------------------------------------------------- PDB builders
def test_a_specialists_pdb_keeps_its_one_ready_replica_and_lets_unhealthy_pods_go() -> None:
    pool_obj = _pool()
    pdb = builders.specialist_pdb(pool_obj, "a")
    dep = _deployment(pool_obj)
    assert pdb["apiVersion"] == "policy/v1" and pdb["kind"] == "PodDisruptionBudget"
    assert pdb["metadata"]["name"] == dep["metadata"]["name"] and pdb["metadata"]["namespace"] == NS
    assert pdb["metadata"]["ownerReferences"] == dep["metadata"]["ownerReferences"]  # garbage-collected with the pool
    assert pdb["metadata"]["labels"] == dep["metadata"]["labels"]  # what converge selects by
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def _row(name: str, state: str, replicas: int = 1) -> dict[str, Any]:
    return {"name": name, "state": state, "replicas": replicas}


def test_only_scaled_up_warm_or_held_specialists_are_guarded() -> None:
    spec = SpecialistPoolSpec.model_validate(pool_body(names=("a", "b", "c", "d", "e"), warm=("a", "e"))["spec"])
    rows = [
        _row("a", "Warm"),
        _row("b", "Active"),  # held by a running job
        _row("c", "Active"),  # requested by a pending job, demand or idle-kept: the planner moves or drops it
        _row("d", "Cold", 0),
        _row("e", "OverBudget", 0),  # warm but not admitted: no pod to protect
    ]
    assert builders.guarded_specialists(spec, rows, {"b", "d"}) == ["a", "b"]
    assert builders.guarded_specialists(spec, rows, ()) == ["a"]
    off = spec.model_copy(update={"pod_disruption_budgets": False})
    assert builders.guarded_specialists(off, rows, {"b"}) == []
    names = [p["metadata"]["name"] for p in builders.specialist_pdbs(_pool(), spec, rows, {"b"})]
    assert names == ["pool--a", "pool--b"]
    names = [p["metadata"]["name"] for p in builders.specialist_pdbs(_pool(), spec, rows, {"b"}, ["job", "job"])]
    assert names == ["pool--a", "pool--b", "job.trainer"]
    assert builders.specialist_pdbs(_pool(), off, rows, {"b"}, ["job"]) == []


def test_a_running_jobs_trainer_pod_gets_a_pdb_of_its_own() -> None:
    pool_obj = _pool()
    job_obj = job_body(name="job")
    job_obj["metadata"]["uid"] = "uid-job"
    trainer = builders.trainer_pod(
        job_obj, SwarmJobSpec.model_validate(job_obj["spec"]), {}, builders.default_templates()["trainer"]
    )
    pdb = builders.trainer_pdb(pool_obj, "job")
    assert pdb["metadata"]["name"] == "job.trainer" != builders.specialist_object_name("job", "x")
    assert pdb["metadata"]["ownerReferences"][0]["uid"] == "uid-pool"  # the pool holds the job's claim
    # Selected by the pool's converge (managed-by, pool) and selecting exactly the trainer pod.
    assert {builders.LABEL_MANAGED_BY, builders.LABEL_POOL} <= set(pdb["metadata"]["labels"])
    assert pdb["spec"]["selector"]["matchLabels"].items() <= trainer["metadata"]["labels"].items()
    assert pdb["spec"]["selector"]["matchLabels"][builders.LABEL_COMPONENT] == "trainer"
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


# ---------------------------------------------------------------------------------------------- reconcile
def _reconcile(api: FakeApi, claims: list[pool.Claim]) -> pool.PoolResult:
    nodes = [reading(gpu_node("gpu-1"))]
    return asyncio.run(pool.reconcile(api, NS, "pool", nodes, claims, builders.default_templates()))  # type: ignore[arg-type]


def _pdbs(api: FakeApi) -> list[str]:
    return sorted(name for (plural, _, name) in api.objects if plural == PDBS.plural)


def test_the_pool_converges_budgets_for_its_warm_and_held_specialists_and_running_trainers() -> None:
    api = FakeApi()
    api.put(POOLS, pool_body(names=("a", "b", "c"), warm=("a",)))
    _reconcile(api, [])
    assert _pdbs(api) == ["pool--a"]
    pdb = api.peek(PDBS, NS, "pool--a")
    assert pdb is not None and pdb["metadata"]["ownerReferences"][0]["kind"] == "SpecialistPool"

    # A pending job's specialist is scaled up but not guarded; once the job runs (its trainer pod exists), it is.
    _reconcile(api, [pool.Claim("job", ("b",), "2025-01-01T00:00:00Z")])
    assert _pdbs(api) == ["pool--a"]
    _reconcile(api, [pool.Claim("job", ("b",), "2025-01-01T00:00:00Z", running=True)])
    assert _pdbs(api) == ["job.trainer", "pool--a", "pool--b"]  # and its trainer pod

    # The job finished: its specialist's budget goes (the pool's idleTimeoutSeconds is 0: it is scaled down).
    _reconcile(api, [])
    assert _pdbs(api) == ["pool--a"]

    # The platform turns budgets off for the pool: they are deleted.
    stored = api.peek(POOLS, NS, "pool")
    assert stored is not None
    stored["spec"]["podDisruptionBudgets"] = False
    _reconcile(api, [])
    assert _pdbs(api) == []


def test_a_pdb_failure_does_not_fail_the_pools_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator whose Role lacks poddisruptionbudgets (upgraded before its RBAC) still reconciles its pools."""
    api = FakeApi()
    api.put(POOLS, pool_body(warm=("a",)))
    real_list = FakeApi.list

    async def forbidden(self: FakeApi, res: Any, namespace: str | None = None, labels: Any = None) -> Any:
        if res == PDBS:
            raise ApiError(403, "poddisruptionbudgets is forbidden")
        return await real_list(self, res, namespace, labels)

    monkeypatch.setattr(FakeApi, "list", forbidden)
    result = _reconcile(api, [])
    assert result.found and result.admitted == {"a"} and _pdbs(api) == []
    stored = api.peek(POOLS, NS, "pool")
    assert stored is not None and stored["status"]["warmCount"] == 1
