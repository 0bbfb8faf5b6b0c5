"""How a GPU pod is pinned to the GPU its pool planned (builders.pin_gpu, issue #31 defect 8), by the NVIDIA container
toolkit's documented contract: NVIDIA_VISIBLE_DEVICES unset exposes no GPU, an index exposes that one;
NVIDIA_DRIVER_CAPABILITIES picks the driver libraries (compute: CUDA)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from swarm.operator import builders
from swarm.operator.models import SpecialistPoolSpec, SwarmJobSpec
from swarm.testing.emulator import job_body, pool_body

pytestmark = pytest.mark.timeout(30)
TEMPLATES = builders.default_templates()


def _job(**extra: Any) -> tuple[dict[str, Any], SwarmJobSpec]:
    body = job_body(**extra)
    body["metadata"]["uid"] = "uid-1"
    return body, SwarmJobSpec.model_validate(body["spec"])


def _env(pod: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["name"], e.get("value", "")) for e in pod["spec"]["containers"][0]["env"]]


def test_a_placed_trainer_sees_exactly_its_gpu() -> None:
    """NVIDIA_VISIBLE_DEVICES unset exposes no GPU (the container toolkit then behaves as runc): a trainer placed on
    a GPU gets its index, and the compute capability (the CUDA libraries) besides NVML's."""
    job, spec = _job()
    pod = builders.trainer_pod(job, spec, {}, TEMPLATES["trainer"], gpu=("gpu-2", 1))
    env = _env(pod)
    assert [v for n, v in env if n == builders.VISIBLE_DEVICES_ENV] == ["1"]
    assert [v for n, v in env if n == builders.DRIVER_CAPABILITIES_ENV] == ["compute,utility"]
    assert pod["spec"]["nodeSelector"] == {builders.HOSTNAME_LABEL: "gpu-2"}
    assert pod["spec"]["containers"][0]["command"][-2:] == ["--device", "cuda"]
    assert pod["spec"]["runtimeClassName"] == builders.GPU_RUNTIME_CLASS


def test_pinning_replaces_a_templates_visible_devices_and_keeps_its_capabilities() -> None:
    template = copy.deepcopy(TEMPLATES["trainer"])
    template["spec"]["containers"][0]["env"] += [
        {"name": builders.VISIBLE_DEVICES_ENV, "value": "all"},
        {"name": builders.DRIVER_CAPABILITIES_ENV, "value": "all"},
    ]
    job, spec = _job()
    env = _env(builders.trainer_pod(job, spec, {}, template, gpu=("gpu-1", 0)))
    assert [v for n, v in env if n == builders.VISIBLE_DEVICES_ENV] == ["0"]
    assert [v for n, v in env if n == builders.DRIVER_CAPABILITIES_ENV] == ["all"]


def test_specialists_are_pinned_the_same_way_and_cpu_pods_not_at_all() -> None:
    pool = pool_body()
    pool["metadata"]["uid"] = "uid-p"
    spec = SpecialistPoolSpec.model_validate(pool["spec"])
    dep = builders.specialist_deployment(pool, spec.specialists[0], 1, {}, TEMPLATES["specialist"], gpu=("g", 2))
    env = _env(dep["spec"]["template"])
    assert (builders.VISIBLE_DEVICES_ENV, "2") in env and (builders.DRIVER_CAPABILITIES_ENV, "compute,utility") in env
    cpu = copy.deepcopy(TEMPLATES["trainer"])
    del cpu["spec"]["runtimeClassName"]
    job, job_spec = _job()
    pod = builders.trainer_pod(job, job_spec, {}, cpu, gpu=("gpu-1", 0))
    assert all(n not in (builders.VISIBLE_DEVICES_ENV, builders.DRIVER_CAPABILITIES_ENV) for n, _ in _env(pod))
    assert builders.HOSTNAME_LABEL not in (pod["spec"].get("nodeSelector") or {})
