"""Publish a run's metrics from inside a trainer pod: patch the pod's own `swarm.ai/metrics` annotation, which the
operator copies into `SwarmJob.status.metrics` (see operator/status.py for the contract).

Called by `swarm train`, `swarm eval` and `swarm annotate` at the end of a run. Deliberately light: standard
library only (no kopf, no kubernetes client), in-cluster configuration only (service-account token and CA at the
standard paths, KUBERNETES_SERVICE_HOST/PORT). Outside a trainer pod it does nothing. It never raises: a metrics
annotation that could not be written is one log line, not a failed run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import urllib.error
import urllib.parse

from swarm.operator import incluster

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = incluster.SERVICE_ACCOUNT_DIR
ENV_POD_NAME = "POD_NAME"
ENV_POD_NAMESPACE = "POD_NAMESPACE"
ENV_ANNOTATION = "SWARM_METRICS_ANNOTATION"
# Accepted keys (snake_case from the CLI, or already camelCase) -> annotation keys.
KEYS = {
    "micro_f1": "microF1",
    "macro_f1": "macroF1",
    "throughput": "throughput",
    "critical_steps": "criticalSteps",
    "microF1": "microF1",
    "macroF1": "macroF1",
    "criticalSteps": "criticalSteps",
}


def annotation_value(metrics: dict[str, float | int]) -> dict[str, float | int]:
    """The annotation's JSON object: known keys mapped to camelCase; None, non-numbers and NaN/inf dropped."""
    out: dict[str, float | int] = {}
    for key, value in metrics.items():
        target = KEYS.get(key)
        if target is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            continue
        out[target] = int(value) if target == "criticalSteps" else value
    return out


_in_cluster_api_base = incluster.api_base  # a module attribute: tests point it elsewhere


def publish_metrics(
    metrics: dict[str, float | int],
    *,
    api_base: str | None = None,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    timeout: float = 10.0,
) -> bool:
    """Patch this pod's metrics annotation with `metrics` (micro_f1, macro_f1, throughput, critical_steps).

    Needs POD_NAME, POD_NAMESPACE and SWARM_METRICS_ANNOTATION in the environment (the operator sets them in
    trainer pods). `api_base`, `token` and `ca_file` override the in-cluster configuration (tests point them at an
    emulated API server). Returns True when the pod was patched; otherwise logs one line and returns False.
    """
    try:
        return _publish(metrics, api_base, token, ca_file, timeout)
    except Exception as exc:  # never fail a finished run over its metrics
        log.warning("metrics not published: %s: %s", type(exc).__name__, exc)
        return False


def _publish(
    metrics: dict[str, float | int],
    api_base: str | None,
    token: str | None,
    ca_file: str | os.PathLike[str] | None,
    timeout: float,
) -> bool:
    pod, namespace, annotation = (os.environ.get(k) for k in (ENV_POD_NAME, ENV_POD_NAMESPACE, ENV_ANNOTATION))
    if not (pod and namespace and annotation):
        log.info(
            "metrics not published: not in a swarm trainer pod (%s, %s or %s unset)",
            ENV_POD_NAME,
            ENV_POD_NAMESPACE,
            ENV_ANNOTATION,
        )
        return False
    base = api_base or _in_cluster_api_base()
    if base is None:
        log.info("metrics not published: not in a Kubernetes cluster (KUBERNETES_SERVICE_HOST/PORT unset)")
        return False
    if token is None:
        token = incluster.read_token(SERVICE_ACCOUNT_DIR)
        if token is None:
            log.warning("metrics not published: no service-account token at %s", SERVICE_ACCOUNT_DIR / "token")
            return False
    value = annotation_value(metrics)
    if not value:
        log.warning("metrics not published: none of %s in %s", sorted(set(KEYS.values())), sorted(metrics))
        return False

    path = f"/api/v1/namespaces/{urllib.parse.quote(namespace)}/pods/{urllib.parse.quote(pod)}"
    body = {"metadata": {"annotations": {annotation: json.dumps(value, sort_keys=True)}}}
    try:
        incluster.request(
            "PATCH",
            base,
            path,
            token,
            body,
            ca_file=ca_file,
            service_account_dir=SERVICE_ACCOUNT_DIR,
            timeout=timeout,
            user_agent="swarm-trainer",
        )
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:200].decode(errors="replace")
        log.warning("metrics not published: PATCH pod %s/%s: HTTP %s %s", namespace, pod, exc.code, detail)
        return False
    except (urllib.error.URLError, OSError) as exc:
        log.warning("metrics not published: PATCH pod %s/%s: %s", namespace, pod, exc)
        return False
    log.info("published metrics to pod %s/%s annotation %s: %s", namespace, pod, annotation, value)
    return True
