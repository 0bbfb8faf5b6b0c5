"""The wire contract: buf lint/format of proto/, and the services and streaming shapes the code relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.v1 import annotation_pb2, specialist_pb2

pytestmark = pytest.mark.timeout(60)

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"


def _buf() -> str | None:
    beside_python = Path(sys.executable).with_name("buf")
    return str(beside_python) if beside_python.is_file() else shutil.which("buf")


@pytest.mark.parametrize("args", [["lint"], ["format", "--diff", "--exit-code"]], ids=["lint", "format"])
def test_buf(args: list[str]) -> None:
    buf = _buf()
    if buf is None:
        pytest.skip("no buf binary (pip install buf-bin)")
    done = subprocess.run([buf, *args], cwd=PROTO_ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr


def test_services_have_the_designed_shapes() -> None:
    specialist = specialist_pb2.DESCRIPTOR.services_by_name["SpecialistService"].methods_by_name
    annotation = annotation_pb2.DESCRIPTOR.services_by_name["AnnotationService"].methods_by_name
    shapes = {
        name: (m.client_streaming, m.server_streaming, m.input_type.name, m.output_type.name)
        for name, m in [*specialist.items(), *annotation.items()]
    }
    assert shapes["StreamStates"] == (False, True, "ColumnsRequest", "StateChunk")
    assert shapes["Annotate"] == (False, False, "Table", "Annotation")
    assert shapes["AnnotateStream"] == (True, True, "Table", "Annotation")
    assert specialist_pb2.DESCRIPTOR.package == annotation_pb2.DESCRIPTOR.package == "swarm.v1"
