"""A trainer pod sees its GPU on a real node (issue #31, defect 8), checked on the real control plane against the
NVIDIA container toolkit's documented behaviour (kwok runs no container): the trainer is pinned to exactly the GPU
its pool planned, as its specialists are."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_claims import env_of
from test_real_cluster import TRAINER_PODS, job_status, pool_status, running

from swarm.operator import builders
from swarm.testing.control_plane import REPO, ControlPlane
from swarm.testing.operator_process import apply_sample, gpu_node, operator_process

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]


def test_a_trainer_pod_is_pinned_to_exactly_its_planned_gpu(cluster: ControlPlane, tmp_path: Path) -> None:
    """NVIDIA container toolkit: NVIDIA_VISIBLE_DEVICES unset exposes no GPU (runc's behaviour), `all` every GPU
    of the node, an index that one; NVIDIA_DRIVER_CAPABILITIES chooses the driver libraries (compute: CUDA), and
    older toolkits default to utility (NVML) alone. A template that sets NVIDIA_VISIBLE_DEVICES=all, as CUDA base
    images do, must not leave the trainer seeing the whole node: its pod carries the planned index, once."""
    templates = tmp_path / "templates"
    templates.mkdir()
    for kind, template in builders.load_templates(REPO / "manifests" / "templates").items():
        template["spec"]["containers"][0]["env"].append({"name": builders.VISIBLE_DEVICES_ENV, "value": "all"})
        (templates / f"{kind}.yaml").write_text(yaml.safe_dump(template))
    gpu_node(cluster, "gpu-1")
    apply_sample(cluster, "specialistpool.yaml")
    apply_sample(cluster, "swarmjob.yaml")
    with operator_process(cluster, tmp_path / "operator.log", SWARM_POD_TEMPLATES=str(templates)) as op:
        pod = cluster.wait_for(lambda: running(cluster, TRAINER_PODS), what=f"trainer running\n{op.log()}")[0]
        status = cluster.wait_for(
            lambda: (s := job_status(cluster, "sotab-train")).get("phase") == "Running" and s, what="Running"
        )
    node, gpu = status["trainerNode"], status["trainerGpu"]
    assert pod["spec"]["nodeName"] == node == pod["spec"]["nodeSelector"][builders.HOSTNAME_LABEL] == "gpu-1"
    env = pod["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"] == builders.VISIBLE_DEVICES_ENV] == [str(gpu)]
    assert env_of(pod)[builders.DRIVER_CAPABILITIES_ENV] == "compute,utility"
    assert pod["spec"]["runtimeClassName"] == builders.GPU_RUNTIME_CLASS
    assert pod["spec"]["containers"][0]["command"][-2:] == ["--device", "cuda"]
    # Its specialists are pinned the same way, to the GPUs their pool planned.
    rows = {r["name"]: r for r in pool_status(cluster)["specialists"]}
    for specialist in running(cluster, f"{builders.LABEL_COMPONENT}=specialist"):
        row = rows[specialist["metadata"]["labels"][builders.LABEL_SPECIALIST]]
        env = specialist["spec"]["containers"][0]["env"]
        assert [e["value"] for e in env if e["name"] == builders.VISIBLE_DEVICES_ENV] == [str(row["gpu"])]
        assert env_of(specialist)[builders.DRIVER_CAPABILITIES_ENV] == "compute,utility"
