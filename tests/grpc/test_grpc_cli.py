"""`swarm serve-specialist` / `swarm serve-annotation` (through `python -m swarm.trainer.commands.cli`) start
real servers that answer on loopback and exit cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from swarm.model_server.serving.grpc_runtime import read_ready_file, wait_serving
from swarm.model_server.serving.launcher import LocalSwarm
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc
from swarm.v1 import specialist_pb2 as pb
from swarm.v1 import specialist_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(120)


@contextmanager
def _command(tmp_path: Path, *args: str) -> Iterator[str]:
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "swarm.trainer.commands.cli",
            *args,
            "--port",
            "0",
            "--ready-file",
            str(ready),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while (address := read_ready_file(ready)) is None:
            if proc.poll() is not None:
                raise AssertionError(f"command exited with {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]
            time.sleep(0.05)
        wait_serving(address, 60)
        yield address
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_specialist(tmp_path: Path) -> None:
    with _command(tmp_path, "serve-specialist", "--specialist", "commerce") as address:
        info = pb_grpc.SpecialistServiceStub(grpc.insecure_channel(address)).Describe(
            pb.DescribeRequest(), timeout=10
        )
    assert info.specialist == "commerce" and info.untrained


@pytest.mark.slow
def test_serve_annotation_against_running_specialists(tmp_path: Path, swarm: LocalSwarm) -> None:
    remote = [arg for name, addr in swarm.addresses.items() for arg in ("--specialist", f"{name}={addr}")]
    with _command(tmp_path, "serve-annotation", *remote) as address:
        table = apb.Table(name="t", rows=[apb.Row(cells=["2021-03-04", "Paris"])])
        reply = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(address)).Annotate(table, timeout=60)
    assert len(reply.columns) == 2 and sorted(reply.specialists_used) == sorted(swarm.addresses)
