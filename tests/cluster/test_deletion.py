"""Deletion on the real control plane without the operator's help (issue #31, defect 9): pools and jobs carry no
finalizer (their children go by owner references and the garbage collector), so they are deleted while the operator
is down; and a namespace deleted under a running operator leaves no error in its log."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_lifecycle import JOB, start_job
from test_real_cluster import SPECIALIST_PODS, TRAINER_PODS, job_status, pods, running, sample

from swarm.operator import builders
from swarm.testing.control_plane import ControlPlane
from swarm.testing.emulator import OperatorProcess
from swarm.testing.operator_process import APPS, CORE, NS, SWARM, gpu_node, operator_process

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]


def test_pools_and_jobs_are_deleted_while_the_operator_is_down(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    start_job(cluster, operator)
    for plural, name in (("swarmjobs", JOB), ("specialistpools", "sotab")):
        assert not cluster.get(SWARM, plural, name, NS)["metadata"].get("finalizers"), plural
    operator.stop()
    cluster.delete(SWARM, "swarmjobs", JOB, NS)
    cluster.delete(SWARM, "specialistpools", "sotab", NS)
    cluster.wait_for(
        lambda: cluster.get(SWARM, "swarmjobs", JOB, NS) is None
        and cluster.get(SWARM, "specialistpools", "sotab", NS) is None,
        timeout=30,
        what="job and pool deleted without the operator",
    )
    cluster.wait_for(
        lambda: not cluster.list(APPS, "deployments", NS) and not cluster.list(CORE, "services", NS)
        and not pods(cluster, TRAINER_PODS) and not pods(cluster, SPECIALIST_PODS),
        timeout=60,
        what="their children collected by the garbage collector",
    )  # fmt: skip


def test_a_finished_job_deleted_under_a_running_operator_releases_its_specialist(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    start_job(cluster, operator)
    cluster.delete(SWARM, "swarmjobs", JOB, NS)
    cluster.wait_for(
        lambda: {
            d["metadata"]["labels"][builders.LABEL_SPECIALIST]: d["spec"]["replicas"]
            for d in cluster.list(APPS, "deployments", NS)
        }.get("people") == 0,
        what=f"people scaled to zero once its job is gone\n{operator.log()}",
    )
    cluster.wait_for(lambda: not pods(cluster, TRAINER_PODS), what="the trainer pod collected")


def test_deleting_a_namespace_under_a_running_operator_is_quiet(cluster: ControlPlane, tmp_path: Path) -> None:
    doomed = "doomed"
    cluster.kubectl("create", "namespace", doomed)
    binding = f"{doomed}-nodes"
    try:
        cluster.kubectl("apply", "-n", doomed, "-f", str(Path(__file__).parents[2] / "manifests" / "rbac.yaml"))
        cluster.kubectl(
            "create", "clusterrolebinding", binding, "--clusterrole=swarm-operator-nodes",
            f"--serviceaccount={doomed}:swarm-operator",
        )  # fmt: skip
        templates = tmp_path / "templates"
        templates.mkdir()
        for kind, template in builders.default_templates().items():
            for volume in template["spec"]["volumes"]:  # the claims and Secrets exist only in namespace swarm
                if "persistentVolumeClaim" in volume or "secret" in volume:
                    volume.pop("persistentVolumeClaim", None)
                    volume.pop("secret", None)
                    volume["emptyDir"] = {}
            (templates / f"{kind}.yaml").write_text(yaml.safe_dump(template))
        gpu_node(cluster, "gpu-1")
        with operator_process(
            cluster, tmp_path / "doomed.log", namespace=doomed, SWARM_POD_TEMPLATES=str(templates)
        ) as process:
            cluster.kubectl("apply", "-n", doomed, "-f", "-", input=yaml.safe_dump(sample("specialistpool.yaml")))
            job = sample("swarmjob.yaml")
            del job["spec"]["output"]
            cluster.kubectl("apply", "-n", doomed, "-f", "-", input=yaml.safe_dump(job))
            cluster.wait_for(
                lambda: (cluster.get(SWARM, "swarmjobs", JOB, doomed) or {}).get("status", {}).get("phase")
                == "Running",
                what=f"job Running\n{process.log()}",
            )
            assert running(cluster, SPECIALIST_PODS, doomed)
            cluster.kubectl("delete", "namespace", doomed, "--wait=false")
            cluster.wait_for(
                lambda: cluster.get(CORE, "namespaces", doomed) is None,
                timeout=120,
                what=f"namespace {doomed} deleted\n{process.log()}",
            )
            log = process.log()
        problems = [line for line in log.splitlines() if "ERROR" in line or "Traceback" in line]
        assert not problems, "\n".join(problems[:20])
    finally:
        cluster.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found")
        cluster.kubectl("delete", "namespace", doomed, "--ignore-not-found", "--wait=false")
    assert job_status(cluster, JOB) == {}  # nothing of it in namespace swarm
