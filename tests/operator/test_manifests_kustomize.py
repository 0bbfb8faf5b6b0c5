"""The kustomize base renders, is least-privilege and non-root; samples validate; Dockerfile lints."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from swarm.model_server.choices import GROUP
from swarm.operator import crdgen
from swarm.operator.models import JOB, POOL

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
pytestmark = pytest.mark.timeout(60)


def _tool(name: str) -> str:
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if path is None:
        pytest.skip(f"{name} binary not available")
    return path


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    out = subprocess.run(
        [_tool("kubectl"), "kustomize", str(ROOT / "manifests")], capture_output=True, text=True, check=True, timeout=60
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _pod_specs(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objs if o["kind"] in {"Deployment", "DaemonSet"}
    }


# Cluster-scoped kinds (kustomize may still stamp its namespace on the admission policy kinds, which it does not
# know: the API server drops a namespace from a cluster-scoped object).
CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def test_every_object_is_well_formed(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in rendered)
    assert kinds.count("CustomResourceDefinition") == 2 and {"Namespace", "Deployment", "DaemonSet"} <= set(kinds)
    for obj in rendered:
        assert obj.get("apiVersion") and obj.get("kind") and obj.get("metadata", {}).get("name"), obj
        assert obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "swarm", obj["metadata"]
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == "swarm", obj["metadata"]


def test_workloads_are_non_root_read_only(rendered: list[dict[str, Any]]) -> None:
    from swarm.operator.builders import default_templates

    specs = {**_pod_specs(rendered), **{k: v["spec"] for k, v in default_templates().items()}}
    assert set(specs) == {"swarm-operator", "swarm-node-agent", "specialist", "trainer"}
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["limits"]["memory"] and c["resources"]["requests"], name
    for name in ("specialist", "trainer"):
        # GPU memory is the scheduler's budget (swarm.ai/gpu-memory-mib, added per pod by the operator): no
        # whole-device nvidia.com/gpu claim, the nvidia RuntimeClass instead, and no API token.
        resources = specs[name]["containers"][0]["resources"]
        assert all("nvidia.com/gpu" not in resources[kind] for kind in ("requests", "limits")), name
        assert specs[name]["runtimeClassName"] == "nvidia", name
        assert specs[name]["automountServiceAccountToken"] is False, name
    agent = specs["swarm-node-agent"]
    assert agent["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090"}
    volumes = {v["name"]: v for v in specs["swarm-operator"]["volumes"]}
    assert volumes["templates"]["configMap"]["name"].startswith("swarm-pod-templates")


def test_operator_runs_two_replicas_with_leader_election_probes_and_metrics(rendered: list[dict[str, Any]]) -> None:
    deployment = next(o for o in rendered if o["kind"] == "Deployment" and o["metadata"]["name"] == "swarm-operator")
    assert deployment["spec"]["replicas"] == 2 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    # A new pod only becomes ready once the old leader is gone: a rollout that waits for one would stall.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == "100%"
    template = deployment["spec"]["template"]
    operator = template["spec"]["containers"][0]
    command = operator["command"]
    assert "--no-leader-election" not in command and "--liveness" not in command
    port = int(command[command.index("--metrics-port") + 1])
    assert {p["name"]: p["containerPort"] for p in operator["ports"]} == {"metrics": port}
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert operator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(port)
    env = {e["name"]: e for e in operator["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # the Lease identity
    # The kind overlay (manifests/kind/e2e.sh) replaces env entries by index.
    assert [e["name"] for e in operator["env"][2:4]] == ["SWARM_IMAGE", "SWARM_RESYNC_SECONDS"]


def test_rbac_is_least_privilege(rendered: list[dict[str, Any]]) -> None:
    rules = {
        o["metadata"]["name"] + "/" + o["kind"]: o["rules"] for o in rendered if o["kind"] in {"Role", "ClusterRole"}
    }
    flat = {
        key: sorted(
            (g, r, v) for rule in rs for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
        )
        for key, rs in rules.items()
    }
    for triples in flat.values():
        assert all("*" not in t for t in triples)
        assert not any(r in {"secrets", "configmaps"} for _, r, _ in triples)
    # The node agent patches its node's annotation and, in the status, the extended resource it advertises
    # (narrowed to its own node and those fields by the ValidatingAdmissionPolicy, test below).
    assert flat["swarm-node-agent/ClusterRole"] == [
        ("", "nodes", "get"), ("", "nodes", "patch"), ("", "nodes/status", "patch")
    ]  # fmt: skip
    assert flat["swarm-operator-nodes/ClusterRole"] == [("", "nodes", v) for v in ("get", "list", "watch")]
    # The annotation API only reads its pool and patches its demand annotation (not the status, no list/watch).
    assert flat["swarm-annotation/Role"] == [(GROUP, POOL.plural, "get"), (GROUP, POOL.plural, "patch")]
    bindings = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "RoleBinding"}
    assert bindings["swarm-annotation"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "swarm-annotation", "namespace": "swarm"}
    ]
    assert set(flat) == {
        "swarm-operator/Role",
        "swarm-operator-nodes/ClusterRole",
        "swarm-node-agent/ClusterRole",
        "swarm-annotation/Role",
    }  # a new role gets its own assertion above; trainers have none (metrics go in the termination message)
    operator = flat["swarm-operator/Role"]
    assert ("", "pods", "watch") in operator and ("", "pods", "patch") not in operator
    assert (GROUP, POOL.plural, "delete") not in operator
    # blockOwnerDeletion on the children: update on the owners' finalizers (OwnerReferencesPermissionEnforcement).
    assert {(GROUP, f"{k.plural}/finalizers", "update") for k in (POOL, JOB)} <= set(operator)
    # Leader election reads, creates and merge-patches (resourceVersion precondition) its Lease; Normal events.
    assert [t for t in operator if t[1] == "leases"] == [
        ("coordination.k8s.io", "leases", v) for v in ("create", "get", "patch")
    ]
    assert [t for t in operator if t[1] == "events"] == [("", "events", "create"), ("", "events", "patch")]
    # Specialist Deployments are watched (readiness, drift); still no pods/status or nodes writes.
    assert ("apps", "deployments", "watch") in operator
    # PodDisruptionBudgets of warm and job-held specialists: converged (list, create, apply, delete), never watched;
    # the operator evicts nothing (no pods/eviction).
    assert [t for t in operator if t[1] == "poddisruptionbudgets"] == [
        ("policy", "poddisruptionbudgets", v) for v in ("create", "delete", "list", "patch")
    ]
    assert not any(r == "pods/eviction" for _, r, _ in operator)
    assert not any(r in {"pods/status", "nodes", "nodes/status"} for _, r, _ in operator)
    role_bindings = {o["metadata"]["name"]: o for o in rendered if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}}
    assert not any(
        s.get("name") in {"swarm-trainer", "swarm-specialist"} for b in role_bindings.values() for s in b["subjects"]
    )
    accounts = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "ServiceAccount"}
    assert accounts["swarm-trainer"]["automountServiceAccountToken"] is False
    assert accounts["swarm-specialist"]["automountServiceAccountToken"] is False


def _policy(rendered: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ValidatingAdmissionPolicy `name` and its one binding: Deny, failing closed."""
    (policy,) = [o for o in rendered if o["kind"] == "ValidatingAdmissionPolicy" and o["metadata"]["name"] == name]
    (binding,) = [
        o
        for o in rendered
        if o["kind"] == "ValidatingAdmissionPolicyBinding" and o["spec"]["policyName"] == policy["metadata"]["name"]
    ]
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"]["validationActions"] == ["Deny"] and policy["spec"]["failurePolicy"] == "Fail"
    return policy, binding


def test_annotation_policy_narrows_its_pool_patches(rendered: list[dict[str, Any]]) -> None:
    """manifests/annotation-policy.yaml: the annotation API's ServiceAccount (RBAC: get and patch on
    specialistpools) may change only a pool's demand annotation (issue #31, defect 7)."""
    from swarm.model_server.choices import DEMAND_ANNOTATION

    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    assert "annotation-policy.yaml" in kustomization["resources"]
    policy, _ = _policy(rendered, "swarm-annotation")
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == [GROUP] and rule["resources"] == [POOL.plural] and rule["operations"] == ["UPDATE"]
    (role,) = [o for o in rendered if o["kind"] == "Role" and o["metadata"]["name"] == "swarm-annotation"]
    (binding,) = [o for o in rendered if o["kind"] == "RoleBinding" and o["metadata"]["name"] == "swarm-annotation"]
    assert [r["resources"] for r in role["rules"]] == [[POOL.plural]]
    (subject,) = binding["subjects"]
    (match,) = policy["spec"]["matchConditions"]
    assert f"endsWith(':{subject['name']}')" in match["expression"]
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert variables["demand"] == f"'{DEMAND_ANNOTATION}'"
    expressions = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "object.spec == oldObject.spec" in expressions and "finalizers" in expressions


def test_node_agent_policy_narrows_its_node_patches(rendered: list[dict[str, Any]]) -> None:
    """manifests/node-agent-policy.yaml: a ValidatingAdmissionPolicy (Deny) on node and node-status updates by the
    node agent's ServiceAccount, which may change only its own node and there only its annotation and resource."""
    from swarm.operator.nodes import GPU_MEMORY_ANNOTATION, GPU_MEMORY_RESOURCE

    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    assert "node-agent-policy.yaml" in kustomization["resources"]
    policy, binding = _policy(rendered, "swarm-node-agent")
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == [""] and sorted(rule["resources"]) == ["nodes", "nodes/status"]
    assert "UPDATE" in rule["operations"]  # a PATCH is admitted as an UPDATE
    # It applies to the node agent's ServiceAccount, as rendered (namespace and name).
    (agent,) = [o for o in rendered if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "swarm-node-agent"]
    account = agent["spec"]["template"]["spec"]["serviceAccountName"]
    (match,) = policy["spec"]["matchConditions"]
    assert f"'system:serviceaccount:{agent['metadata']['namespace']}:{account}'" in match["expression"]
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert variables["annotation"] == f"'{GPU_MEMORY_ANNOTATION}'"
    assert variables["resource"] == f"'{GPU_MEMORY_RESOURCE}'"
    expressions = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "authentication.kubernetes.io/node-name" in expressions and "object.metadata.name" in expressions
    assert "object.spec == oldObject.spec" in expressions
    for field in ("Annotations", "Capacity", "Allocatable"):
        assert f"variables.old{field}" in expressions and f"variables.new{field}" in expressions, field


def test_samples_validate_against_crds() -> None:
    crds = {
        doc["spec"]["names"]["kind"]: doc
        for doc in (yaml.safe_load(p.read_text()) for p in (ROOT / "crds").glob(f"{GROUP}_*.yaml"))
    }
    samples = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "manifests" / "samples").glob("*.yaml"))]
    assert {s["kind"] for s in samples} == {"SpecialistPool", "SwarmJob"}
    for sample in samples:
        assert crdgen.validate_resource(sample, crds[sample["kind"]]) == []


def test_kind_overlay_renders_with_local_image() -> None:
    _tool("kubectl")
    out = subprocess.run(
        ["bash", str(ROOT / "manifests" / "kind" / "e2e.sh"), "render"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    specs = _pod_specs(docs)
    assert specs["swarm-operator"]["containers"][0]["image"] == "swarm:e2e"
    assert "runtimeClassName" not in specs["swarm-node-agent"]
    kind_config = yaml.safe_load((ROOT / "manifests" / "kind" / "kind-config.yaml").read_text())
    workers = [n for n in kind_config["nodes"] if n["role"] == "worker"]
    assert workers and all(n["labels"]["nvidia.com/gpu.product"] == "NVIDIA-GeForce-RTX-4090" for n in workers)


def test_dockerfile_lints_clean() -> None:
    hadolint = _tool("hadolint")
    docker = ROOT / "manifests" / "docker"
    out = subprocess.run(
        [hadolint, "--config", str(docker / ".hadolint.yaml"), str(docker / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_priority_classes_are_optional_and_never_the_default(rendered: list[dict[str, Any]]) -> None:
    """manifests/priorityclasses.yaml: samples for spec.priorityClassName of pools and jobs, outside the base."""
    classes = {
        o["metadata"]["name"]: o
        for o in yaml.safe_load_all((ROOT / "manifests" / "priorityclasses.yaml").read_text())
        if o
    }
    assert set(classes) == {"swarm-specialist", "swarm-trainer"}
    assert not any(o["kind"] == "PriorityClass" for o in rendered)  # not installed by `kubectl apply -k manifests/`
    for obj in classes.values():
        assert obj["apiVersion"] == "scheduling.k8s.io/v1" and obj["kind"] == "PriorityClass"
        assert obj["globalDefault"] is False and 0 < obj["value"] < 1_000_000_000  # below the system classes
    assert classes["swarm-specialist"]["value"] > classes["swarm-trainer"]["value"]
    assert classes["swarm-trainer"]["preemptionPolicy"] == "Never"
