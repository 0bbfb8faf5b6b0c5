"""Transport security on Kubernetes (issue item 7): NetworkPolicies let only primaries (trainer / annotation pods)
reach the specialists' gRPC port, specialist and trainer pods mount their TLS Secrets and point SWARM_TLS_DIR at
them, specialists' probes use the plaintext health port, and manifests/tls issues exactly the Secrets mounted."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from swarm.operator import builders
from swarm.operator.models import PoolSpecialist, SwarmJobSpec

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def _render(folder: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl") or str(ROOT / ".venv" / "bin" / "kubectl")
    if not Path(kubectl).exists():
        pytest.skip("kubectl not available")
    out = subprocess.run([kubectl, "kustomize", str(ROOT / folder)], capture_output=True, text=True, check=True,
                         timeout=60)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and In/NotIn/Exists/DoesNotExist)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def _pods() -> dict[str, dict[str, Any]]:
    pool = {"apiVersion": "swarm.ai/v1alpha1", "kind": "SpecialistPool",
            "metadata": {"name": "sotab", "namespace": "swarm", "uid": "u1"}}
    templates = builders.default_templates()
    specialist = builders.specialist_deployment(
        pool, PoolSpecialist(name="temporal", domain="temporal", model="/models/specialists", params=1000), 1, {},
        templates["specialist"])["spec"]["template"]
    job = {"apiVersion": "swarm.ai/v1alpha1", "kind": "SwarmJob",
           "metadata": {"name": "j", "namespace": "swarm", "uid": "u2"}}
    spec = SwarmJobSpec.model_validate({"mode": "train", "poolRef": "sotab", "data": "/data/sotab",
                                        "specialists": ["temporal"]})
    trainer = builders.trainer_pod(job, spec, {"temporal": "sotab-temporal.swarm.svc:50051"}, templates["trainer"])
    return {"specialist": specialist, "trainer": trainer}


def test_only_primaries_may_reach_the_specialists() -> None:
    policies = {o["metadata"]["name"]: o["spec"] for o in _render("manifests") if o["kind"] == "NetworkPolicy"}
    assert set(policies) == {"swarm-specialists", "swarm-trainers"}
    pods = _pods()
    labels = {name: pod["metadata"]["labels"] for name, pod in pods.items()}
    specialists = policies["swarm-specialists"]
    assert _selects(specialists["podSelector"], labels["specialist"])
    assert not _selects(specialists["podSelector"], labels["trainer"])
    assert specialists["policyTypes"] == ["Ingress"]
    (rule,) = specialists["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": builders.SPECIALIST_PORT}]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # same namespace only, no ipBlock
    callers = {"trainer": labels["trainer"], "annotation": {"app.kubernetes.io/component": "annotation"}}
    assert all(_selects(peer["podSelector"], lbl) for lbl in callers.values())
    strangers = [labels["specialist"], {"app": "web"}, {"app.kubernetes.io/component": "operator"}, {}]
    assert not any(_selects(peer["podSelector"], lbl) for lbl in strangers)
    trainers = policies["swarm-trainers"]
    assert _selects(trainers["podSelector"], labels["trainer"]) and trainers["ingress"] == []


def test_pods_mount_their_tls_secret_and_probe_the_plaintext_health_port() -> None:
    from swarm.model_server.serving.grpc_runtime import TLS_DIR_ENV

    assert builders.TLS_DIR_ENV == TLS_DIR_ENV
    secrets = {"specialist": builders.SPECIALIST_TLS_SECRET, "trainer": builders.PRIMARY_TLS_SECRET}
    for name, pod in _pods().items():
        spec = pod["spec"]
        container = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[TLS_DIR_ENV] == builders.TLS_MOUNT
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == builders.TLS_MOUNT)
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert mount["readOnly"] is True and volume["secret"]["secretName"] == secrets[name]
        assert not volume["secret"].get("optional")  # no certificate: no pod (never plaintext by accident)
    specialist = _pods()["specialist"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in specialist["env"]}
    assert env["SWARM_HEALTH_PORT"] == str(builders.HEALTH_PORT)
    assert specialist["readinessProbe"]["grpc"]["port"] == builders.HEALTH_PORT
    assert {p["containerPort"] for p in specialist["ports"]} == {builders.SPECIALIST_PORT, builders.HEALTH_PORT}


def test_cert_manager_issues_the_mounted_secrets() -> None:
    docs = _render("manifests/tls")
    certs = {d["spec"]["secretName"]: d["spec"] for d in docs if d["kind"] == "Certificate"}
    assert {builders.SPECIALIST_TLS_SECRET, builders.PRIMARY_TLS_SECRET} <= set(certs)
    specialist = certs[builders.SPECIALIST_TLS_SECRET]
    assert "server auth" in specialist["usages"] and "*.swarm.svc" in specialist["dnsNames"]
    assert builders.specialist_endpoint("swarm", "sotab", "temporal").split(":")[0].endswith(".swarm.svc")
    assert "client auth" in certs[builders.PRIMARY_TLS_SECRET]["usages"]
    issuers = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Issuer"}
    assert all(c["issuerRef"]["name"] in issuers for c in certs.values())
