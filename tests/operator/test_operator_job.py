"""job.py and pool.py against an in-memory API (fake_api.FakeApi): status writes, trainer pod ownership."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from emulator import gpu_node, job_body
from fake_api import FakeApi

from swarm.operator import builders, job
from swarm.operator.budget import GPU_MEMORY_ANNOTATION
from swarm.operator.kube import JOBS, PODS
from swarm.operator.models import ConditionReason, ConditionType, JobMetrics
from swarm.operator.status import find_condition

NS = "swarm"
pytestmark = pytest.mark.timeout(30)


def _nodes() -> list[tuple[str, dict[str, str], str | None]]:
    meta = gpu_node("gpu-1")["metadata"]
    return [(meta["name"], meta["labels"], meta["annotations"][GPU_MEMORY_ANNOTATION])]


def _trainer_pod(api: FakeApi, job_obj: dict[str, Any], annotations: dict[str, str], phase: str) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": builders.trainer_pod_name(job_obj["metadata"]["name"]),
            "namespace": NS,
            "labels": builders.trainer_labels(job_obj["metadata"]["name"], job_obj["spec"]["poolRef"]),
            "ownerReferences": [builders.owner_reference(job_obj)],
            "annotations": annotations,
        },
        "spec": {},
        "status": {"phase": phase},
    }
    return api.put(PODS, pod)


def test_non_finite_metrics_are_dropped_and_the_rest_written() -> None:
    api = FakeApi()
    job_obj = api.put(JOBS, job_body())
    doc = '{"microF1": 0.8, "throughput": 1e400, "macroF1": NaN, "criticalSteps": 3}'
    pod = _trainer_pod(api, job_obj, {builders.METRICS_ANNOTATION: doc}, "Running")
    outcome = asyncio.run(job.sync_from_pod(api, pod))  # type: ignore[arg-type]
    assert outcome.phase == "Running"
    st = api.peek(JOBS, NS, "job")["status"]
    assert st["phase"] == "Running" and st["metrics"] == {"microF1": 0.8, "criticalSteps": 3}
    metrics_valid = find_condition(st, ConditionType.MetricsValid)
    assert metrics_valid["status"] == "False" and metrics_valid["reason"] == ConditionReason.Ignored
    assert "non-finite" in metrics_valid["message"] and "throughput" in metrics_valid["message"]
    assert "macroF1" in metrics_valid["message"]
    json.dumps(st, allow_nan=False)
    with pytest.raises(ValueError, match="finite"):
        JobMetrics(throughput=float("inf"))
