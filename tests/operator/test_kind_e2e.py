"""`make kind-e2e`: the real cluster path. Skipped where Docker or kind are missing (CI, this sandbox)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _docker_works() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.kind
@pytest.mark.timeout(1800)
@pytest.mark.skipif(shutil.which("kind") is None, reason="kind is not installed (needed for make kind-e2e)")
@pytest.mark.skipif(not _docker_works(), reason="no working Docker daemon (needed for make kind-e2e)")
def test_kind_e2e() -> None:
    out = subprocess.run(
        ["bash", str(ROOT / "manifests" / "kind" / "e2e.sh")], capture_output=True, text=True, timeout=1700
    )
    assert out.returncode == 0 and "kind e2e: OK" in out.stdout, out.stdout[-4000:] + out.stderr[-4000:]
