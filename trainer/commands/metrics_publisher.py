"""Publish a run's metrics from inside a trainer pod: write them, as one JSON object, to the container's termination
message file; the operator reads `status.containerStatuses[].state.terminated.message` when the pod ends and copies
the metrics into `SwarmJob.status.metrics` (see operator/status.py for the contract).

No API access: a trainer runs user `extraArgs`, so it gets no ServiceAccount token and no RBAC at all (it could
otherwise re-image other pods or forge other jobs' metrics). The operator sets SWARM_TERMINATION_MESSAGE to the
container's terminationMessagePath; outside a trainer pod this does nothing. It never raises: metrics that could not
be written are one log line, not a failed run.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

ENV_TERMINATION_MESSAGE = "SWARM_TERMINATION_MESSAGE"
TERMINATION_MESSAGE_LIMIT = 4096  # bytes the kubelet keeps of a termination message
# Accepted keys (snake_case from the CLI, or already camelCase) -> the message's keys (status.metrics fields).
KEYS = {
    "micro_f1": "microF1",
    "macro_f1": "macroF1",
    "throughput": "throughput",
    "critical_steps": "criticalSteps",
    "microF1": "microF1",
    "macroF1": "macroF1",
    "criticalSteps": "criticalSteps",
}


def message_value(metrics: dict[str, float | int]) -> dict[str, float | int]:
    """The message's JSON object: known keys mapped to camelCase; None, non-numbers and NaN/inf dropped."""
    out: dict[str, float | int] = {}
    for key, value in metrics.items():
        target = KEYS.get(key)
        if target is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        try:
            if not math.isfinite(value):
                continue
        except OverflowError:  # an int beyond any float
            continue
        out[target] = int(value) if target == "criticalSteps" else value
    return out


def publish_metrics(metrics: dict[str, float | int], *, path: str | os.PathLike[str] | None = None) -> bool:
    """Write `metrics` (micro_f1, macro_f1, throughput, critical_steps) as this container's termination message.

    `path` defaults to $SWARM_TERMINATION_MESSAGE (set by the operator in trainer pods). Returns True when written;
    otherwise logs one line and returns False."""
    target = path or os.environ.get(ENV_TERMINATION_MESSAGE)
    if not target:
        log.info("metrics not published: not in a swarm trainer pod (%s unset)", ENV_TERMINATION_MESSAGE)
        return False
    value = message_value(metrics)
    if not value:
        log.warning("metrics not published: none of %s in %s", sorted(set(KEYS.values())), sorted(metrics))
        return False
    text = json.dumps(value, sort_keys=True)
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:  # cannot happen with four numbers; guards future keys
        log.warning("metrics not published: %d bytes exceed the termination message limit", len(text.encode()))
        return False
    try:
        Path(target).write_text(text)
    except (OSError, ValueError) as exc:
        log.warning("metrics not published: %s: %s", target, exc)
        return False
    log.info("published metrics to %s: %s", target, value)
    return True
