"""In-cluster Kubernetes API access with the standard library only, for code running in a pod that must not pull in
kopf or a Kubernetes client: the annotation service publishing demand (demand.py). It lives beside the code that
runs in the pod; the operator does not use it (kopf is its client).

Configuration is the in-cluster one: KUBERNETES_SERVICE_HOST/PORT and the service-account token and CA at the
standard paths. Callers may override the base URL, the token and the CA file (tests point them at an emulated API
server). Errors are raised (urllib.error.HTTPError, URLError, OSError); callers decide what a failure means.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"


def api_base() -> str | None:
    """https://HOST:PORT of the API server from KUBERNETES_SERVICE_HOST/PORT, or None outside a cluster."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    return f"https://{host}:{port}"


def read_token(service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> str | None:
    """The service-account token (read on every call: the kubelet rotates it), or None when there is none."""
    path = Path(service_account_dir) / "token"
    return path.read_text().strip() if path.is_file() else None


def ssl_context(
    base: str, ca_file: str | os.PathLike[str] | None = None, service_account_dir: Path = SERVICE_ACCOUNT_DIR
) -> ssl.SSLContext | None:
    """For an https base: a context trusting `ca_file` (default: the service account's ca.crt, else the system's)."""
    if not base.startswith("https://"):
        return None
    ca = Path(ca_file) if ca_file is not None else Path(service_account_dir) / "ca.crt"
    return ssl.create_default_context(cafile=str(ca)) if ca.is_file() else ssl.create_default_context()


def request(
    method: str,
    base: str,
    path: str,
    token: str,
    body: Any = None,
    *,
    content_type: str = MERGE_PATCH,
    ca_file: str | os.PathLike[str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    timeout: float = 10.0,
    user_agent: str = "swarm",
) -> bytes:
    """One API call: `body` (if any) sent as JSON with `content_type`; returns the answer's body. Raises
    urllib.error.HTTPError for an error status, URLError/OSError when the server is not reached."""
    headers = {"Accept": "application/json", "Authorization": f"Bearer {token}", "User-Agent": user_agent}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = content_type
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method, headers=headers)
    context = ssl_context(base, ca_file, service_account_dir)
    with urllib.request.urlopen(req, timeout=timeout, context=context) as response:
        return response.read()
