"""Object builders (operator/builders.py) and status derivations (operator/status.py): pure functions."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from status_conditions import find_condition

from swarm.operator import budget, builders, status
from swarm.operator.models import ConditionReason, ConditionType, SpecialistPoolSpec, SwarmJobSpec
from swarm.testing.emulator import job_body, pool_body

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(30)


def _with_meta(body: dict, uid: str = "uid-1") -> dict:
    body["metadata"]["uid"] = uid
    return body


def test_dns_names_are_valid_and_deterministic() -> None:
    assert builders.specialist_object_name("pool", "a") == "pool--a"
    long = builders.dns_name("p" * 60, "specialist")
    assert len(long) == 63 and long == builders.dns_name("p" * 60, "specialist")
    assert builders.dns_name("9lives", "x").startswith("s-9lives")
    assert builders.dns_name("My.Pool", "x") != builders.dns_name("my-pool", "x")  # no silent collisions


def test_specialist_deployment_and_service() -> None:
    pool = _with_meta(pool_body())
    spec = SpecialistPoolSpec.model_validate(pool["spec"])
    templates = builders.default_templates()
    dep = builders.specialist_deployment(pool, spec.specialists[1], 0, spec.node_selector, templates["specialist"])
    assert dep["metadata"]["name"] == builders.specialist_object_name("pool", "b") and dep["spec"]["replicas"] == 0
    assert dep["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "swarm.ai/v1alpha1",
            "kind": "SpecialistPool",
            "name": "pool",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "swarm-operator"
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    assert container["command"] == [
        "swarm",
        "serve-specialist",
        "--specialist",
        "b",
        "--host",
        "0.0.0.0",  # all interfaces: the Service must reach it
        "--port",
        "50051",
        "--checkpoint-dir",
        "/models/specialists",
        "--dtype",
        "bfloat16",
        "--device",
        "cuda",  # the template runs under the nvidia RuntimeClass
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SWARM_SPECIALIST_MODEL"] == "/models/specialists" and env["SWARM_SPECIALIST_DTYPE"] == "bfloat16"
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "swarm-models", "readOnly": True}} in pod["spec"][
        "volumes"
    ]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # No whole-device claim (it would make a GPU exclusive to one pod): the nvidia RuntimeClass, no token.
    assert pod["spec"]["runtimeClassName"] == "nvidia" and pod["spec"]["automountServiceAccountToken"] is False
    for kind in ("requests", "limits"):
        assert builders.GPU_RESOURCE not in container["resources"][kind]
        # Not placed and no resident bytes given: no GPU-memory request, no pinning.
        assert budget.GPU_MEMORY_RESOURCE not in container["resources"][kind]
    assert builders.VISIBLE_DEVICES_ENV not in env
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    svc = builders.specialist_service(pool, spec.specialists[1])
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["port"] == 50051
    assert templates["specialist"]["spec"]["containers"][0].get("command") is None  # template not mutated


def test_placed_specialist_requests_its_gpu_memory_and_is_pinned_to_its_gpu() -> None:
    """A specialist requests its resident bytes, in whole MiB (rounded up), of swarm.ai/gpu-memory-mib (requests
    equal limits: extended resources cannot be overcommitted), and a placed one is pinned to its node and GPU."""
    pool = _with_meta(pool_body())
    spec = SpecialistPoolSpec.model_validate(pool["spec"])
    template = builders.default_templates()["specialist"]
    resident = 1536 * budget.MIB + 1
    dep = builders.specialist_deployment(
        pool, spec.specialists[0], 1, spec.node_selector, template, resident_bytes=resident, gpu=("gpu-2", 1)
    )
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert budget.GPU_MEMORY_RESOURCE == "swarm.ai/gpu-memory-mib" and budget.mib(resident) == 1537
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "4Gi", "swarm.ai/gpu-memory-mib": "1537"},
        "limits": {"memory": "8Gi", "swarm.ai/gpu-memory-mib": "1537"},
    }
    assert pod["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090",
        "kubernetes.io/hostname": "gpu-2",
    }
    env = [e for e in container["env"] if e["name"] == "NVIDIA_VISIBLE_DEVICES"]
    assert env == [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "1"}]
    assert template["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "4Gi"},
        "limits": {"memory": "8Gi"},
    }  # template not mutated

    # Not placed (cold, over budget): it still requests its memory, but is pinned nowhere.
    cold = builders.specialist_deployment(
        pool, spec.specialists[1], 0, spec.node_selector, template, resident_bytes=budget.MIB
    )["spec"]["template"]["spec"]
    assert cold["containers"][0]["resources"]["requests"][budget.GPU_MEMORY_RESOURCE] == "1"
    assert builders.HOSTNAME_LABEL not in cold["nodeSelector"]
    assert all(e["name"] != builders.VISIBLE_DEVICES_ENV for e in cold["containers"][0]["env"])

    # A CPU template (a custom ConfigMap): no GPU memory requested and no GPU pinning, even when placed.
    cpu = builders.specialist_deployment(
        pool, spec.specialists[0], 1, {}, _without_gpu(template), resident_bytes=resident, gpu=("gpu-2", 1)
    )["spec"]["template"]["spec"]
    resources = cpu["containers"][0]["resources"]
    assert all(budget.GPU_MEMORY_RESOURCE not in resources[kind] for kind in ("requests", "limits"))
    assert cpu.get("nodeSelector") == {}
    assert all(e["name"] != builders.VISIBLE_DEVICES_ENV for e in cpu["containers"][0]["env"])


def test_request_gpu_memory_only_on_gpu_pods() -> None:
    gpu = {"runtimeClassName": "nvidia", "containers": [{"name": "c"}]}
    builders.request_gpu_memory(gpu, 6 * 1024**3)
    assert gpu["containers"][0]["resources"] == {
        "requests": {budget.GPU_MEMORY_RESOURCE: "6144"},
        "limits": {budget.GPU_MEMORY_RESOURCE: "6144"},
    }
    claimed = {"containers": [{"name": "c", "resources": {"limits": {builders.GPU_RESOURCE: "1"}}}]}
    builders.request_gpu_memory(claimed, 1)
    assert claimed["containers"][0]["resources"] == {
        "requests": {budget.GPU_MEMORY_RESOURCE: "1"},
        "limits": {builders.GPU_RESOURCE: "1", budget.GPU_MEMORY_RESOURCE: "1"},
    }
    cpu = {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}
    builders.request_gpu_memory(cpu, 6 * 1024**3)
    assert cpu == {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}


TRAINER_COMMANDS = {
    "train": [
        "swarm", "release", "--data", "/data/sotab", "--run-dir", "/var/lib/swarm/run",
        "--fusion", "gated", "--max-specialists", "3", "--device", "cuda",
    ],
    "evaluate": [
        "swarm", "eval", "--data", "/data/sotab", "--checkpoint", "/models/primary/sotab",
        "--json", "/var/lib/swarm/metrics.json", "--device", "cuda",
    ],
    "annotate": [
        "swarm", "annotate", "--data", "/data/sotab", "--checkpoint", "/models/primary/sotab",
        "--out", "/var/lib/swarm/predictions.csv", "--json", "/var/lib/swarm/summary.json", "--device", "cuda",
    ],
}  # fmt: skip


@pytest.mark.parametrize("mode", sorted(TRAINER_COMMANDS))
def test_trainer_pod_per_mode(mode: str) -> None:
    extra = {"checkpoint": "/models/primary/sotab"} if mode != "train" else {}
    job = _with_meta(
        job_body(
            mode=mode, fusion="gated", parl={"lambda1": 0.3}, maxSpecialists=3, extraArgs=["--seed", "7"], **extra
        ),
        "job-uid",
    )
    spec = SwarmJobSpec.model_validate(job["spec"])
    endpoints = {n: builders.specialist_endpoint("swarm", "pool", n) for n in ("b", "a")}
    pod = builders.trainer_pod(job, spec, endpoints, builders.default_templates()["trainer"])
    container = pod["spec"]["containers"][0]
    # Exactly the CLI's contract, then extraArgs; PARL settings are reserved for the orchestrator, never passed.
    assert container["command"] == [*TRAINER_COMMANDS[mode], "--seed", "7"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SWARM_SPECIALIST_ENDPOINTS"] == "a=pool--a.swarm.svc:50051,b=pool--b.swarm.svc:50051"
    # Metrics travel in the termination message: the publisher writes the file the kubelet reads at exit.
    assert env["SWARM_TERMINATION_MESSAGE"] == builders.TERMINATION_MESSAGE_PATH == "/dev/termination-log"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"
    assert "SWARM_METRICS_ANNOTATION" not in env
    # No token, no Role: a trainer runs user extraArgs and never calls the API.
    assert pod["spec"]["serviceAccountName"] == "swarm-trainer"
    assert pod["spec"]["automountServiceAccountToken"] is False and pod["spec"]["runtimeClassName"] == "nvidia"
    # The primary's GPU memory (SwarmJobSpec.gpuMemoryBytes, default 6 GiB) counts against the node's budget.
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "swarm.ai/gpu-memory-mib": "6144"},
        "limits": {"memory": "32Gi", "swarm.ai/gpu-memory-mib": "6144"},
    }
    assert all(builders.GPU_RESOURCE not in container["resources"][kind] for kind in ("requests", "limits"))
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not mounts["/var/lib/swarm"].get("readOnly") and mounts["/models"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[mounts["/var/lib/swarm"]["name"]] == {"name": "work", "emptyDir": {}}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "swarm-models", "readOnly": True}
    assert pod["metadata"]["name"] == "job-primary" and pod["spec"]["restartPolicy"] == "Never"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "job-uid"
    assert pod["metadata"]["labels"]["swarm.ai/job"] == "job"


def test_adapt_pod_reads_its_experts_from_the_pools_model_paths() -> None:
    job = _with_meta(job_body(mode="adapt", specialists=("b", "a"), domain="commerce"), "job-uid")
    spec = SwarmJobSpec.model_validate(job["spec"])
    experts = {"a": "/models/specialists", "b": "/models/b-v2"}
    pod = builders.trainer_pod(job, spec, {}, builders.default_templates()["trainer"], experts=experts)
    assert pod["spec"]["containers"][0]["command"] == [
        "swarm", "adapt", "--data", "/data/sotab", "--domain", "commerce", "--out", "/var/lib/swarm/run/adapted",
        "--reports-dir", "/var/lib/swarm/reports", "--expert", "b=/models/b-v2", "--expert", "a=/models/specialists",
        "--device", "cuda",
    ]  # fmt: skip


@pytest.mark.parametrize(("gpu_memory", "mib"), [(None, "6144"), (3 * 1024**3 + 1, "3073"), (1024**2, "1")])
def test_trainer_pod_requests_the_jobs_gpu_memory(gpu_memory: int | None, mib: str) -> None:
    extra = {"gpuMemoryBytes": gpu_memory} if gpu_memory is not None else {}
    job = _with_meta(job_body(**extra), "job-uid")
    spec = SwarmJobSpec.model_validate(job["spec"])
    assert spec.gpu_memory_bytes == (gpu_memory or 6 * 1024**3)
    pod = builders.trainer_pod(job, spec, {}, builders.default_templates()["trainer"])
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["requests"][budget.GPU_MEMORY_RESOURCE] == resources["limits"][budget.GPU_MEMORY_RESOURCE] == mib
    # A CPU template ignores it.
    cpu = builders.trainer_pod(job, spec, {}, _without_gpu(builders.default_templates()["trainer"]))
    resources = cpu["spec"]["containers"][0]["resources"]
    assert all(budget.GPU_MEMORY_RESOURCE not in resources[kind] for kind in ("requests", "limits"))
    with pytest.raises(ValueError):
        SwarmJobSpec.model_validate({**job["spec"], "gpuMemoryBytes": 1024**2 - 1})


def _without_gpu(template: dict[str, Any]) -> dict[str, Any]:
    """A CPU-only template (a custom ConfigMap): no nvidia RuntimeClass, no nvidia.com/gpu."""
    template = copy.deepcopy(template)
    template["spec"].pop("runtimeClassName")
    resources = template["spec"]["containers"][0]["resources"]
    for kind in ("requests", "limits"):
        resources[kind].pop(builders.GPU_RESOURCE, None)
    return template


def test_device_follows_the_templates_gpu_runtime_or_request() -> None:
    """Pods whose template runs under the nvidia RuntimeClass, or requests nvidia.com/gpu, run on `cuda`; a
    CPU-only template (a custom ConfigMap) on `cpu`; a `--device` in extraArgs is refused (the operator sets it)."""
    templates = builders.default_templates()
    assert builders.pod_device(templates["specialist"]) == builders.pod_device(templates["trainer"]) == "cuda"
    for template in templates.values():
        assert template["spec"]["runtimeClassName"] == "nvidia"
        assert template["spec"]["automountServiceAccountToken"] is False
        resources = template["spec"]["containers"][0]["resources"]
        assert all(builders.GPU_RESOURCE not in resources[kind] for kind in ("requests", "limits"))
    pool = _with_meta(pool_body())
    spec = SpecialistPoolSpec.model_validate(pool["spec"])
    cpu = _without_gpu(templates["specialist"])
    assert builders.pod_device(cpu) == "cpu"
    assert builders.pod_device({**cpu, "spec": {**cpu["spec"], "runtimeClassName": "runc"}}) == "cpu"
    dep = builders.specialist_deployment(pool, spec.specialists[0], 1, {}, cpu)
    assert dep["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == ["--device", "cpu"]
    job = _with_meta(job_body())
    pod = builders.trainer_pod(job, SwarmJobSpec.model_validate(job["spec"]), {}, _without_gpu(templates["trainer"]))
    assert pod["spec"]["containers"][0]["command"][-2:] == ["--device", "cpu"]
    job = _with_meta(job_body(extraArgs=["--device", "cuda:1"]))
    with pytest.raises(ValueError, match="--device"):
        builders.trainer_pod(job, SwarmJobSpec.model_validate(job["spec"]), {}, _without_gpu(templates["trainer"]))
    # A template claiming whole devices (the device plugin, no RuntimeClass) is a GPU template too.
    for kind, value in (("limits", "1"), ("requests", 2)):
        claimed = _without_gpu(templates["trainer"])
        claimed["spec"]["containers"][0]["resources"][kind][builders.GPU_RESOURCE] = value
        assert builders.pod_device(claimed) == "cuda", kind
    zero = _without_gpu(templates["trainer"])
    zero["spec"]["containers"][0]["resources"]["limits"][builders.GPU_RESOURCE] = "0"
    zero["spec"]["containers"][0]["resources"]["requests"][builders.GPU_RESOURCE] = 0
    assert builders.pod_device(zero) == "cpu"
    broken = _without_gpu(templates["trainer"])
    broken["spec"]["containers"][0]["resources"]["limits"][builders.GPU_RESOURCE] = "one"
    assert builders.pod_device(broken) == "cpu"


@pytest.mark.parametrize(("sub_path", "expected"), [(None, "job"), ("team/sotab-1", "team/sotab-1")])
def test_trainer_pod_writes_to_the_output_claim(sub_path: str | None, expected: str) -> None:
    output = {"claimName": "swarm-runs"} | ({"subPath": sub_path} if sub_path else {})
    job = _with_meta(job_body(output=output), "job-uid")
    spec = SwarmJobSpec.model_validate(job["spec"])
    pod = builders.trainer_pod(job, spec, {}, builders.default_templates()["trainer"])
    (mount,) = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == "/var/lib/swarm"]
    assert mount["subPath"] == expected
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume == {"name": "work", "persistentVolumeClaim": {"claimName": "swarm-runs"}}
    assert "--run-dir" in (command := pod["spec"]["containers"][0]["command"])
    assert command[command.index("--run-dir") + 1].startswith("/var/lib/swarm/")


def test_manifest_templates_equal_builtin_defaults() -> None:
    for name, template in builders.default_templates().items():
        path = ROOT / "manifests" / "templates" / f"{name}.yaml"
        assert yaml.safe_load(path.read_text()) == template, f"{path} drifted from builders.default_templates()"
    loaded = builders.load_templates(ROOT / "manifests" / "templates")
    assert loaded == builders.default_templates()


def test_image_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(builders.IMAGE_ENV, "registry.local/swarm:test")
    pool = _with_meta(pool_body())
    spec = SpecialistPoolSpec.model_validate(pool["spec"])
    dep = builders.specialist_deployment(pool, spec.specialists[0], 1, {}, builders.default_templates()["specialist"])
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/swarm:test"


def test_conditions_keep_transition_time_unless_flipped() -> None:
    ready, ok, bad = ConditionType.Ready, ConditionReason.Reconciled, ConditionReason.NoCapacity
    first = status.merge_conditions([], [status.condition(ready, True, ok)], now="t1", generation=1)
    same = status.merge_conditions(first, [status.condition(ready, True, ok, "again")], now="t2", generation=2)
    flipped = status.merge_conditions(same, [status.condition(ready, False, bad)], now="t3", generation=2)
    assert [c["lastTransitionTime"] for c in (first[0], same[0], flipped[0])] == ["t1", "t1", "t3"]
    assert same[0]["message"] == "again" and same[0]["observedGeneration"] == 2
    assert find_condition({"conditions": flipped}, ready)["reason"] == "NoCapacity"
    assert find_condition({}, ConditionType.Complete) == {}
    # Written as plain strings (they go into JSON), and only the operator's own types and reasons.
    assert type(flipped[0]["type"]) is str and type(flipped[0]["reason"]) is str
    with pytest.raises(ValueError):
        status.condition("Rdy", True, ok)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        status.condition(ready, True, "Ok")  # type: ignore[arg-type]


def _terminated(message: str | None, *, phase: str = "Succeeded") -> dict[str, Any]:
    """A trainer pod whose container ended with `message` as its termination message."""
    terminated: dict[str, Any] = {"exitCode": 0, "reason": "Completed"}
    if message is not None:
        terminated["message"] = message
    return {
        "metadata": {"annotations": {"swarm.ai/metrics": '{"microF1": 0.1}'}},  # the old channel: ignored now
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}]},
    }


def test_termination_message_only_once_terminated() -> None:
    assert status.termination_message(None) is None
    assert status.termination_message({}) is None
    assert status.termination_message({"status": {"phase": "Pending"}}) is None
    running = {"status": {"containerStatuses": [{"name": "trainer", "state": {"running": {"startedAt": "t"}}}]}}
    assert status.termination_message(running) is None
    assert status.termination_message(_terminated(None)) is None
    assert status.termination_message(_terminated("")) is None
    assert status.termination_message(_terminated('{"microF1": 0.9}')) == '{"microF1": 0.9}'
    # lastState (an earlier restart) is not the current state.
    restarted = {"status": {"containerStatuses": [{"state": {}, "lastState": {"terminated": {"message": "x"}}}]}}
    assert status.termination_message(restarted) is None


def test_phase_and_metrics_from_pod() -> None:
    assert status.phase_from_pod(None).value == "Pending"
    assert status.phase_from_pod({"status": {"phase": "Unknown"}}).value == "Pending"
    assert status.phase_from_pod({"status": {"phase": "Failed"}}).value == "Failed"
    pod = _terminated(json.dumps({"microF1": 0.9, "criticalSteps": 3, "perClass": {"Person": 0.5}}))
    assert status.metrics_from_pod(pod) == ({"microF1": 0.9, "criticalSteps": 3}, None)
    # The annotation alone (the old channel) carries nothing any more.
    assert status.metrics_from_pod({"metadata": _terminated(None)["metadata"]}) == ({}, None)
    assert status.metrics_from_pod(_terminated(None)) == ({}, None)
    metrics, error = status.metrics_from_pod(_terminated('{"microF1": 7}'))
    assert metrics == {} and error is not None and error.startswith("ignored the trainer's termination message: ")
    assert status.metrics_from_pod(_terminated("{oops"))[0] == {}
    # A failed run's message (terminationMessagePolicy File: never the log tail) is read the same way.
    assert status.metrics_from_pod(_terminated('{"macroF1": 0.5}', phase="Failed")) == ({"macroF1": 0.5}, None)


@pytest.mark.parametrize("value", ["1e400", "-1e400", "NaN", "Infinity", "-Infinity"])
def test_non_finite_metrics_are_dropped_one_by_one(value: str) -> None:
    raw = f'{{"microF1": 0.9, "throughput": {value}, "criticalSteps": 3}}'
    metrics, error = status.metrics_from_pod(_terminated(raw))
    assert metrics == {"microF1": 0.9, "criticalSteps": 3}
    assert error == "dropped non-finite values in the termination message: throughput"
    assert status.metrics_from_pod(_terminated("[1]")) == (
        {},
        "ignored the trainer's termination message: not a JSON object (a JSON list)",
    )


DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def test_specialist_object_names_never_collide_and_are_dns_labels() -> None:
    # With "-" as the separator both pairs named their Deployment and Service x-y-z.
    assert builders.specialist_object_name("x-y", "z") == "x-y--z"
    assert builders.specialist_object_name("x", "y-z") == "x--y-z"
    longest_pool, longest_specialist = "p" + "-q" * 31, "s" * 40  # 63 and 40 characters: the CRDs' limits
    names = {
        builders.specialist_object_name(pool, specialist)
        for pool in (longest_pool, longest_pool[:-2] + "-r", "x", "x-y")
        for specialist in (longest_specialist, longest_specialist[:-1] + "t", "z", "y-z")
    }
    assert len(names) == 16 and all(DNS_1035.match(n) and len(n) <= 63 for n in names), names
    for job in ("j", "j" * 63, "j-" * 31 + "k"):
        assert DNS_1035.match(builders.trainer_pod_name(job)) and len(builders.trainer_pod_name(job)) <= 63
