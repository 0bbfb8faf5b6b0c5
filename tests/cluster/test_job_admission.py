"""A job's least privilege on the real control plane (issue #31, defect 6): it writes only to a claim its pool
allows (outputClaims) and never to the served models' claim, and its extraArgs cannot override the operator's flags;
a refused job is Failed with the reason in its SpecValid condition and a Warning event, and gets no trainer pod."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from status_conditions import find_condition
from test_claims import warnings
from test_lifecycle import replicas
from test_real_cluster import TRAINER_PODS, job_status, pods, pool_status, ready_condition, running, sample

from swarm.operator import builders
from swarm.operator.models import ConditionReason, ConditionType
from swarm.testing.control_plane import ControlPlane
from swarm.testing.emulator import OperatorProcess
from swarm.testing.operator_process import NS, apply_sample, gpu_node

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]


def apply_job(plane: ControlPlane, name: str, **spec: Any) -> None:
    doc = sample("swarmjob.yaml", **spec)
    doc["metadata"]["name"] = name
    plane.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(doc))


def refused(plane: ControlPlane, job: str, op: OperatorProcess) -> dict[str, Any]:
    """The job's SpecValid condition once the operator has failed it."""
    status = plane.wait_for(
        lambda: (s := job_status(plane, job)).get("phase") in {"Failed", "Running"} and s,
        what=f"job {job} decided\n{job_status(plane, job)}\n{op.log()}",
    )
    assert status["phase"] == "Failed", status
    return find_condition(status, ConditionType.SpecValid)


def test_a_job_writes_only_to_a_claim_its_pool_allows_and_never_to_the_models(
    cluster: ControlPlane, operator: OperatorProcess
) -> None:
    """A pool that (by mistake) lists the served models' claim still never gives it to a job read-write; a claim off
    its list is refused; the listed output claim is mounted at the work directory, the models stay read-only."""
    gpu_node(cluster, "gpu-1")
    apply_sample(cluster, "specialistpool.yaml", outputClaims=[builders.MODELS_CLAIM])
    cluster.wait_for(lambda: ready_condition(pool_status(cluster)).get("status") == "True", what="pool Ready")
    apply_job(cluster, "steal", output={"claimName": builders.MODELS_CLAIM})
    apply_job(cluster, "runs", output={"claimName": "swarm-runs"})
    steal = refused(cluster, "steal", operator)
    assert steal["reason"] == ConditionReason.OutputClaimNotAllowed
    assert "mounted by the pod templates" in steal["message"]
    runs = refused(cluster, "runs", operator)
    assert runs["reason"] == ConditionReason.OutputClaimNotAllowed
    assert f"not in the outputClaims of SpecialistPool 'sotab' (allowed: {builders.MODELS_CLAIM})" in runs["message"]
    assert not pods(cluster, TRAINER_PODS)
    assert replicas(cluster)["people"] == 0  # never scaled up for a refused job
    cluster.wait_for(
        lambda: any(r == ConditionReason.OutputClaimNotAllowed for r, _ in warnings(cluster, "steal")),
        what="a Warning event on the refused job",
    )

    apply_sample(cluster, "specialistpool.yaml")  # outputClaims: [swarm-runs]
    apply_job(cluster, "writer", output={"claimName": "swarm-runs"})
    pod = cluster.wait_for(lambda: running(cluster, TRAINER_PODS), what=f"writer's trainer\n{operator.log()}")[0]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    work = mounts[builders.WORK_DIR]
    assert volumes[work["name"]]["persistentVolumeClaim"] == {"claimName": "swarm-runs"} and not work.get("readOnly")
    models = mounts[builders.MODELS_DIR]
    assert models["readOnly"] is True
    assert volumes[models["name"]]["persistentVolumeClaim"] == {"claimName": builders.MODELS_CLAIM, "readOnly": True}


def test_extra_args_cannot_override_the_operators_flags(cluster: ControlPlane, operator: OperatorProcess) -> None:
    """A second --run-dir (click keeps the last value) would send the trainer's writes elsewhere: refused."""
    gpu_node(cluster, "gpu-1")
    apply_sample(cluster, "specialistpool.yaml")
    apply_job(cluster, "override", extraArgs=["--seed", "7", "--run-dir", "/var/lib/swarm/elsewhere"])
    spec_valid = refused(cluster, "override", operator)
    assert spec_valid["reason"] == ConditionReason.ReservedFlag and "--run-dir" in spec_valid["message"]
    assert not pods(cluster, TRAINER_PODS)
    apply_job(cluster, "seeded", extraArgs=["--seed", "7"])
    pod = cluster.wait_for(lambda: running(cluster, TRAINER_PODS), what=f"seeded's trainer\n{operator.log()}")[0]
    command = pod["spec"]["containers"][0]["command"]
    assert command[-2:] == ["--seed", "7"] and command.count("--run-dir") == 1
