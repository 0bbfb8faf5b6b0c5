"""Ask the SpecialistPool for cold specialists: the annotation service's side of spawning on Kubernetes.

When the orchestrator routes columns to a specialist that is not running (a cold one, scaled to zero), the fetch
fails and the table degrades to what is warm. `DemandPublisher.demand(names)` records the demand on the pool: it
merge-patches the pool's `swarm.ai/demand` annotation (JSON: specialist -> RFC3339 UTC time of the latest demand).
The operator (operator/pool.py) counts every specialist demanded less than the pool's `idleTimeoutSeconds` ago as a
claim, admits it within the GPU memory budget and scales its Deployment up; once the demand is older than the idle
timeout it goes back to zero. The service keeps asking (at most once per `min_interval_s` per specialist) while it
wants the specialist, so a specialist in use stays up.

Light and safe on the request path: standard library only, in-cluster configuration only (see incluster.py beside
it: KUBERNETES_SERVICE_HOST/PORT, the service-account token and CA). `demand` never blocks on the API and never raises:
it queues the names and a background thread writes them (GET the pool, merge its entries with the queued ones, PATCH
with the resourceVersion read, so concurrent replicas of the service do not overwrite each other: a 409 is retried). A
failed write is one log line. Without `SWARM_POOL_NAME`, or outside a cluster, the publisher does nothing. The service
account needs `get` and `patch` on specialistpools (manifests/rbac.yaml, Role swarm-annotation).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from swarm.model_server.choices import DEMAND_ANNOTATION, GROUP, POOL_PLURAL, VERSION
from swarm.model_server.serving import incluster

log = logging.getLogger(__name__)

ENV_POOL = "SWARM_POOL_NAME"
ENV_NAMESPACE = "POD_NAMESPACE"
ENV_INTERVAL = "SWARM_DEMAND_INTERVAL_SECONDS"
DEFAULT_INTERVAL_S = 10.0
MAX_AGE = timedelta(days=1)  # entries older than this are dropped when the annotation is rewritten
CONFLICT_RETRIES = 3
REQUESTED = "requested from its pool"

# Missing reasons (model_server/serving/specialist_client.py) that mean "not running" rather than "failed": no address
# configured, or the channel could not reach it (UNAVAILABLE, e.g. connection refused: a Service without ready
# endpoints). DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and the like come from a running specialist.
COLD_REASON_PREFIXES = ("UNAVAILABLE:", "no address configured")


def is_cold(reason: str) -> bool:
    """Whether a fetch's missing reason says the specialist is not running (so its pool should scale it up)."""
    return reason.startswith(COLD_REASON_PREFIXES)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merged_demand(current: str | None, new: Mapping[str, datetime], now: datetime) -> dict[str, str]:
    """The annotation's next value: its parseable entries (an unparseable annotation counts as empty) with `new`
    merged in, each specialist keeping its latest time; entries older than MAX_AGE are dropped."""
    stamps: dict[str, datetime] = {}
    try:
        doc = json.loads(current) if current else {}
    except ValueError:
        doc = {}
    for name, value in (doc.items() if isinstance(doc, dict) else ()):
        try:
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None
        except ValueError:
            stamp = None
        if stamp is not None and stamp.tzinfo is not None:
            stamps[name] = stamp
    for name, stamp in new.items():
        stamps[name] = max(stamps.get(name, stamp), stamp)
    return {name: rfc3339(stamp) for name, stamp in sorted(stamps.items()) if now - stamp < MAX_AGE}


class DemandPublisher:
    """Publishes demand for cold specialists to one SpecialistPool (see the module docstring)."""

    def __init__(
        self,
        pool: str | None,
        namespace: str | None,
        *,
        api_base: str | None = None,
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        service_account_dir: Path = incluster.SERVICE_ACCOUNT_DIR,
        min_interval_s: float = DEFAULT_INTERVAL_S,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`api_base`, `token`, `ca_file` override the in-cluster configuration (default: KUBERNETES_SERVICE_HOST/
        PORT and the service account's token, read at every write since the kubelet rotates it, and CA)."""
        self.pool, self.namespace = pool, namespace
        self.api_base = api_base or incluster.api_base()
        self.token, self.ca_file, self.service_account_dir = token, ca_file, Path(service_account_dir)
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        self.clock, self.wall_clock = clock, wall_clock
        self.enabled = bool(pool and namespace and self.api_base)
        self.published = 0  # writes that succeeded (for tests and stats)
        self.failed = 0
        self._last: dict[str, float] = {}  # specialist -> clock() of its last queued demand
        self._pending: dict[str, datetime] = {}
        self._busy = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        if not self.enabled:
            missing = [n for n, v in ((ENV_POOL, pool), (ENV_NAMESPACE, namespace)) if not v]
            why = f"{' and '.join(missing)} unset" if missing else "not in a Kubernetes cluster"
            log.info("demand for cold specialists is not published (%s)", why)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> DemandPublisher:
        """Configured from SWARM_POOL_NAME, POD_NAMESPACE and SWARM_DEMAND_INTERVAL_SECONDS (default 10)."""
        env = os.environ if environ is None else environ
        interval = kwargs.pop("min_interval_s", None)
        if interval is None:
            try:
                interval = float(env.get(ENV_INTERVAL, DEFAULT_INTERVAL_S))
            except ValueError:
                log.warning("%s=%r is not a number; using %gs", ENV_INTERVAL, env.get(ENV_INTERVAL), DEFAULT_INTERVAL_S)
                interval = DEFAULT_INTERVAL_S
        return cls(env.get(ENV_POOL) or None, env.get(ENV_NAMESPACE) or None, min_interval_s=interval, **kwargs)

    # -- request path ------------------------------------------------------------------------------------------

    def demand(self, names: Iterable[str]) -> set[str]:
        """Ask the pool for `names` (queued; written by a background thread). Each specialist is written at most
        once per `min_interval_s`. Returns the names the pool has been asked for (now or within the interval); an
        empty set when the publisher is disabled. Never raises and never waits on the API."""
        if not self.enabled:
            return set()
        try:
            return self._queue(names)
        except Exception as exc:  # the request path must not fail over demand
            log.warning("demand not queued: %s: %s", type(exc).__name__, exc)
            return set()

    def _queue(self, names: Iterable[str]) -> set[str]:
        wanted = {n for n in names if isinstance(n, str) and n}
        if not wanted:
            return set()
        now, stamp = self.clock(), self.wall_clock()
        with self._cond:
            if self._closed:
                return set()
            fresh = {n for n in wanted if n not in self._last or now - self._last[n] >= self.min_interval_s}
            for name in fresh:
                self._last[name] = now
                self._pending[name] = stamp
            if fresh:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="demand-publisher", daemon=True)
                    self._thread.start()
                self._cond.notify()
        return wanted

    # -- background writer -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return  # closed, nothing left to write
                batch, self._pending = self._pending, {}
                self._busy = True
            try:
                ok = self._write(batch)
            except Exception as exc:  # never let the writer die
                log.warning("demand for %s not published: %s: %s", sorted(batch), type(exc).__name__, exc)
                ok = False
            with self._cond:
                self._busy = False
                if ok:
                    self.published += 1
                else:
                    self.failed += 1
                self._cond.notify_all()

    def _write(self, batch: Mapping[str, datetime]) -> bool:
        assert self.pool and self.namespace and self.api_base
        token = self.token or incluster.read_token(self.service_account_dir)
        if token is None:
            log.warning(
                "demand for %s not published: no service-account token at %s",
                sorted(batch),
                self.service_account_dir / "token",
            )
            return False
        path = (
            f"/apis/{GROUP}/{VERSION}/namespaces/{urllib.parse.quote(self.namespace)}/{POOL_PLURAL}/"
            f"{urllib.parse.quote(self.pool)}"
        )
        where = f"SpecialistPool {self.namespace}/{self.pool}"
        call: dict[str, Any] = {"ca_file": self.ca_file, "service_account_dir": self.service_account_dir,
                                "timeout": self.timeout_s, "user_agent": "swarm-annotation"}
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                pool = json.loads(incluster.request("GET", self.api_base, path, token, **call))
                meta = pool.get("metadata") or {}
                value = merged_demand((meta.get("annotations") or {}).get(DEMAND_ANNOTATION), batch, self.wall_clock())
                patch: dict[str, Any] = {"metadata": {"annotations": {DEMAND_ANNOTATION: json.dumps(value)}}}
                if meta.get("resourceVersion"):
                    patch["metadata"]["resourceVersion"] = meta["resourceVersion"]  # 409 if changed since the GET
                incluster.request("PATCH", self.api_base, path, token, patch, **call)
            except urllib.error.HTTPError as exc:
                if exc.code == 409 and attempt < CONFLICT_RETRIES:
                    continue
                detail = exc.read()[:200].decode(errors="replace")
                log.warning("demand for %s not published: %s: HTTP %s %s", sorted(batch), where, exc.code, detail)
                return False
            except (urllib.error.URLError, OSError, ValueError, AttributeError) as exc:
                log.warning("demand for %s not published: %s: %s", sorted(batch), where, exc)
                return False
            log.info("asked %s for %s", where, ", ".join(sorted(batch)))
            return True
        raise AssertionError("unreachable")  # pragma: no cover

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued has been written (or failed); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        """Stop the writer after what is queued (it is a daemon thread: a process may also just exit)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def annotate_requested(missing: Mapping[str, str], publisher: DemandPublisher | None) -> dict[str, str]:
    """A fetch stage's missing reasons, with the cold ones' demand published: their reasons say they were requested
    from the pool (the client sees that the table degraded while they start)."""
    if publisher is None or not missing:
        return dict(missing)
    requested = publisher.demand(name for name, reason in missing.items() if is_cold(reason))
    return {name: f"{reason}; cold, {REQUESTED}" if name in requested else reason for name, reason in missing.items()}
