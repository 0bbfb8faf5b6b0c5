"""The annotation ServiceAccount's least privilege on the real control plane (issue #31, defect 7): RBAC lets it
patch SpecialistPools, manifests/annotation-policy.yaml narrows that to the demand annotation; its token, bound to
its pod, publishes demand through model_server/serving/demand.py and is refused any other change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from swarm.model_server.choices import DEMAND_ANNOTATION
from swarm.model_server.serving.demand import DemandPublisher
from swarm.testing.control_plane import REPO, ControlPlane
from swarm.testing.operator_process import NS, SWARM, apply_sample

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]


def annotation_policy() -> Path:
    return REPO / "manifests" / "annotation-policy.yaml"


def test_the_annotation_token_changes_only_the_demand_annotation(cluster: ControlPlane) -> None:
    """manifests/rbac.yaml lets swarm-annotation patch specialistpools; manifests/annotation-policy.yaml narrows
    that to the demand annotation. Its token, bound to its pod as the kubelet mounts it, publishes demand through
    model_server/serving/demand.py and is refused any other change."""
    cluster.kubectl("apply", "-f", str(annotation_policy()))
    apply_sample(cluster, "specialistpool.yaml")
    annotation_pod = cluster.restricted_pod(NS, "annotation-api", "swarm-annotation", "swarm")
    token = cluster.token(NS, "swarm-annotation", bound_pod=annotation_pod)

    def patch(body: dict[str, Any]) -> str:
        """A merge patch of the pool with the annotation token: "" when admitted, else the API server's refusal."""
        return cluster.merge_patch_as(token, cluster.path(SWARM, "specialistpools", NS, "sotab"), body)

    # The policy takes effect once the API server has loaded it: until then the token could patch anything.
    probes = iter(range(10**6))  # a new label each time: an unchanged one is admitted
    cluster.wait_for(lambda: patch({"metadata": {"labels": {"probe": str(next(probes))}}}), what="policy loaded")
    publisher = DemandPublisher("sotab", NS, api_base=cluster.server, token=token, ca_file=cluster.pki["ca.crt"])
    try:
        assert publisher.demand(["people"]) == {"people"} and publisher.flush()
    finally:
        publisher.close()
    assert (publisher.published, publisher.failed) == (1, 0)
    pool = cluster.get(SWARM, "specialistpools", "sotab", NS)
    assert "people" in json.loads(pool["metadata"]["annotations"][DEMAND_ANNOTATION])

    warm = patch({"spec": {"warm": []}})
    assert "denied request" in warm and "not its spec" in warm, warm
    reserve = patch({"spec": {"memoryReservePerGpu": 0}})
    assert "denied request" in reserve and "not its spec" in reserve, reserve
    other = patch({"metadata": {"annotations": {"swarm.ai/other": "x"}}})
    assert "only the swarm.ai/demand annotation" in other, other
    label = patch({"metadata": {"labels": {"team": "x"}}})
    assert "labels, finalizers or owner references" in label, label
    finalizer = patch({"metadata": {"finalizers": ["example.com/hold"]}})
    assert "labels, finalizers or owner references" in finalizer, finalizer
    spec = cluster.get(SWARM, "specialistpools", "sotab", NS)["spec"]
    assert spec["warm"] == ["geographic", "temporal"] and spec["memoryReservePerGpu"] == 1073741824
    assert spec["idleTimeoutSeconds"] == 600
    # The demand annotation alone, written directly, is still admitted.
    assert patch({"metadata": {"annotations": {DEMAND_ANNOTATION: "{}"}}}) == ""
