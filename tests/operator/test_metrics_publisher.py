"""publish_metrics (operator/metrics_publisher.py): a trainer pod patches its own metrics annotation, against the
emulated API; outside a pod or on failure it logs one line and returns False, never raises."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest
from emulator import PODS, EmulatedCluster

from swarm.operator import metrics_publisher
from swarm.operator.builders import METRICS_ANNOTATION
from swarm.operator.metrics_publisher import publish_metrics

NS = "swarm"
pytestmark = pytest.mark.timeout(30)
METRICS = {"micro_f1": 0.81, "macro_f1": 0.62, "throughput": 950.5, "critical_steps": 7, "loss": 0.3}


@pytest.fixture
def pod_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "job-primary")
    monkeypatch.setenv("POD_NAMESPACE", NS)
    monkeypatch.setenv("SWARM_METRICS_ANNOTATION", METRICS_ANNOTATION)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


def _pod(name: str = "job-primary") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "annotations": {"keep": "me"}},
        "spec": {"containers": [{"name": "trainer", "image": "swarm"}]},
    }


def test_annotation_value_maps_keys_and_drops_the_rest() -> None:
    assert metrics_publisher.annotation_value(
        {**METRICS, "criticalSteps": 7.0, "throughput": math.nan, "macroF1": None, "flag": True}  # type: ignore[dict-item]
    ) == {"microF1": 0.81, "macroF1": 0.62, "criticalSteps": 7}


def test_patches_own_pod_annotation(cluster: EmulatedCluster, pod_env: None) -> None:
    cluster.create(PODS, _pod())
    assert publish_metrics(METRICS, api_base=cluster.url, token="test-token") is True
    annotations = cluster.get(PODS, NS, "job-primary")["metadata"]["annotations"]
    assert json.loads(annotations[METRICS_ANNOTATION]) == {
        "microF1": 0.81,
        "macroF1": 0.62,
        "throughput": 950.5,
        "criticalSteps": 7,
    }
    assert annotations["keep"] == "me"  # a merge patch: other annotations untouched
    (request,) = cluster.requests(lambda r: r.method == "PATCH")
    assert request.headers["Authorization"] == "Bearer test-token"
    assert request.headers["Content-Type"] == "application/merge-patch+json"


def test_in_cluster_env_and_token_file(
    cluster: EmulatedCluster, pod_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """With no overrides it reads KUBERNETES_SERVICE_HOST/PORT and the service-account token."""
    cluster.create(PODS, _pod())
    (tmp_path / "token").write_text("sa-token\n")
    monkeypatch.setattr(metrics_publisher, "SERVICE_ACCOUNT_DIR", tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", cluster.url.rsplit(":", 1)[1])
    assert metrics_publisher._in_cluster_api_base() == f"https://127.0.0.1:{cluster.url.rsplit(':', 1)[1]}"
    # The emulator speaks plain HTTP, so the TLS handshake fails: one warning, False, no exception.
    assert publish_metrics({"micro_f1": 0.5}, timeout=5) is False
    monkeypatch.setattr(metrics_publisher, "_in_cluster_api_base", lambda: cluster.url)
    assert publish_metrics({"micro_f1": 0.5}) is True
    (request,) = cluster.requests(lambda r: r.method == "PATCH")
    assert request.headers["Authorization"] == "Bearer sa-token"


def test_not_in_cluster(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Any) -> None:
    for name in ("POD_NAME", "POD_NAMESPACE", "SWARM_METRICS_ANNOTATION", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level(logging.INFO, logger=metrics_publisher.__name__):
        assert publish_metrics(METRICS) is False
    assert len(caplog.records) == 1 and "not in a swarm trainer pod" in caplog.records[0].getMessage()

    caplog.clear()
    monkeypatch.setenv("POD_NAME", "job-primary")
    monkeypatch.setenv("POD_NAMESPACE", NS)
    monkeypatch.setenv("SWARM_METRICS_ANNOTATION", METRICS_ANNOTATION)
    with caplog.at_level(logging.INFO, logger=metrics_publisher.__name__):
        assert publish_metrics(METRICS) is False
    assert [r.getMessage() for r in caplog.records] == [
        "metrics not published: not in a Kubernetes cluster (KUBERNETES_SERVICE_HOST/PORT unset)"
    ]

    caplog.clear()
    monkeypatch.setattr(metrics_publisher, "SERVICE_ACCOUNT_DIR", tmp_path)  # no token there
    with caplog.at_level(logging.INFO, logger=metrics_publisher.__name__):
        assert publish_metrics(METRICS, api_base="http://127.0.0.1:9") is False
    assert len(caplog.records) == 1 and "no service-account token" in caplog.records[0].getMessage()


def test_failures_return_false(cluster: EmulatedCluster, pod_env: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=metrics_publisher.__name__):
        # No such pod: HTTP 404 from the API.
        assert publish_metrics(METRICS, api_base=cluster.url, token="t") is False
        # Nothing listening.
        assert publish_metrics(METRICS, api_base="http://127.0.0.1:9", token="t", timeout=2) is False
        # Nothing to publish.
        assert publish_metrics({"loss": 1.0}, api_base=cluster.url, token="t") is False
        # A broken argument is caught too.
        assert publish_metrics(METRICS, api_base="not a url", token="t") is False
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4 and all(m.startswith("metrics not published: ") for m in messages), messages
    assert "HTTP 404" in messages[0]
