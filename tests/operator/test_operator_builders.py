"""Object builders (operator/builders.py) and status derivations (operator/status.py): pure functions."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from emulator import job_body, pool_body

from swarm.operator import builders, status
from swarm.operator.models import ConditionReason, ConditionType, SpecialistPoolSpec, SwarmJobSpec

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
        "cuda",  # the template requests nvidia.com/gpu
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SWARM_SPECIALIST_MODEL"] == "/models/specialists" and env["SWARM_SPECIALIST_DTYPE"] == "bfloat16"
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "swarm-models", "readOnly": True}} in pod["spec"][
        "volumes"
    ]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    svc = builders.specialist_service(pool, spec.specialists[1])
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["port"] == 50051
    assert templates["specialist"]["spec"]["containers"][0].get("command") is None  # template not mutated


TRAINER_COMMANDS = {
    "train": [
        "swarm", "train", "--data", "/data/sotab", "--run-dir", "/var/lib/swarm/run",
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
    assert env["SWARM_METRICS_ANNOTATION"] == "swarm.ai/metrics"
    assert {"POD_NAME", "POD_NAMESPACE"} <= env.keys()
    assert pod["spec"]["serviceAccountName"] == "swarm-trainer" and pod["spec"]["automountServiceAccountToken"]
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


def _without_gpu(template: dict[str, Any]) -> dict[str, Any]:
    template = copy.deepcopy(template)
    resources = template["spec"]["containers"][0]["resources"]
    for kind in ("requests", "limits"):
        resources[kind].pop(builders.GPU_RESOURCE)
    return template


def test_device_follows_the_templates_gpu_request() -> None:
    """Pods whose template requests nvidia.com/gpu run on `cuda`; a CPU-only template (a custom ConfigMap) on
    `cpu`; a `--device` in extraArgs comes last and wins."""
    templates = builders.default_templates()
    assert builders.pod_device(templates["specialist"]) == builders.pod_device(templates["trainer"]) == "cuda"
    pool = _with_meta(pool_body())
    spec = SpecialistPoolSpec.model_validate(pool["spec"])
    cpu = _without_gpu(templates["specialist"])
    assert builders.pod_device(cpu) == "cpu"
    dep = builders.specialist_deployment(pool, spec.specialists[0], 1, {}, cpu)
    assert dep["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == ["--device", "cpu"]
    job = _with_meta(job_body(extraArgs=["--device", "cuda:1"]))
    pod = builders.trainer_pod(job, SwarmJobSpec.model_validate(job["spec"]), {}, _without_gpu(templates["trainer"]))
    assert pod["spec"]["containers"][0]["command"][-4:] == ["--device", "cpu", "--device", "cuda:1"]
    zero = copy.deepcopy(templates["trainer"])
    zero["spec"]["containers"][0]["resources"]["limits"][builders.GPU_RESOURCE] = "0"
    zero["spec"]["containers"][0]["resources"]["requests"][builders.GPU_RESOURCE] = 0
    assert builders.pod_device(zero) == "cpu"


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
    assert status.find_condition({"conditions": flipped}, ready)["reason"] == "NoCapacity"
    assert status.find_condition({}, ConditionType.Complete) == {}
    # Written as plain strings (they go into JSON), and only the operator's own types and reasons.
    assert type(flipped[0]["type"]) is str and type(flipped[0]["reason"]) is str
    with pytest.raises(ValueError):
        status.condition("Rdy", True, ok)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        status.condition(ready, True, "Ok")  # type: ignore[arg-type]


def test_phase_and_metrics_from_pod() -> None:
    assert status.phase_from_pod(None).value == "Pending"
    assert status.phase_from_pod({"status": {"phase": "Unknown"}}).value == "Pending"
    assert status.phase_from_pod({"status": {"phase": "Failed"}}).value == "Failed"
    pod = {
        "metadata": {
            "annotations": {
                builders.METRICS_ANNOTATION: json.dumps(
                    {"microF1": 0.9, "criticalSteps": 3, "perClass": {"Person": 0.5}}
                )
            }
        }
    }
    assert status.metrics_from_pod(pod) == ({"microF1": 0.9, "criticalSteps": 3}, None)
    bad = {"metadata": {"annotations": {builders.METRICS_ANNOTATION: '{"microF1": 7}'}}}
    metrics, error = status.metrics_from_pod(bad)
    assert metrics == {} and "ignored swarm.ai/metrics" in error
    assert status.metrics_from_pod({"metadata": {"annotations": {builders.METRICS_ANNOTATION: "{oops"}}})[0] == {}


@pytest.mark.parametrize("value", ["1e400", "-1e400", "NaN", "Infinity", "-Infinity"])
def test_non_finite_metrics_are_dropped_one_by_one(value: str) -> None:
    raw = f'{{"microF1": 0.9, "throughput": {value}, "criticalSteps": 3}}'
    metrics, error = status.metrics_from_pod({"metadata": {"annotations": {builders.METRICS_ANNOTATION: raw}}})
    assert metrics == {"microF1": 0.9, "criticalSteps": 3}
    assert error == "dropped non-finite values in swarm.ai/metrics: throughput"
    assert status.metrics_from_pod({"metadata": {"annotations": {builders.METRICS_ANNOTATION: "[1]"}}}) == (
        {},
        "ignored swarm.ai/metrics: not a JSON object (a JSON list)",
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
