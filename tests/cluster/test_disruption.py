"""PodDisruptionBudgets, priorityClassName and probes on the real control plane (issue #31, platform team): the
eviction API refuses to take down a running job's or a warm specialist's one replica while the pool is up (the
disruption controller of kube-controller-manager computes the budgets), the budget goes with the job's claim and
with the pool's `podDisruptionBudgets: false`; a drain of a node running warm specialists still completes (the
operator re-places them off the cordoned node, deleting the old pods through their Deployments), while one that
would take a running job's specialists waits until the job has finished; the priority classes and the probes land
on the pods."""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest
from test_lifecycle import JOB, finish_pod, replicas, wait_warm_ready
from test_node_fitness import WARM, wait_running_on
from test_real_cluster import SPECIALIST_PODS, TRAINER_PODS, job_status, pods, running

from swarm.operator import builders
from swarm.testing.control_plane import REPO, ControlPlane
from swarm.testing.emulator import OperatorProcess
from swarm.testing.operator_process import CORE, NS, apply_sample, gpu_node

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
POLICY = "/apis/policy/v1"
SCHEDULING = "/apis/scheduling.k8s.io/v1"
PRIORITY_CLASSES = REPO / "manifests" / "priorityclasses.yaml"
HELD = (*WARM, "people")  # what the sample job runs with: its specialist and the warm set it was granted


def pdb(plane: ControlPlane, specialist: str) -> dict[str, Any] | None:
    return plane.get(POLICY, "poddisruptionbudgets", builders.specialist_object_name("sotab", specialist), NS)


def guarding(plane: ControlPlane, specialist: str) -> bool:
    """The specialist's budget exists, the disruption controller has seen it, and it protects one healthy pod."""
    budget = pdb(plane, specialist) or {}
    status = budget.get("status") or {}
    return (
        bool(budget)
        and status.get("observedGeneration") == budget["metadata"]["generation"]
        and status.get("currentHealthy") == 1
        and status.get("disruptionsAllowed") == 0
    )


def wait_guarded(plane: ControlPlane, op: OperatorProcess, names: tuple[str, ...]) -> None:
    try:
        plane.wait_for(lambda: all(guarding(plane, n) for n in names), timeout=60, what=f"budgets of {names}")
    except TimeoutError as exc:
        found = {n: pdb(plane, n) for n in names}
        raise AssertionError(f"{exc}; budgets: {json.dumps(found)[:3000]}\n{op.log()}") from None


def live_pods(plane: ControlPlane, specialist: str) -> list[dict[str, Any]]:
    """The specialist's pods that are not being deleted."""
    return [
        p
        for p in pods(plane, f"{SPECIALIST_PODS},{builders.LABEL_SPECIALIST}={specialist}")
        if not p["metadata"].get("deletionTimestamp")
    ]


def specialist_pod(plane: ControlPlane, specialist: str) -> dict[str, Any]:
    (pod,) = live_pods(plane, specialist)
    return pod


def evict(plane: ControlPlane, pod: dict[str, Any]) -> tuple[int, str]:
    """(HTTP status, message) of an Eviction of `pod` (what `kubectl drain` posts), as cluster admin."""
    name = pod["metadata"]["name"]
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": NS}}
    try:
        plane.request("POST", plane.path(CORE, "pods", NS, name, "eviction"), body)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    return 201, ""


@pytest.fixture
def priority_classes(cluster: ControlPlane) -> Iterator[None]:
    """manifests/priorityclasses.yaml applied (cluster-scoped: removed after the test)."""
    cluster.kubectl("apply", "-f", str(PRIORITY_CLASSES))
    yield
    for name in ("swarm-specialist", "swarm-trainer"):
        cluster.delete(SCHEDULING, "priorityclasses", name)


def test_evicting_a_held_or_warm_specialist_is_refused_while_the_pool_guards_it(
    cluster: ControlPlane, operator: OperatorProcess, priority_classes: None
) -> None:
    gpu_node(cluster, "gpu-1")
    apply_sample(cluster, "specialistpool.yaml", idleTimeoutSeconds=0, priorityClassName="swarm-specialist")
    wait_warm_ready(cluster, operator)  # so that the job is granted the warm pair (HELD)
    apply_sample(cluster, "swarmjob.yaml", priorityClassName="swarm-trainer")
    cluster.wait_for(lambda: job_status(cluster, JOB).get("phase") == "Running", what=f"job Running\n{operator.log()}")
    assert job_status(cluster, JOB)["specialists"] == sorted(HELD)
    wait_guarded(cluster, operator, HELD)
    # Only what is warm or held has a budget: the pool's other specialists are cold (no pods, no budgets).
    trainer_budget = builders.trainer_pdb_name(JOB)
    cluster.wait_for(
        lambda: (
            (b := cluster.get(POLICY, "poddisruptionbudgets", trainer_budget, NS))
            and (b.get("status") or {}).get("currentHealthy") == 1
        ),
        what=f"the trainer's budget\n{operator.log()}",
    )
    budgets = cluster.list(POLICY, "poddisruptionbudgets", NS)
    assert sorted(b["metadata"]["name"] for b in budgets) == sorted(
        [trainer_budget, *(builders.specialist_object_name("sotab", n) for n in HELD)]
    )
    owner = budgets[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("SpecialistPool", "sotab", True)

    # Priority classes and probes, as the API server admitted the pods (priority resolved from the class).
    people = specialist_pod(cluster, "people")
    assert (people["spec"]["priorityClassName"], people["spec"]["priority"]) == ("swarm-specialist", 100000)
    container = people["spec"]["containers"][0]
    for kind in ("readinessProbe", "startupProbe", "livenessProbe"):
        assert container[kind]["grpc"]["port"] == builders.HEALTH_PORT, kind
    (trainer,) = running(cluster, TRAINER_PODS)
    assert (trainer["spec"]["priorityClassName"], trainer["spec"]["priority"]) == ("swarm-trainer", 50000)

    # The eviction API (kubectl drain) refuses the running job's specialist, a warm one and the job's trainer.
    for victim in (specialist_pod(cluster, "people"), specialist_pod(cluster, "geographic"), trainer):
        code, message = evict(cluster, victim)
        assert code == 429 and "disruption budget" in message, (victim["metadata"]["name"], code, message)
    assert specialist_pod(cluster, "people")["metadata"]["uid"] == people["metadata"]["uid"]
    assert job_status(cluster, JOB)["phase"] == "Running"

    # The job finishes: its specialist is released (scaled to zero: idleTimeoutSeconds 0); its budgets go.
    finish_pod(cluster, trainer, 0, json.dumps({"microF1": 0.5}))
    cluster.wait_for(lambda: job_status(cluster, JOB).get("phase") == "Succeeded", what="job Succeeded")
    cluster.wait_for(
        lambda: pdb(cluster, "people") is None and not cluster.get(POLICY, "poddisruptionbudgets", trainer_budget, NS),
        what=f"the job's budgets deleted\n{operator.log()}",
    )
    assert replicas(cluster)["people"] == 0
    wait_guarded(cluster, operator, WARM)

    # The platform says so: podDisruptionBudgets false deletes the pool's budgets, and a warm pod may be evicted.
    cluster.kubectl(
        "patch", "specialistpool", "sotab", "-n", NS, "--type=merge", "-p",
        json.dumps({"spec": {"podDisruptionBudgets": False}}),
    )  # fmt: skip
    cluster.wait_for(
        lambda: not cluster.list(POLICY, "poddisruptionbudgets", NS), what=f"budgets deleted\n{operator.log()}"
    )
    evicted = specialist_pod(cluster, "geographic")
    assert evict(cluster, evicted) == (201, "")
    # (between the evicted pod's deletion and its replacement's creation the specialist has no live pod)
    old_uid = evicted["metadata"]["uid"]
    cluster.wait_for(
        lambda: [p["metadata"]["uid"] for p in live_pods(cluster, "geographic")] not in ([], [old_uid]),
        what="the evicted warm specialist replaced by its Deployment",
    )


def test_a_drain_moves_warm_specialists_and_waits_for_a_running_jobs(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    """One node runs a job's trainer and specialists (the warm pair it was granted, and its own): a drain of that
    node is refused while the job runs (the operator keeps its specialists there: moving them would restart them
    under the trainer; the trainer has a budget too). Once the job has finished, the same drain completes: the
    operator moves the warm pair to the other node (its Deployments delete the old pods, which no budget blocks)
    and scales the job's own down."""
    gpu_node(cluster, "gpu-1")
    apply_sample(cluster, "specialistpool.yaml", idleTimeoutSeconds=0)
    wait_warm_ready(cluster, operator)  # so that the job is granted the warm pair (HELD)
    apply_sample(cluster, "swarmjob.yaml")
    cluster.wait_for(lambda: job_status(cluster, JOB).get("phase") == "Running", what=f"job Running\n{operator.log()}")
    assert job_status(cluster, JOB)["specialists"] == sorted(HELD)
    wait_running_on(cluster, operator, "gpu-1", HELD)
    wait_guarded(cluster, operator, HELD)
    gpu_node(cluster, "gpu-2")
    (trainer,) = running(cluster, TRAINER_PODS)
    drain = ("drain", "gpu-1", "--ignore-daemonsets", "--delete-emptydir-data", "--grace-period=0")
    refused = cluster.kubectl(*drain, "--timeout=8s", check=False)
    assert refused.returncode != 0 and "disruption budget" in refused.stderr, refused.stderr
    wait_running_on(cluster, operator, "gpu-1", HELD)  # cordoned, not drained: all still there
    assert running(cluster, TRAINER_PODS)[0]["metadata"]["uid"] == trainer["metadata"]["uid"]
    assert job_status(cluster, JOB)["phase"] == "Running"

    finish_pod(cluster, trainer, 0, json.dumps({"microF1": 0.5}))
    cluster.wait_for(lambda: job_status(cluster, JOB).get("phase") == "Succeeded", what="job Succeeded")
    cluster.kubectl(*drain, "--timeout=50s")
    wait_running_on(cluster, operator, "gpu-2", WARM)
    wait_guarded(cluster, operator, WARM)  # guarded again where they run now
    assert replicas(cluster)["people"] == 0 and pdb(cluster, "people") is None
