"""`swarm up` on a (tiny, untrained) demo-shaped run: the serving options reach the annotation server, the swarm
annotates over gRPC, and SIGTERM stops everything cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from swarm.model_server.model.manifest import PrimaryManifest
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.specialist import untrained
from swarm.model_server.model.tables import load_labels
from swarm.model_server.model.weights import save_weights
from swarm.model_server.serving.grpc_runtime import wait_serving
from swarm.model_server.serving.launcher import process_tree
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def _demo_run(root: Path) -> Path:
    from swarm.model_server.model.backbone import get_config

    untrained("temporal").save(root / "specialists" / "temporal")
    model = PrimaryModel(get_config("tiny"), load_labels(), "weighted_sum", ["temporal"])
    manifest = PrimaryManifest.of(model.meta(), root / "model", [root / "specialists" / "temporal"])
    assert manifest.specialist_dirs == ["../specialists/temporal"]
    save_weights(root / "model", model, manifest)
    return root


def test_swarm_up_serves_with_its_limits_and_stops_on_sigterm(tmp_path: Path) -> None:
    run = _demo_run(tmp_path / "run")
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm.trainer.commands.cli", "up", "--run-dir", str(run), "--port", "0", "--ready-file",
         str(ready), "--device", "cpu", "--max-columns", "4", "--health-port", "0"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        wait_serving(info["address"], 60)
        stub = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(info["address"]))
        table = apb.Table(name="t", rows=[apb.Row(cells=["2021-03-04", "Paris"]), apb.Row(cells=["1999-12-31", ""])])
        reply = stub.Annotate(table, timeout=60)
        assert list(reply.specialists_used) == ["temporal"] and len(reply.columns) == 2
        with pytest.raises(grpc.RpcError) as info_:
            stub.Annotate(apb.Table(name="w", rows=[apb.Row(cells=["x"] * 5)]), timeout=30)
        assert info_.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit is 4 columns" in info_.value.details()
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(info["health_address"]))
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        children = [p for p in process_tree(proc.pid) if p != proc.pid]
        assert len(children) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not Path(f"/proc/{children[0]}").exists()  # stopped and reaped by `up` before it exited
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
