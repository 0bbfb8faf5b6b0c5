"""The real operator (`swarm operator` subprocess, kopf) against an emulated Kubernetes API (kmock)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from status_conditions import find_condition

from swarm.model_server.choices import GROUP
from swarm.operator import crdgen
from swarm.operator.budget import mib, resident_bytes
from swarm.operator.builders import (
    HOSTNAME_LABEL,
    LABEL_MANAGED_BY,
    LABEL_POOL,
    LABEL_SPECIALIST,
    MANAGED_BY,
    TERMINATION_MESSAGE_ENV,
    TERMINATION_MESSAGE_PATH,
    VISIBLE_DEVICES_ENV,
    specialist_labels,
    specialist_object_name,
    trainer_pod_name,
)
from swarm.operator.kube import DEPLOYMENTS, JOBS, NODES, PODS, POOLS, SERVICES
from swarm.operator.models import PREFIX, ConditionReason, ConditionType
from swarm.operator.nodes import GPU_MEMORY_ANNOTATION, GPU_MEMORY_RESOURCE
from swarm.operator.status import termination_message
from swarm.testing.emulator import (
    PARAMS_120M,
    RTX_4090_TOTAL,
    EmulatedCluster,
    OperatorProcess,
    job_body,
    pool_body,
    wait_for,
)
from swarm.trainer.commands.metrics_publisher import publish_metrics

NS = "swarm"
A, B, C = (specialist_object_name("pool", n) for n in "abc")  # the pool fixture's Deployments and Services
POD = trainer_pod_name("job")
pytestmark = pytest.mark.timeout(60)


def status(cluster: EmulatedCluster, res: Any, name: str) -> dict[str, Any]:
    return (cluster.get(res, NS, name) or {}).get("status") or {}


def cond(obj_status: dict[str, Any], type_: ConditionType) -> dict[str, Any]:
    return find_condition(obj_status, type_)


def replicas(cluster: EmulatedCluster) -> dict[str, int]:
    return {d["metadata"]["name"]: d["spec"]["replicas"] for d in cluster.list(DEPLOYMENTS, NS)}


def row(obj_status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in obj_status.get("specialists", []) if r["name"] == name)


def message_of(obj_status: dict[str, Any], name: str) -> str:
    """Why specialist `name` is not ready, per its pool status row ('' while it has none)."""
    return next((r.get("message", "") for r in obj_status.get("specialists", []) if r["name"] == name), "")


def set_ready(cluster: EmulatedCluster, deployment: str, ready: int = 1) -> None:
    """What the Deployment controller reports (the emulator runs none): `ready` of its replicas are ready."""
    cluster.patch(DEPLOYMENTS, NS, deployment, {"status": {"replicas": ready, "readyReplicas": ready}}, status=True)


def terminated(cluster: EmulatedCluster, pod: dict[str, Any], phase: str, message: str | None) -> None:
    """What the kubelet reports when the trainer's container exits: the phase, and the content of its
    terminationMessagePath file as the container's termination message."""
    state: dict[str, Any] = {"exitCode": 0 if phase == "Succeeded" else 1, "reason": "Completed"}
    if message is not None:
        state["message"] = message
    container = pod["spec"]["containers"][0]["name"]
    body = {"phase": phase, "containerStatuses": [{"name": container, "state": {"terminated": state}}]}
    cluster.patch(PODS, NS, pod["metadata"]["name"], {"status": body}, status=True)


def test_pool_and_job_lifecycle(cluster: EmulatedCluster, add_node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    add_node()
    cluster.create(POOLS, pool_body(outputClaims=["swarm-runs"]))
    with OperatorProcess(cluster, NS) as op:
        st = wait_for(
            lambda: status(cluster, POOLS, "pool").get("observedGeneration") and status(cluster, POOLS, "pool"),
            what=f"pool status\n{op.log()}",
        )
        assert replicas(cluster) == {A: 1, B: 0, C: 0}
        assert sorted(s["metadata"]["name"] for s in cluster.list(SERVICES, NS)) == [A, B, C]
        assert [(s["name"], s["state"]) for s in st["specialists"]] == [("a", "Warm"), ("b", "Cold"), ("c", "Cold")]
        assert st["spawnBudget"] == 3 and st["gpus"] == 1 and st["capacitySource"] == "nvml"
        assert cond(st, ConditionType.BudgetExceeded)["status"] == "False"
        # a is placed on gpu-1's GPU 0 but not ready: no controller runs here, so no pod exists yet.
        assert {k: row(st, "a")[k] for k in ("node", "gpu", "ready", "message")} == {
            "node": "gpu-1",
            "gpu": 0,
            "ready": False,
            "message": "no pod yet",
        }
        assert row(st, "b")["ready"] is False and "node" not in row(st, "b") and "message" not in row(st, "b")
        ready = cond(st, ConditionType.Ready)
        assert (ready["status"], ready["reason"]) == ("False", ConditionReason.WarmSetNotReady)
        assert ready["message"] == "waiting for warm specialists: a (no pod yet)"
        pool_uid = cluster.get(POOLS, NS, "pool")["metadata"]["uid"]
        for obj in cluster.list(DEPLOYMENTS, NS) + cluster.list(SERVICES, NS):
            assert obj["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGED_BY
            assert obj["metadata"]["ownerReferences"][0]["uid"] == pool_uid
        # Each specialist requests its resident MiB of the scheduler's GPU-memory resource; the placed one is pinned
        # to its node and GPU, a cold one nowhere.
        size = str(mib(resident_bytes(dtype="bfloat16", params=PARAMS_120M)))
        for name, pinned in ((A, True), (B, False)):
            pod_spec = cluster.get(DEPLOYMENTS, NS, name)["spec"]["template"]["spec"]
            container = pod_spec["containers"][0]
            assert container["resources"]["requests"][GPU_MEMORY_RESOURCE] == size, name
            assert container["resources"]["limits"][GPU_MEMORY_RESOURCE] == size, name
            assert pod_spec["runtimeClassName"] == "nvidia" and pod_spec["automountServiceAccountToken"] is False
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert (pod_spec["nodeSelector"].get(HOSTNAME_LABEL), env.get(VISIBLE_DEVICES_ENV)) == (
                ("gpu-1", "0") if pinned else (None, None)
            ), name

        # The Deployment controller reports a ready: the pool is Ready.
        set_ready(cluster, A)
        st = wait_for(
            lambda: (
                cond(status(cluster, POOLS, "pool"), ConditionType.Ready).get("status") == "True"
                and status(cluster, POOLS, "pool")
            ),
            what=f"pool Ready\n{op.log()}",
        )
        assert cond(st, ConditionType.Ready)["reason"] == ConditionReason.Reconciled
        assert cond(st, ConditionType.Ready)["message"] == "1 specialist(s) ready on 1 GPU(s)"
        assert row(st, "a")["ready"] is True and "message" not in row(st, "a")

        cluster.ready_deployments()  # from here on, as the Deployment controller would report them
        cluster.create(JOBS, job_body(output={"claimName": "swarm-runs"}))
        pod = wait_for(lambda: cluster.get(PODS, NS, POD), what="trainer pod")
        assert {"name": "work", "persistentVolumeClaim": {"claimName": "swarm-runs"}} in pod["spec"]["volumes"]
        assert pod["spec"]["containers"][0]["command"] == [
            "swarm", "release", "--data", "/data/sotab", "--run-dir", "/var/lib/swarm/run",
            "--fusion", "weighted_sum", "--max-specialists", "4", "--device", "cuda",
        ]  # fmt: skip
        assert pod["metadata"]["ownerReferences"][0]["uid"] == cluster.get(JOBS, NS, "job")["metadata"]["uid"]
        # The primary's GPU memory (gpuMemoryBytes, 6 GiB by default) counts in the scheduler's budget too.
        resources = pod["spec"]["containers"][0]["resources"]
        assert resources["requests"][GPU_MEMORY_RESOURCE] == resources["limits"][GPU_MEMORY_RESOURCE] == "6144"
        assert pod["spec"]["automountServiceAccountToken"] is False  # no token: nothing to call the API with
        assert replicas(cluster)[B] == 1  # cold specialist scaled from zero for the job
        st = wait_for(lambda: status(cluster, JOBS, "job").get("pods") and status(cluster, JOBS, "job"))
        assert st["phase"] == "Pending" and st["specialists"] == ["a", "b"] and st["output"] == "swarm-runs/job"

        cluster.patch(PODS, NS, POD, {"status": {"phase": "Running"}}, status=True)
        wait_for(lambda: status(cluster, JOBS, "job")["phase"] == "Running", what="Running")
        assert "metrics" not in status(cluster, JOBS, "job")
        # What the CLI does at the end of a run, with the trainer pod's environment: it writes the metrics to the
        # container's termination message file (here a file of the test's, in place of /dev/termination-log).
        container = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[TERMINATION_MESSAGE_ENV] == container["terminationMessagePath"] == TERMINATION_MESSAGE_PATH
        assert container["terminationMessagePolicy"] == "File"
        message_file = cluster.workdir / "termination-log"
        monkeypatch.setenv(TERMINATION_MESSAGE_ENV, str(message_file))
        published = {"micro_f1": 0.81, "macro_f1": 0.62, "throughput": 950.5, "critical_steps": 7}
        pod_writes = len(cluster.requests(lambda r: r.method == "PATCH" and "/pods/" in str(r.url.path)))
        assert publish_metrics(published)
        assert len(cluster.requests(lambda r: r.method == "PATCH" and "/pods/" in str(r.url.path))) == pod_writes
        # The kubelet reports the file's content when the container exits.
        terminated(cluster, pod, "Succeeded", message_file.read_text())
        metrics = {"microF1": 0.81, "macroF1": 0.62, "throughput": 950.5, "criticalSteps": 7}
        st = wait_for(
            lambda: status(cluster, JOBS, "job").get("metrics") == metrics and status(cluster, JOBS, "job"),
            what=f"metrics\n{op.log()}",
        )
        assert st["phase"] == "Succeeded" and cond(st, ConditionType.MetricsValid)["status"] == "True"
        # What the operator wrote passes the CRDs' schemas (metav1 conditions, list-maps), as on an API server.
        assert crdgen.validate_resource(cluster.get(JOBS, NS, "job")) == []
        assert crdgen.validate_resource(cluster.get(POOLS, NS, "pool")) == []
        # The job no longer claims b; with idleTimeoutSeconds 0 the resync timer scales it back to zero.
        wait_for(lambda: replicas(cluster)[B] == 0, what=f"b scaled to zero\n{op.log()}")
    assert len(cluster.list(PODS, NS)) == 1


def test_missing_pool_sets_condition_then_recovers(cluster: EmulatedCluster, add_node: Any) -> None:
    add_node()
    cluster.ready_deployments()
    cluster.create(JOBS, job_body(pool="later"))
    with OperatorProcess(cluster, NS) as op:
        st = wait_for(
            lambda: cond(status(cluster, JOBS, "job"), ConditionType.PoolReady) and status(cluster, JOBS, "job"),
            what=f"PoolReady condition\n{op.log()}",
        )
        assert st["phase"] == "Pending"
        assert cond(st, ConditionType.PoolReady)["reason"] == ConditionReason.PoolNotFound
        assert "SpecialistPool 'later' not found in namespace 'swarm'" in cond(st, ConditionType.PoolReady)["message"]
        assert cluster.get(PODS, NS, POD) is None
        cluster.create(POOLS, pool_body("later"))
        wait_for(lambda: cluster.get(PODS, NS, POD), what=f"pod after pool appears\n{op.log()}")
        wait_for(lambda: cond(status(cluster, JOBS, "job"), ConditionType.PoolReady).get("status") == "True")
        assert op.proc is not None and op.proc.poll() is None  # handled, not crashed


def test_unknown_specialist_and_invalid_pool_are_conditions(cluster: EmulatedCluster, add_node: Any) -> None:
    add_node()
    bad = pool_body("bad", warm=("zz",))  # the API server's CEL rule would reject this; the emulator does not
    cluster.create(POOLS, bad)
    cluster.create(POOLS, pool_body())
    cluster.create(JOBS, job_body(specialists=("nope",)))
    # Also rejected by the CRD (CEL) on a real API server: evaluate needs a checkpoint. No pod is created.
    cluster.create(JOBS, job_body("eval", mode="evaluate"))
    with OperatorProcess(cluster, NS) as op:
        st = wait_for(lambda: status(cluster, JOBS, "eval").get("phase") == "Failed" and status(cluster, JOBS, "eval"))
        assert (
            cond(st, ConditionType.SpecValid)["reason"] == ConditionReason.InvalidSpec and "checkpoint" in st["message"]
        )
        assert cluster.get(PODS, NS, trainer_pod_name("eval")) is None
        st = wait_for(
            lambda: cond(status(cluster, POOLS, "bad"), ConditionType.Ready) and status(cluster, POOLS, "bad"),
            what=f"invalid pool\n{op.log()}",
        )
        assert (
            cond(st, ConditionType.Ready)["reason"] == ConditionReason.InvalidSpec
            and "zz" in cond(st, ConditionType.Ready)["message"]
        )
        st = wait_for(
            lambda: (
                cond(status(cluster, JOBS, "job"), ConditionType.SpecialistsGranted) and status(cluster, JOBS, "job")
            )
        )
        assert cond(st, ConditionType.SpecialistsGranted)["reason"] == ConditionReason.UnknownSpecialist
        assert "nope" in cond(st, ConditionType.SpecialistsGranted)["message"]
        assert cluster.list(DEPLOYMENTS, NS) and all(
            d["metadata"]["name"].startswith("pool--") for d in cluster.list(DEPLOYMENTS, NS)
        )


def test_restart_mid_reconcile_creates_no_duplicates(cluster: EmulatedCluster, add_node: Any) -> None:
    add_node()
    cluster.ready_deployments()
    cluster.create(POOLS, pool_body(warm=("a", "b", "c")))
    cluster.create(JOBS, job_body(specialists=("c",)))
    # Hold the creation of the second Deployment: the operator is killed while that request is in flight.
    release = cluster.hold(
        lambda r: (
            r.method == "POST"
            and str(r.url.path).endswith("/deployments")
            and (r.data or {}).get("metadata", {}).get("name") == B
        )
    )
    first = OperatorProcess(cluster, NS).start()
    wait_for(
        lambda: cluster.requests(
            lambda r: (
                r.method == "POST" and str(r.url.path).endswith("/deployments") and r.data["metadata"]["name"] == B
            )
        ),
        what=f"held\n{first.log()}",
    )
    assert cluster.get(DEPLOYMENTS, NS, A) is not None and cluster.get(DEPLOYMENTS, NS, C) is None
    first.kill()
    release()  # the dead client's request is dropped by the server (aiohttp cancels it on disconnect)
    with OperatorProcess(cluster, NS) as second:
        wait_for(lambda: status(cluster, JOBS, "job").get("pods"), what=f"job after restart\n{second.log()}")
        wait_for(lambda: status(cluster, POOLS, "pool").get("warmCount") == 3, what="pool status")
        assert replicas(cluster) == {A: 1, B: 1, C: 1}
        assert len(cluster.list(SERVICES, NS)) == 3 and len(cluster.list(PODS, NS)) == 1
        created = [
            r.data["metadata"]["name"]
            for r in cluster.requests(lambda r: r.method == "POST" and str(r.url.path).endswith("/deployments"))
        ]
        assert created.count(A) == 1  # the second run found it and did not re-create it
        assert "Traceback" not in second.log()


def test_a_deleted_job_releases_its_claim_without_a_finalizer(cluster: EmulatedCluster, add_node: Any) -> None:
    """No finalizer on jobs or pools (they are deleted with the operator down: tests/cluster/test_deletion.py); the
    job's DELETED event releases its claim. Its trainer pod goes by its owner reference (no garbage collector
    here)."""
    add_node()
    cluster.ready_deployments()
    cluster.create(POOLS, pool_body())
    cluster.create(JOBS, job_body(specialists=("c",)))
    with OperatorProcess(cluster, NS) as op:
        pod = wait_for(lambda: cluster.get(PODS, NS, POD), what=f"pod\n{op.log()}")
        assert pod["metadata"]["ownerReferences"][0]["uid"] == cluster.get(JOBS, NS, "job")["metadata"]["uid"]
        wait_for(lambda: status(cluster, JOBS, "job").get("pods"), what="job status")
        for res, name in ((JOBS, "job"), (POOLS, "pool")):
            assert f"{PREFIX}finalizer" not in (cluster.get(res, NS, name)["metadata"].get("finalizers") or [])
        assert replicas(cluster)[C] == 1
        cluster.delete(JOBS, NS, "job")
        wait_for(lambda: cluster.get(JOBS, NS, "job") is None, what=f"job gone\n{op.log()}")
        wait_for(lambda: replicas(cluster)[C] == 0, what="claim released, c scaled to zero")


def test_shrinking_budget_scales_warm_set_down(cluster: EmulatedCluster, add_node: Any) -> None:
    add_node()
    cluster.create(POOLS, pool_body(warm=("a", "b", "c")))
    with OperatorProcess(cluster, NS) as op:
        wait_for(lambda: status(cluster, POOLS, "pool").get("warmCount") == 3, what=f"3 warm\n{op.log()}")
        one = status(cluster, POOLS, "pool")["specialists"][0]["residentBytes"]
        # The node now reports a GPU that fits the 1 GiB reserve plus two specialists only.
        small = (1 << 30) + 2 * one + one // 2
        reading = {"source": "nvml", "gpus": [{"index": 0, "total": small, "free": small}]}
        cluster.patch(NODES, None, "gpu-1", {"metadata": {"annotations": {GPU_MEMORY_ANNOTATION: json.dumps(reading)}}})
        st = wait_for(
            lambda: status(cluster, POOLS, "pool").get("warmCount") == 2 and status(cluster, POOLS, "pool"),
            what="warm set shrunk",
        )
        assert replicas(cluster) == {A: 1, B: 1, C: 0}
        assert (
            cond(st, ConditionType.BudgetExceeded)["status"] == "True"
            and "c" in cond(st, ConditionType.BudgetExceeded)["message"]
        )
        assert cond(st, ConditionType.Ready)["reason"] == ConditionReason.WarmSetOverBudget and st["spawnBudget"] == 2
        assert st["residentBytes"] <= st["capacityBytes"]


def test_conflicts_are_retried(cluster: EmulatedCluster, add_node: Any) -> None:
    add_node(total=RTX_4090_TOTAL, gpus=2)
    cluster.conflict(
        lambda r: r.method == "PATCH" and r.subresource == "status" and str(r.url.path).startswith(f"/apis/{GROUP}/"),
        times=3,
    )
    cluster.create(POOLS, pool_body())
    with OperatorProcess(cluster, NS) as op:
        st = wait_for(lambda: status(cluster, POOLS, "pool").get("gpus"), what=f"status despite 409s\n{op.log()}")
        assert st == 2
        assert len(cluster.requests(lambda r: r.method == "PATCH" and r.subresource == "status")) >= 4


def test_adapt_job_reads_experts_from_disk_and_scales_nothing_up(cluster: EmulatedCluster, add_node: Any) -> None:
    add_node()
    cluster.create(POOLS, pool_body())
    cluster.create(JOBS, job_body(mode="adapt", specialists=("b", "c"), domain="commerce"))
    with OperatorProcess(cluster, NS) as op:
        pod = wait_for(lambda: cluster.get(PODS, NS, POD), what=f"adapt pod\n{op.log()}")
        command = pod["spec"]["containers"][0]["command"]
        assert command[:2] == ["swarm", "adapt"] and command[-6:] == [
            "--expert",
            "b=/models/specialists",
            "--expert",
            "c=/models/specialists",
            "--device",
            "cuda",
        ]
        st = wait_for(lambda: status(cluster, JOBS, "job").get("pods") and status(cluster, JOBS, "job"))
        assert st["specialists"] == [] and cond(st, ConditionType.SpecialistsGranted)["status"] == "True"
        assert replicas(cluster) == {A: 1, B: 0, C: 0}  # only the warm one runs


def test_pools_on_the_same_gpu_share_its_memory(cluster: EmulatedCluster, add_node: Any) -> None:
    """Two pools selecting the same GPU never admit more than it holds together; when one pool goes, the other
    takes the memory it released."""
    one = resident_bytes(dtype="bfloat16", params=PARAMS_120M)
    room = 3 * one + one // 2
    add_node(total=(1 << 30) + room)  # the 1 GiB reserve and three specialists: both pools want two
    cluster.create(POOLS, pool_body("first", names=("a", "b"), warm=("a", "b")))
    cluster.create(POOLS, pool_body("second", names=("x", "y"), warm=("x", "y")))
    with OperatorProcess(cluster, NS) as op:

        def settled() -> tuple[dict[str, Any], dict[str, Any]] | None:
            first, second = status(cluster, POOLS, "first"), status(cluster, POOLS, "second")
            counts = (first.get("warmCount"), second.get("warmCount"))
            seen = (first.get("otherPoolsBytes"), second.get("otherPoolsBytes"))
            held = (second.get("residentBytes"), first.get("residentBytes"))
            return (first, second) if counts in {(2, 1), (1, 2)} and seen == held else None

        first, second = wait_for(settled, what=f"three of four warm specialists admitted\n{op.log()}")
        assert sum(replicas(cluster).values()) == 3
        for mine, theirs in ((first, second), (second, first)):
            assert sum(u["bytes"] for u in theirs["gpuUsage"]) == theirs["residentBytes"]
            assert mine["residentBytes"] + mine["otherPoolsBytes"] <= room
        starved, full = ("first", "second") if first["warmCount"] == 1 else ("second", "first")
        assert "other pools hold" in cond(status(cluster, POOLS, starved), ConditionType.BudgetExceeded)["message"]
        cluster.delete(POOLS, NS, full)
        wait_for(lambda: status(cluster, POOLS, starved).get("warmCount") == 2, what=f"memory released\n{op.log()}")
        assert status(cluster, POOLS, starved)["otherPoolsBytes"] == 0


def test_a_re_created_job_never_shows_the_old_pods_phase_or_metrics(cluster: EmulatedCluster, add_node: Any) -> None:
    add_node()
    cluster.ready_deployments()
    cluster.create(POOLS, pool_body())
    cluster.create(JOBS, job_body())
    with OperatorProcess(cluster, NS) as op:
        wait_for(lambda: cluster.get(PODS, NS, POD), what=f"pod\n{op.log()}")
    old_uid = cluster.get(JOBS, NS, "job")["metadata"]["uid"]
    terminated(cluster, cluster.get(PODS, NS, POD), "Succeeded", json.dumps({"microF1": 0.9, "throughput": 12.0}))
    assert termination_message(cluster.get(PODS, NS, POD))
    # Deleted without cascading while the operator is down: the pod stays (the emulator has no garbage collector).
    cluster.patch(JOBS, NS, "job", {"metadata": {"finalizers": None}})
    cluster.delete(JOBS, NS, "job")
    job_status_write = lambda r: r.method == "PATCH" and str(r.url.path).endswith("/swarmjobs/job/status")  # noqa: E731
    before = len(cluster.requests(job_status_write))
    new_uid = cluster.create(JOBS, job_body())["metadata"]["uid"]
    assert new_uid != old_uid and cluster.get(PODS, NS, POD)["metadata"]["ownerReferences"][0]["uid"] == old_uid
    with OperatorProcess(cluster, NS) as op:
        pod = wait_for(
            lambda: (p := cluster.get(PODS, NS, POD)) and p["metadata"]["ownerReferences"][0]["uid"] == new_uid and p,
            what=f"a pod of the new job\n{op.log()}",
        )
        assert termination_message(pod) is None and (pod.get("status") or {}).get("phase") != "Succeeded"
        st = wait_for(lambda: status(cluster, JOBS, "job").get("pods") and status(cluster, JOBS, "job"))
        assert st["phase"] == "Pending" and "metrics" not in st
        assert cond(st, ConditionType.TrainerPod)["status"] == "True"
    written = [r.data.get("status") or {} for r in cluster.requests(job_status_write)[before:]]
    assert written and all(s.get("phase") != "Succeeded" and "metrics" not in s for s in written), written


def test_specialist_deployment_events_reconcile_the_pool(cluster: EmulatedCluster, add_node: Any) -> None:
    """A specialist Deployment's event (its readyReplicas, as the controller reports them) reconciles its pool at
    once, without waiting for the resync timer; a warm specialist that cannot be scheduled keeps the pool not
    Ready, with the scheduler's reason."""
    add_node()
    cluster.create(POOLS, pool_body(warm=("a", "b")))
    # A resync timer that never fires during this test: what reacts is the Deployment event handler.
    with OperatorProcess(cluster, NS, resync=600) as op:
        st = wait_for(
            lambda: status(cluster, POOLS, "pool").get("warmCount") == 2 and status(cluster, POOLS, "pool"),
            what=f"pool status\n{op.log()}",
        )
        assert cond(st, ConditionType.Ready)["reason"] == ConditionReason.WarmSetNotReady
        # b's pod, as the scheduler leaves it when another namespace's pods hold the node's GPU memory.
        reason = "0/1 nodes are available: 1 Insufficient swarm.ai/gpu-memory-mib."
        cluster.create(
            PODS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{B}-7d9f-x2", "namespace": NS, "labels": specialist_labels("pool", "b")},
                "spec": {"containers": [{"name": "specialist", "image": "swarm"}]},
            },
        )
        cluster.patch(
            PODS,
            NS,
            f"{B}-7d9f-x2",
            {
                "status": {
                    "phase": "Pending",
                    "conditions": [
                        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": reason}
                    ],
                }
            },
            status=True,
        )
        set_ready(cluster, A)
        st = wait_for(
            lambda: row(status(cluster, POOLS, "pool"), "a")["ready"] and status(cluster, POOLS, "pool"),
            timeout=15,
            what=f"a ready, from its Deployment's event\n{op.log()}",
        )
        assert row(st, "b")["ready"] is False and row(st, "b")["message"] == f"Unschedulable: {reason}"
        ready = cond(st, ConditionType.Ready)
        assert (ready["status"], ready["reason"]) == ("False", ConditionReason.WarmSetNotReady)
        assert ready["message"] == f"waiting for warm specialists: b (Unschedulable: {reason})"

        set_ready(cluster, B)
        st = wait_for(
            lambda: (
                cond(status(cluster, POOLS, "pool"), ConditionType.Ready).get("status") == "True"
                and status(cluster, POOLS, "pool")
            ),
            timeout=15,
            what=f"pool Ready\n{op.log()}",
        )
        assert cond(st, ConditionType.Ready)["message"] == "2 specialist(s) ready on 1 GPU(s)"
        assert all(row(st, n)["ready"] for n in ("a", "b")) and not row(st, "c")["ready"]

        # A Deployment deleted by hand: its event re-creates it (not ready: a fresh Deployment reports nothing).
        cluster.delete(DEPLOYMENTS, NS, A)
        dep = wait_for(lambda: cluster.get(DEPLOYMENTS, NS, A), timeout=15, what=f"a re-created\n{op.log()}")
        assert dep["spec"]["replicas"] == 1
        assert dep["metadata"]["labels"][LABEL_POOL] == "pool" and dep["metadata"]["labels"][LABEL_SPECIALIST] == "a"
        wait_for(
            lambda: (
                cond(status(cluster, POOLS, "pool"), ConditionType.Ready).get("reason")
                == ConditionReason.WarmSetNotReady
            ),
            timeout=15,
            what=f"a not ready again\n{op.log()}",
        )
        # None of it came from the resync timer.
        assert "pool-resync" not in op.log()
        assert "Traceback" not in op.log()


def test_the_schedulers_verdict_on_a_specialist_pod_reaches_the_pool_status(
    cluster: EmulatedCluster, add_node: Any
) -> None:
    """The scheduler marks a specialist's pod Unschedulable after the reconcile its creation caused read it: no
    Deployment field the pool reads changes, yet the pool says why it waits at once, not at the next resync (a slow
    CI machine read "pod Pending" and kept it for the resync period)."""
    add_node()
    pod = f"{A}-7d9f-x2"  # as its ReplicaSet creates it, before the scheduler has looked at it
    meta = {"name": pod, "namespace": NS, "labels": specialist_labels("pool", "a")}
    cluster.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []}})
    cluster.create(POOLS, pool_body(warm=("a",)))
    with OperatorProcess(cluster, NS, resync=600) as op:
        wait_for(
            lambda: message_of(status(cluster, POOLS, "pool"), "a") == "pod Pending",
            timeout=15,
            what=f"the pod seen before the scheduler decides\n{op.log()}",
        )
        reason = "0/1 nodes are available: 1 Insufficient swarm.ai/gpu-memory-mib."
        unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": reason}
        cluster.patch(PODS, NS, pod, {"status": {"phase": "Pending", "conditions": [unschedulable]}}, status=True)
        st = wait_for(
            lambda: (s := status(cluster, POOLS, "pool")) and message_of(s, "a").startswith("Unschedulable") and s,
            timeout=15,
            what=f"the scheduler's reason in the pool status\n{op.log()}",
        )
        assert cond(st, ConditionType.Ready)["message"] == f"waiting for warm specialists: a (Unschedulable: {reason})"


def test_a_job_waiting_for_its_specialist_starts_when_it_is_ready(cluster: EmulatedCluster, add_node: Any) -> None:
    """The trainer pod waits for the job's specialist to be ready; its Deployment's readiness event wakes the job
    (a retry that never comes here: 600 s), and a job its pool cannot admit is not woken."""
    add_node()
    cluster.create(POOLS, pool_body())
    cluster.create(JOBS, job_body(specialists=("b",)))
    cluster.create(JOBS, job_body("huge", specialists=("c",), gpuMemoryBytes=RTX_4090_TOTAL))  # never fits
    with OperatorProcess(cluster, NS, retry=600, resync=600) as op:
        st = wait_for(
            lambda: (
                cond(status(cluster, JOBS, "job"), ConditionType.SpecialistsReady).get("status") == "False"
                and status(cluster, JOBS, "job")
            ),
            what=f"waiting for b\n{op.log()}",
        )
        message = cond(st, ConditionType.SpecialistsReady)["message"]
        assert message == "waiting for specialists to be ready: b (no pod yet)"
        assert cluster.get(PODS, NS, POD) is None and replicas(cluster)[B] == 1
        set_ready(cluster, B)
        wait_for(lambda: cluster.get(PODS, NS, POD), timeout=10, what=f"trainer pod after b is ready\n{op.log()}")
        huge = status(cluster, JOBS, "huge")
        assert cond(huge, ConditionType.SpecialistsGranted)["reason"] == ConditionReason.BudgetExceeded
        assert cluster.get(PODS, NS, trainer_pod_name("huge")) is None
        assert "ERROR" not in op.log()
