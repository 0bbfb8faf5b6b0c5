"""The operator's lifecycle defects, each on the real control plane (issue #12, part 3), and the Job-like fields."""

from __future__ import annotations

import json
import urllib.error
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from status_conditions import find_condition
from test_real_cluster import (
    SPECIALIST_PODS,
    TRAINER_PODS,
    job_status,
    pods,
    pool_status,
    ready_condition,
    running,
    sample,
)

from swarm.operator import builders
from swarm.operator.models import ConditionReason, ConditionType
from swarm.operator.nodes import GPU_MEMORY_ANNOTATION
from swarm.testing.control_plane import EXIT_CODE_ANNOTATION, TERMINATION_MESSAGE_ANNOTATION, ControlPlane
from swarm.testing.emulator import OperatorProcess
from swarm.testing.operator_process import APPS, CORE, NS, SWARM, apply_sample, gpu_node, operator_process

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]
JOB = "sotab-train"


def replicas(plane: ControlPlane) -> dict[str, int]:
    return {
        d["metadata"]["labels"][builders.LABEL_SPECIALIST]: d["spec"]["replicas"]
        for d in plane.list(APPS, "deployments", NS)
    }


def start_job(plane: ControlPlane, op: OperatorProcess, **job: Any) -> dict[str, Any]:
    """Node, sample pool (idle specialists go at once) and sample job; returns the running trainer pod. The job comes
    once the warm pair is ready, so that it is granted both (a warm specialist still starting is not granted: a
    test that assumes the job holds it would race its start)."""
    gpu_node(plane, "gpu-1")
    apply_sample(plane, "specialistpool.yaml", idleTimeoutSeconds=0)
    wait_warm_ready(plane, op)
    apply_sample(plane, "swarmjob.yaml", **job)
    plane.wait_for(lambda: job_status(plane, JOB).get("phase") == "Running", what=f"job Running\n{op.log()}")
    return running(plane, TRAINER_PODS)[0]


def wait_warm_ready(plane: ControlPlane, op: OperatorProcess) -> None:
    """Until the sample pool says its warm set is ready (Ready True)."""
    plane.wait_for(
        lambda: ready_condition(pool_status(plane)).get("status") == "True", what=f"warm set ready\n{op.log()}"
    )


def set_reserve(plane: ControlPlane, op: OperatorProcess, reserve: int) -> None:
    """Patch the sample pool's `memoryReservePerGpu` and wait until the operator has re-planned it."""
    plane.kubectl(
        "patch", "specialistpool", "sotab", "-n", NS, "--type=merge", "-p",
        json.dumps({"spec": {"memoryReservePerGpu": reserve}}),
    )  # fmt: skip
    plane.wait_for(lambda: pool_status(plane).get("observedGeneration") == 2, what=f"pool re-planned\n{op.log()}")


def finish_pod(plane: ControlPlane, pod: dict[str, Any], code: int, message: str = "") -> None:
    annotations = {EXIT_CODE_ANNOTATION: str(code), TERMINATION_MESSAGE_ANNOTATION: message}
    plane.patch(CORE, "pods", pod["metadata"]["name"], {"metadata": {"annotations": annotations}}, NS)


def reading(updated: datetime) -> str:
    total = 25757220864
    gpus = [{"index": 0, "total": total, "free": total}]
    return json.dumps({"source": "nvml", "updated": updated.isoformat(), "gpus": gpus})


def annotate_node(plane: ControlPlane, node: str, value: str) -> None:
    plane.patch(CORE, "nodes", node, {"metadata": {"annotations": {GPU_MEMORY_ANNOTATION: value}}})


# ---------------------------------------------------------------------------------------------- 1, 8
def test_a_stale_reading_keeps_the_placement_and_says_so(cluster: ControlPlane, operator: OperatorProcess) -> None:
    gpu_node(cluster, "gpu-1")
    annotate_node(cluster, "gpu-1", reading(datetime.now(UTC)))
    pool = sample("specialistpool.yaml")
    del pool["spec"]["fallbackCapacity"]  # only the agent's reading gives capacity
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(pool))
    cluster.wait_for(lambda: ready_condition(pool_status(cluster)).get("status") == "True", what="pool Ready")
    annotate_node(cluster, "gpu-1", reading(datetime.now(UTC) - timedelta(seconds=900)))
    fresh = cluster.wait_for(
        lambda: (c := find_condition(pool_status(cluster), ConditionType.CapacityFresh)).get("status") == "False"
        and c,
        what=f"CapacityFresh False\n{operator.log()}",
    )
    assert fresh["reason"] == ConditionReason.StaleReading and "gpu-1" in fresh["message"]
    names = [s["name"] for s in sample("specialistpool.yaml")["spec"]["specialists"]]
    assert replicas(cluster) == {name: int(name in ("geographic", "temporal")) for name in names}
    assert ready_condition(pool_status(cluster))["status"] == "True"
    assert len(running(cluster, SPECIALIST_PODS)) == 2


@pytest.mark.parametrize("value", ["[]", "null", "42", '"x"', '{"gpus": 5}', '{"gpus": [{"index": "a"}]}'])
def test_a_malformed_reading_is_no_reading(cluster: ControlPlane, operator: OperatorProcess, value: str) -> None:
    gpu_node(cluster, "gpu-1")
    annotate_node(cluster, "gpu-1", value)
    apply_sample(cluster, "specialistpool.yaml")
    status = cluster.wait_for(
        lambda: (s := pool_status(cluster)) and ready_condition(s).get("status") == "True" and s,
        what=f"pool Ready on its fallback capacity\n{operator.log()}",
    )
    assert status["capacitySource"] == "fallback"
    assert "Traceback" not in operator.log()


# ---------------------------------------------------------------------------------------------- 2, backoffLimit
def test_a_trainer_pod_deleted_while_running_fails_the_job_and_frees_its_specialists(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    pod = start_job(cluster, operator)
    assert replicas(cluster)["people"] == 1
    cluster.delete(CORE, "pods", pod["metadata"]["name"], NS, gracePeriodSeconds=0)
    status = cluster.wait_for(
        lambda: (s := job_status(cluster, JOB)).get("phase") == "Failed" and s, what=f"job Failed\n{operator.log()}"
    )
    assert find_condition(status, ConditionType.Complete)["reason"] == ConditionReason.PodDeleted
    assert status["failed"] == 1 and status["completionTime"]
    cluster.wait_for(lambda: replicas(cluster)["people"] == 0, what="the job's specialist scaled back to zero")


def test_backoff_limit_replaces_a_lost_and_then_a_failed_trainer_pod(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    first = start_job(cluster, operator, backoffLimit=2)
    cluster.delete(CORE, "pods", first["metadata"]["name"], NS, gracePeriodSeconds=0)
    second = cluster.wait_for(
        lambda: [p for p in running(cluster, TRAINER_PODS) if p["metadata"]["uid"] != first["metadata"]["uid"]],
        what=f"a replacement trainer pod\n{operator.log()}",
    )[0]
    cluster.wait_for(lambda: job_status(cluster, JOB).get("phase") == "Running", what="Running again")
    finish_pod(cluster, second, 3)
    third = cluster.wait_for(
        lambda: [p for p in running(cluster, TRAINER_PODS) if p["metadata"]["uid"] != second["metadata"]["uid"]],
        what=f"a replacement for the failed pod\n{job_status(cluster, JOB)}\n{operator.log()}",
    )[0]
    assert job_status(cluster, JOB)["failed"] == 2
    finish_pod(cluster, third, 1)
    status = cluster.wait_for(lambda: (s := job_status(cluster, JOB)).get("phase") == "Failed" and s, what="Failed")
    complete = find_condition(status, ConditionType.Complete)
    assert complete["reason"] == ConditionReason.BackoffLimitExceeded and "exit code 1" in complete["message"]
    assert status["failed"] == 3


# ---------------------------------------------------------------------------------------------- 3
def test_trainers_get_no_token_and_the_node_agent_only_its_own_node(cluster: ControlPlane) -> None:
    def can(verb: str, resource: str, who: str) -> bool:
        result = cluster.kubectl("auth", "can-i", verb, resource, "-n", NS, f"--as=system:serviceaccount:{NS}:{who}",
                                 check=False)  # fmt: skip
        return result.stdout.strip() == "yes"

    assert not can("patch", "pods", "swarm-trainer") and not can("get", "pods", "swarm-trainer")
    assert not can("create", "pods", "swarm-specialist")
    assert can("patch", "nodes", "swarm-node-agent") and not can("get", "secrets", "swarm-node-agent")
    cluster.kubectl("apply", "-f", str(cluster_policy()))
    gpu_node(cluster, "gpu-1")
    gpu_node(cluster, "gpu-2")
    agent = cluster.restricted_pod(
        NS, "node-agent-gpu-1", "swarm-node-agent", "agent", nodeName="gpu-1", tolerations=[{"operator": "Exists"}]
    )
    token = cluster.token(NS, "swarm-node-agent", bound_pod=agent)  # as the kubelet mounts it

    def agent_patch(node: str, patch: dict[str, Any], sub: str = "") -> str:
        """The node agent's merge patch (operator/node_agent.py): "" when admitted, else the API server's refusal."""
        return cluster.merge_patch_as(token, cluster.path(CORE, "nodes", None, node, sub), patch)

    # The policy takes effect once the API server has loaded it: until then the agent could patch any node.
    cluster.wait_for(lambda: agent_patch("gpu-2", {"metadata": {"annotations": {"probe": "x"}}}), what="policy loaded")
    own = {"metadata": {"annotations": {GPU_MEMORY_ANNOTATION: reading(datetime.now(UTC))}}}
    assert agent_patch("gpu-1", own) == ""
    assert agent_patch("gpu-1", {"status": {"capacity": {"swarm.ai/gpu-memory-mib": "20000"}}}, "status") == ""
    other = agent_patch("gpu-2", {"metadata": {"annotations": {GPU_MEMORY_ANNOTATION: "{}"}}})
    assert "only the node its pod runs on" in other, other
    label = agent_patch("gpu-1", {"metadata": {"labels": {"nvidia.com/gpu.product": "H100"}}})
    assert "spec or labels" in label, label
    gpus = agent_patch("gpu-1", {"status": {"capacity": {"nvidia.com/gpu": "8"}}}, "status")
    assert "gpu-memory-mib" in gpus, gpus
    annotation = agent_patch("gpu-1", {"metadata": {"annotations": {"other": "x"}}})
    assert "only the swarm.ai/gpu-memory annotation" in annotation, annotation


def cluster_policy() -> Any:
    from swarm.testing.control_plane import REPO

    return REPO / "manifests" / "node-agent-policy.yaml"


# ---------------------------------------------------------------------------------------------- 4, 5
def test_a_running_jobs_spec_is_immutable(cluster: ControlPlane, operator: OperatorProcess) -> None:
    start_job(cluster, operator)
    result = cluster.kubectl(
        "patch", "swarmjob", JOB, "-n", NS, "--type=merge", "-p", '{"spec": {"specialists": ["numeric"]}}',
        check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "spec is immutable once the trainer pod exists" in result.stderr


def test_a_pool_change_never_evicts_a_running_jobs_specialist(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    start_job(cluster, operator)
    # Shrink the budget so that only the two warm specialists (or the job's) would fit: 1.4 GiB left per GPU.
    reserve = 25757220864 - 1500 * 1024**2
    set_reserve(cluster, operator, reserve)
    assert replicas(cluster)["people"] == 1
    assert job_status(cluster, JOB)["phase"] == "Running"
    rows = {r["name"]: r for r in pool_status(cluster)["specialists"]}
    assert rows["people"]["replicas"] == 1 and rows["people"]["requestedBy"] == [JOB]


# ---------------------------------------------------------------------------------------------- 6
def test_a_re_created_job_never_adopts_the_old_pod(cluster: ControlPlane, operator: OperatorProcess) -> None:
    old = start_job(cluster, operator)
    finish_pod(cluster, old, 0, json.dumps({"microF1": 0.9}))
    cluster.wait_for(lambda: job_status(cluster, JOB).get("phase") == "Succeeded", what="first run Succeeded")
    operator.stop()
    cluster.patch(SWARM, "swarmjobs", JOB, {"metadata": {"finalizers": None}}, NS)
    cluster.kubectl("delete", "swarmjob", JOB, "-n", NS, "--cascade=orphan")
    assert cluster.get(CORE, "pods", old["metadata"]["name"], NS) is not None  # orphaned, still there
    apply_sample(cluster, "swarmjob.yaml")
    with operator_process(cluster, operator.log_path.with_name("second.log")) as second:
        new = cluster.wait_for(
            lambda: [p for p in running(cluster, TRAINER_PODS) if p["metadata"]["uid"] != old["metadata"]["uid"]],
            what=f"the new job's own pod\n{second.log()}",
        )[0]
        job = cluster.get(SWARM, "swarmjobs", JOB, NS)
        assert new["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
        # The status follows the pod's events: wait for it, then check nothing of the old run came with it.
        status = cluster.wait_for(
            lambda: (s := job_status(cluster, JOB)).get("phase") == "Running" and s, what="new job Running"
        )
        assert not (status.get("metrics") or {}) and status.get("completionTime") is None


# ---------------------------------------------------------------------------------------------- 7
def test_drift_is_corrected_and_removed_keys_go(cluster: ControlPlane, operator: OperatorProcess) -> None:
    gpu_node(cluster, "gpu-1", zone="a")
    apply_sample(cluster, "specialistpool.yaml", nodeSelector={"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090",
                                                               "zone": "a"})  # fmt: skip
    cluster.wait_for(lambda: len(running(cluster, SPECIALIST_PODS)) == 2, what="warm specialists running")
    name = builders.specialist_object_name("sotab", "geographic")
    cluster.kubectl("scale", "deployment", name, "-n", NS, "--replicas=3")
    cluster.wait_for(
        lambda: cluster.get(APPS, "deployments", name, NS)["spec"]["replicas"] == 1,
        what=f"drift undone\n{operator.log()}",
    )
    cluster.kubectl(
        "patch", "specialistpool", "sotab", "-n", NS, "--type=json", "-p",
        '[{"op": "remove", "path": "/spec/nodeSelector/zone"}]',
    )  # fmt: skip
    cluster.wait_for(
        lambda: "zone" not in cluster.get(APPS, "deployments", name, NS)["spec"]["template"]["spec"]["nodeSelector"],
        what=f"removed selector key gone from the Deployment\n{operator.log()}",
    )


# ---------------------------------------------------------------------------------------------- 9
def test_a_non_finite_metric_is_dropped_and_the_job_still_finishes(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    pod = start_job(cluster, operator)
    finish_pod(cluster, pod, 0, '{"microF1": 0.8, "throughput": 1e400}')
    status = cluster.wait_for(lambda: (s := job_status(cluster, JOB)).get("phase") == "Succeeded" and s, what="done")
    assert status["metrics"] == {"microF1": 0.8}
    metrics = find_condition(status, ConditionType.MetricsValid)
    assert metrics["status"] == "False" and "throughput" in metrics["message"]


# ---------------------------------------------------------------------------------------------- 10
def test_names_are_validated_and_never_collide(cluster: ControlPlane, operator: OperatorProcess) -> None:
    long = sample("specialistpool.yaml")
    long["metadata"]["name"] = "p" * 64
    result = cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(long), check=False)
    assert result.returncode != 0 and "63" in result.stderr, result.stderr
    gpu_node(cluster, "gpu-1")
    for pool_name, specialist in (("x-y", "z"), ("x", "y-z")):
        doc = sample("specialistpool.yaml")
        doc["metadata"]["name"] = pool_name
        doc["spec"]["specialists"] = [{**doc["spec"]["specialists"][0], "name": specialist}]
        doc["spec"]["warm"] = [specialist]
        cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(doc))
    for pool_name in ("x-y", "x"):
        cluster.wait_for(
            lambda p=pool_name: ready_condition(pool_status(cluster, p)).get("status") == "True",
            what=f"pool {pool_name} Ready\n{operator.log()}",
        )
    assert len(cluster.list(APPS, "deployments", NS)) == 2 and len(running(cluster, SPECIALIST_PODS)) == 2
    assert "422" not in operator.log()


# ---------------------------------------------------------------------------------------------- 11
def test_a_job_naming_an_unknown_specialist_holds_nothing(cluster: ControlPlane, operator: OperatorProcess) -> None:
    gpu_node(cluster, "gpu-1")
    apply_sample(cluster, "specialistpool.yaml")
    apply_sample(cluster, "swarmjob.yaml", specialists=["people", "nope"])
    status = cluster.wait_for(
        lambda: (s := job_status(cluster, JOB))
        and find_condition(s, ConditionType.SpecialistsGranted).get("reason") == ConditionReason.UnknownSpecialist
        and s,
        what=f"UnknownSpecialist\n{operator.log()}",
    )
    assert status["phase"] == "Pending" and not pods(cluster, TRAINER_PODS)
    assert replicas(cluster)["people"] == 0


# ---------------------------------------------------------------------------------------------- 13
def test_status_conditions_and_lists_are_validated_by_the_server(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    twice = sample("specialistpool.yaml")
    twice["spec"]["specialists"].append(dict(twice["spec"]["specialists"][0]))
    result = cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(twice), check=False)
    assert result.returncode != 0 and "Duplicate value" in result.stderr, result.stderr
    gpu_node(cluster, "gpu-1")
    apply_sample(cluster, "specialistpool.yaml")
    cluster.wait_for(lambda: ready_condition(pool_status(cluster)).get("status") == "True", what="pool Ready")
    bad = {"status": {"conditions": [{"type": "Ready", "status": "Maybe", "reason": "not ok", "message": ""}]}}
    with pytest.raises(Exception, match="422"):
        cluster.patch(SWARM, "specialistpools", "sotab", bad, NS, sub="status")


# ---------------------------------------------------------------------------------------------- Job-like fields
def test_active_deadline_stops_the_trainer_and_fails_the_job(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    pod = start_job(cluster, operator, activeDeadlineSeconds=3)
    assert 1 <= pod["spec"]["activeDeadlineSeconds"] <= 3
    status = cluster.wait_for(lambda: (s := job_status(cluster, JOB)).get("phase") == "Failed" and s, what="Failed")
    assert find_condition(status, ConditionType.Complete)["reason"] == ConditionReason.DeadlineExceeded
    cluster.wait_for(lambda: not pods(cluster, TRAINER_PODS), what="trainer pod stopped")


def test_a_finished_job_goes_after_its_ttl(cluster: ControlPlane, operator: OperatorProcess) -> None:
    pod = start_job(cluster, operator, ttlSecondsAfterFinished=2)
    finish_pod(cluster, pod, 0, "{}")
    cluster.wait_for(lambda: job_status(cluster, JOB).get("phase") == "Succeeded", what="Succeeded")
    cluster.wait_for(lambda: cluster.get(SWARM, "swarmjobs", JOB, NS) is None, what=f"job deleted\n{operator.log()}")
    cluster.wait_for(lambda: not pods(cluster, TRAINER_PODS), what="its pod collected")


# ---------------------------------------------------------------------------------------------- 12
def test_status_writes_keep_other_writers_conditions(cluster: ControlPlane, operator: OperatorProcess) -> None:
    """The real server refuses a status write with a stale resourceVersion (what status_write relies on), and a
    condition another writer keeps adding survives the operator's writes through a whole job."""
    pod = start_job(cluster, operator)
    job = cluster.get(SWARM, "swarmjobs", JOB, NS)
    stale = {"metadata": {"resourceVersion": job["metadata"]["resourceVersion"]}, "status": {"message": "x"}}
    cluster.patch(SWARM, "swarmjobs", JOB, {"status": {"message": "moved on"}}, NS, sub="status")
    with pytest.raises(urllib.error.HTTPError) as refused:
        cluster.patch(SWARM, "swarmjobs", JOB, stale, NS, sub="status")
    assert refused.value.code == 409
    external = {"type": "External", "status": "True", "reason": "Watching", "message": "another controller",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip

    def add_external() -> bool:
        current = cluster.get(SWARM, "swarmjobs", JOB, NS)
        conditions = [c for c in current["status"].get("conditions", []) if c["type"] != "External"]
        patch = {
            "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
            "status": {"conditions": [*conditions, external]},
        }
        try:
            cluster.patch(SWARM, "swarmjobs", JOB, patch, NS, sub="status")
            return True
        except urllib.error.HTTPError as exc:
            assert exc.code == 409  # the operator wrote in between: read again
            return False

    for _ in range(3):
        cluster.wait_for(add_external, interval=0.05, what="the other writer's condition written")
    finish_pod(cluster, pod, 0, json.dumps({"microF1": 0.7}))
    status = cluster.wait_for(lambda: (s := job_status(cluster, JOB)).get("phase") == "Succeeded" and s, what="done")
    types = {c["type"] for c in status["conditions"]}
    assert {"External", "Complete", "MetricsValid", "SpecialistsGranted", "PoolReady", "TrainerPod"} <= types, types


# ---------------------------------------------------------------------------------------------- leader election
def test_one_replica_reconciles_and_a_standby_takes_over(cluster: ControlPlane, tmp_path: Any) -> None:
    gpu_node(cluster, "gpu-1")
    apply_sample(cluster, "specialistpool.yaml")
    duration = "4"
    replicas_ = [
        operator_process(cluster, tmp_path / f"{n}.log", extra_args=("--lease-duration", duration), POD_NAME=n).start()
        for n in ("op-a", "op-b")
    ]
    try:
        holder = cluster.wait_for(
            lambda: (cluster.get("/apis/coordination.k8s.io/v1", "leases", "swarm-operator", NS) or {})
            .get("spec", {})
            .get("holderIdentity"),
            what="a leader",
        )
        leader, standby = (replicas_[0], replicas_[1]) if holder == "op-a" else (replicas_[1], replicas_[0])
        cluster.wait_for(lambda: ready_condition(pool_status(cluster)).get("status") == "True", what="pool Ready")
        assert "Handler '" not in standby.log() and "standing by" in standby.log()
        leader.kill()
        apply_sample(cluster, "specialistpool.yaml", warm=["geographic", "temporal", "numeric"])
        cluster.wait_for(
            lambda: replicas(cluster).get("numeric") == 1, timeout=30, what=f"the standby reconciles\n{standby.log()}"
        )
        lease = cluster.get("/apis/coordination.k8s.io/v1", "leases", "swarm-operator", NS)
        assert lease["spec"]["holderIdentity"] == standby.log_path.stem
    finally:
        for process in replicas_:
            process.stop()
