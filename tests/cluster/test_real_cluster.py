"""The operator on a real control plane: CRs validated by the API server, specialists scheduled by the real
scheduler on kwok's fake RTX 4090 nodes within the GPU-memory resource, trainer pods run to completion, owner
references garbage-collected, and a crash mid-reconcile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from status_conditions import find_condition

from swarm.operator import budget, builders
from swarm.operator.models import ConditionReason, ConditionType
from swarm.testing.control_plane import EXIT_CODE_ANNOTATION, REPO, TERMINATION_MESSAGE_ANNOTATION, ControlPlane
from swarm.testing.emulator import OperatorProcess
from swarm.testing.operator_process import APPS, CORE, NS, SWARM, apply_sample, gpu_node, operator_process

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]
GIB = 1024**3


def pool_status(plane: ControlPlane, name: str = "sotab", namespace: str = NS) -> dict[str, Any]:
    return (plane.get(SWARM, "specialistpools", name, namespace) or {}).get("status") or {}


def job_status(plane: ControlPlane, name: str) -> dict[str, Any]:
    return (plane.get(SWARM, "swarmjobs", name, NS) or {}).get("status") or {}


def ready_condition(status: dict[str, Any]) -> dict[str, Any]:
    return find_condition(status, ConditionType.Ready)


def pods(plane: ControlPlane, selector: str, namespace: str = NS) -> list[dict[str, Any]]:
    return plane.list(CORE, "pods", namespace, selector)


def running(plane: ControlPlane, selector: str, namespace: str = NS) -> list[dict[str, Any]]:
    return [p for p in pods(plane, selector, namespace) if p["status"].get("phase") == "Running"]


SPECIALIST_PODS = f"{builders.LABEL_COMPONENT}=specialist"
TRAINER_PODS = f"{builders.LABEL_COMPONENT}=trainer"


def sample(name: str, **changes: Any) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "manifests" / "samples" / name).read_text())
    doc["spec"].update(changes)
    return doc


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        ("specialistpool.yaml", {"warm": ["nope"]}, "every name in warm must be one of the specialists"),
        ("specialistpool.yaml", {"idleTimeoutSeconds": -1}, "spec.idleTimeoutSeconds"),
        ("specialistpool.yaml", {"gpus": 2}, 'unknown field "spec.gpus"'),
        ("swarmjob.yaml", {"mode": "evaluate"}, "checkpoint (the path of a trained primary directory) is required"),
        ("swarmjob.yaml", {"maxSpecialists": 0}, "more specialists requested than maxSpecialists"),
        ("swarmjob.yaml", {"mode": "serve"}, 'spec.mode: Unsupported value: "serve"'),
    ],
)
def test_invalid_custom_resources_are_rejected_by_the_api_server(
    cluster: ControlPlane, name: str, change: dict[str, Any], expected: str
) -> None:
    doc = sample(name, **change)
    result = cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert result.returncode != 0 and expected in result.stderr, result.stderr
    plural = "specialistpools" if doc["kind"] == "SpecialistPool" else "swarmjobs"
    assert cluster.get(SWARM, plural, doc["metadata"]["name"], NS) is None


def test_pool_pods_are_scheduled_within_the_gpu_memory_resource(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    gpu_node(cluster, "gpu-1")
    apply_sample(cluster, "specialistpool.yaml")
    status = cluster.wait_for(
        lambda: (s := pool_status(cluster)) and ready_condition(s).get("status") == "True" and s,
        what=f"pool Ready\n{operator.log()}",
    )
    assert ready_condition(status)["reason"] == ConditionReason.Reconciled
    rows = {r["name"]: r for r in status["specialists"]}
    assert {n for n, r in rows.items() if r["ready"]} == {"geographic", "temporal"}
    assert all(rows[n]["node"] == "gpu-1" and rows[n]["gpu"] == 0 for n in ("geographic", "temporal"))
    placed = running(cluster, SPECIALIST_PODS)
    assert len(placed) == 2 and all(p["spec"]["nodeName"] == "gpu-1" for p in placed)
    for pod in placed:
        name = pod["metadata"]["labels"][builders.LABEL_SPECIALIST]
        container = pod["spec"]["containers"][0]
        requested = container["resources"]["requests"][budget.GPU_MEMORY_RESOURCE]
        assert requested == container["resources"]["limits"][budget.GPU_MEMORY_RESOURCE]
        assert int(requested) == budget.mib(rows[name]["residentBytes"])
        assert builders.GPU_RESOURCE not in container["resources"]["requests"]  # no whole-device claim
        assert {"name": builders.VISIBLE_DEVICES_ENV, "value": "0"} in container["env"]
        assert pod["spec"]["nodeSelector"][builders.HOSTNAME_LABEL] == "gpu-1"
        assert pod["spec"]["automountServiceAccountToken"] is False
    deployments = {d["metadata"]["name"]: d for d in cluster.list(APPS, "deployments", NS)}
    assert sum(int(d["status"].get("readyReplicas") or 0) for d in deployments.values()) == 2


def test_scheduler_refuses_overcommit_across_namespaces(cluster: ControlPlane, tmp_path: Path) -> None:
    """Two namespaces' pools each plan a 14 GiB specialist on the one 24 GiB GPU: the scheduler binds one; the
    other pool reports the scheduler's reason instead of claiming it is Ready."""
    other = "team-b"
    cluster.kubectl("create", "namespace", other)
    try:
        cluster.kubectl("apply", "-n", other, "-f", str(REPO / "manifests" / "rbac.yaml"))
        cluster.kubectl(
            "create", "clusterrolebinding", f"{other}-nodes", "--clusterrole=swarm-operator-nodes",
            f"--serviceaccount={other}:swarm-operator",
        )  # fmt: skip
        gpu_node(cluster, "gpu-1")
        big = {"name": "big", "domain": "everything", "model": "/models/specialists", "residentBytes": 14 * GIB}
        pool = sample("specialistpool.yaml", specialists=[big], warm=["big"])
        cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(pool))
        # The claims and Secrets exist only in namespace swarm: the other namespace's pods get emptyDirs instead.
        templates = tmp_path / "templates"
        templates.mkdir()
        for kind, template in builders.default_templates().items():
            for volume in template["spec"]["volumes"]:
                if "persistentVolumeClaim" in volume or "secret" in volume:
                    volume.pop("persistentVolumeClaim", None)
                    volume.pop("secret", None)
                    volume["emptyDir"] = {}
            (templates / f"{kind}.yaml").write_text(yaml.safe_dump(template))
        with (
            operator_process(cluster, tmp_path / "a.log"),
            operator_process(
                cluster,
                tmp_path / "b.log",
                namespace=other,
                SWARM_POD_TEMPLATES=str(templates),
            ) as second,
        ):
            cluster.wait_for(lambda: running(cluster, SPECIALIST_PODS), what="pool a's specialist running")
            cluster.kubectl("apply", "-n", other, "-f", "-", input=yaml.safe_dump(pool))
            # Its pod reads "Pending" until the scheduler has tried it; then the pool gives the scheduler's reason.
            status = cluster.wait_for(
                lambda: (s := pool_status(cluster, namespace=other))
                and "Insufficient swarm.ai/gpu-memory-mib" in ready_condition(s).get("message", "")
                and s,
                timeout=60,
                what=f"pool b not ready, with the scheduler's reason\n{second.log()}",
            )
            assert ready_condition(status)["reason"] == ConditionReason.WarmSetNotReady
            assert ready_condition(status)["status"] == "False"
            assert not running(cluster, SPECIALIST_PODS, other)
            cluster.wait_for(lambda: ready_condition(pool_status(cluster)).get("status") == "True", what="pool a")
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
        cluster.kubectl("delete", "clusterrolebinding", f"{other}-nodes", check=False)


def test_job_runs_to_succeeded_and_reports_its_termination_message(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    gpu_node(cluster, "gpu-1")
    apply_sample(cluster, "specialistpool.yaml")
    apply_sample(cluster, "swarmjob.yaml")
    pod = cluster.wait_for(lambda: running(cluster, TRAINER_PODS), what=f"trainer running\n{operator.log()}")[0]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["containers"][0]["resources"]["requests"][budget.GPU_MEMORY_RESOURCE] == "6144"
    cluster.wait_for(lambda: job_status(cluster, "sotab-train").get("phase") == "Running", what="job Running")
    cluster.wait_for(  # the job's cold specialist, scaled up for it
        lambda: len(running(cluster, f"{builders.LABEL_SPECIALIST}=people")) == 1, what="people running"
    )
    metrics = {"microF1": 0.81, "macroF1": 0.62, "throughput": 950.5, "criticalSteps": 7}
    cluster.patch(
        CORE,
        "pods",
        pod["metadata"]["name"],
        {"metadata": {"annotations": {EXIT_CODE_ANNOTATION: "0", TERMINATION_MESSAGE_ANNOTATION: json.dumps(metrics)}}},
        NS,
    )
    status = cluster.wait_for(
        lambda: (s := job_status(cluster, "sotab-train")).get("phase") == "Succeeded" and s,
        what=f"job Succeeded\n{operator.log()}",
    )
    assert status["metrics"] == metrics
    assert find_condition(status, ConditionType.Complete)["status"] == "True"


def test_deleting_a_pool_or_a_job_garbage_collects_its_children(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    gpu_node(cluster, "gpu-1")
    apply_sample(cluster, "specialistpool.yaml")
    apply_sample(cluster, "swarmjob.yaml")
    cluster.wait_for(lambda: running(cluster, TRAINER_PODS), what="trainer running")
    cluster.wait_for(lambda: len(running(cluster, SPECIALIST_PODS)) == 3, what="three specialists running")
    cluster.kubectl("delete", "-n", NS, "swarmjob", "sotab-train", "--wait=true", "--timeout=60s")
    cluster.wait_for(lambda: not pods(cluster, TRAINER_PODS), what="trainer pod collected")
    cluster.kubectl("delete", "-n", NS, "specialistpool", "sotab", "--wait=true", "--timeout=60s")
    cluster.wait_for(
        lambda: not cluster.list(APPS, "deployments", NS)
        and not cluster.list(APPS, "replicasets", NS)
        and not pods(cluster, SPECIALIST_PODS)
        and not cluster.list(CORE, "services", NS, f"{builders.LABEL_POOL}=sotab"),
        what="pool's children collected",
    )


def test_operator_killed_mid_reconcile_and_restarted_makes_no_duplicates(
    cluster: ControlPlane, tmp_path: Path
) -> None:
    gpu_node(cluster, "gpu-1")
    names = [s["name"] for s in sample("specialistpool.yaml")["spec"]["specialists"]]
    apply_sample(cluster, "specialistpool.yaml", warm=names)
    apply_sample(cluster, "swarmjob.yaml")
    first = operator_process(cluster, tmp_path / "first.log").start()
    try:
        cluster.wait_for(lambda: cluster.list(APPS, "deployments", NS), interval=0.02, what="first Deployment")
    finally:
        first.kill()
    with operator_process(cluster, tmp_path / "second.log") as second:
        cluster.wait_for(
            lambda: ready_condition(pool_status(cluster)).get("status") == "True" and running(cluster, TRAINER_PODS),
            what=f"pool Ready and trainer running after restart\n{second.log()}",
        )
        assert len(cluster.list(APPS, "deployments", NS)) == len(names)
        assert len(cluster.list(APPS, "replicasets", NS)) == len(names)
        assert len(cluster.list(CORE, "services", NS, f"{builders.LABEL_POOL}=sotab")) == len(names)
        assert len(pods(cluster, SPECIALIST_PODS)) == len(names)
        assert len(pods(cluster, TRAINER_PODS)) == 1
