"""The NVML node agent: a recorded RTX 4090 reading through a fake pynvml, the real no-NVML path of this
machine, and publishing to a Node in the emulated API, read back by the operator's budget parser."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from swarm.operator import budget, node_agent
from swarm.testing.emulator import NODES, RTX_4090_TOTAL, EmulatedCluster, gpu_node

pytestmark = pytest.mark.timeout(60)
# Recorded with nvidia-ml-py on one RTX 4090 (driver 550, idle desktop).
RECORDED = {
    "name": "NVIDIA GeForce RTX 4090",
    "uuid": "GPU-5c1e5a7e-31f4-2b0d-9a4e-6f2a8d1c0b17",
    "total": RTX_4090_TOTAL,
    "free": 25270681600,
    "used": 486539264,
}


class FakeNvml(SimpleNamespace):
    """The pynvml functions the agent calls, answering with the recorded reading."""

    NVMLError = pynvml.NVMLError

    def __init__(self, devices: int = 1, fail_init: bool = False) -> None:
        super().__init__(devices=devices, fail_init=fail_init, calls=[])

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.fail_init:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return self.devices

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(total=RECORDED["total"], free=RECORDED["free"], used=RECORDED["used"])

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return RECORDED["name"].encode()  # older drivers return bytes

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return RECORDED["uuid"]


def test_recorded_rtx_4090_reading() -> None:
    nvml = FakeNvml(devices=2)
    gpus = node_agent.read_nvml(nvml)  # type: ignore[arg-type]
    assert gpus == [{"index": i, **RECORDED} for i in range(2)]
    assert nvml.calls == ["init", "shutdown"]
    doc = node_agent.collect(nvml)  # type: ignore[arg-type]
    parsed = budget.parse_gpu_annotation("gpu-1", json.dumps(doc))
    assert parsed == [budget.Gpu("gpu-1", i, RTX_4090_TOTAL, RECORDED["free"], "nvml") for i in range(2)]


def test_driver_not_loaded_falls_back_to_declared(caplog: pytest.LogCaptureFixture) -> None:
    warned: list[str] = []
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            doc = node_agent.collect(
                FakeNvml(fail_init=True), declared_gpus=2, declared_memory=RTX_4090_TOTAL, warned=warned
            )  # type: ignore[arg-type]
    assert doc["source"] == "declared" and len(doc["gpus"]) == 2 and "Driver Not Loaded" in doc["reason"]
    assert len([r for r in caplog.records if "NVML unavailable" in r.message]) == 1  # logged once, not per tick


def test_this_machine_without_nvml_reports_clearly(caplog: pytest.LogCaptureFixture) -> None:
    try:
        node_agent.read_nvml()
    except node_agent.NvmlUnavailable:
        pass
    else:
        pytest.skip("this machine has a working NVML; the no-GPU path is covered by the fake driver test")
    with caplog.at_level(logging.WARNING):
        doc = node_agent.collect()
    assert doc["source"] == "unavailable" and doc["gpus"] == [] and doc["reason"]
    assert "NVML unavailable" in caplog.text and "fallbackCapacity" in caplog.text
    assert budget.parse_gpu_annotation("n", json.dumps(doc)) is None  # pools use their fallback capacity
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "swarm.operator.commands",
            "node-agent",
            "--dry-run",
            "--once",
            "--declared-gpus",
            "1",
            "--declared-memory-bytes",
            str(RTX_4090_TOTAL),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["source"] == "declared" and "NVML unavailable" in out.stderr


def test_capacity_patch_advertises_the_sum_of_the_totals_in_whole_mib() -> None:
    """The node-status patch of the extended resource swarm.ai/gpu-memory-mib: the GPUs' totals summed, then
    floored to MiB (never more than the node has); capacity and allocatable alike; None without GPUs."""
    mib = budget.MIB
    assert budget.GPU_MEMORY_RESOURCE == "swarm.ai/gpu-memory-mib"
    doc = node_agent.payload([{"index": i, **RECORDED} for i in range(2)])
    assert RTX_4090_TOTAL % mib == 0
    expected = str(2 * RTX_4090_TOTAL // mib)  # 49128
    assert node_agent.capacity_patch(doc) == {
        "status": {
            "capacity": {budget.GPU_MEMORY_RESOURCE: expected},
            "allocatable": {budget.GPU_MEMORY_RESOURCE: expected},
        }
    }
    # Summed before flooring: two GPUs of 10.5 MiB and 20.75 MiB are 31 MiB (not 10 + 20).
    odd = {"gpus": [{"index": 0, "total": 10 * mib + mib // 2}, {"index": 1, "total": 20 * mib + 3 * mib // 4}]}
    assert node_agent.capacity_patch(odd)["status"]["capacity"] == {budget.GPU_MEMORY_RESOURCE: "31"}
    assert node_agent.capacity_patch({"gpus": [{"index": 0, "total": mib - 1}]})["status"]["allocatable"] == {
        budget.GPU_MEMORY_RESOURCE: "0"
    }
    # A declared reading advertises what is declared; no GPUs (NVML unavailable, nothing declared): no patch.
    declared = node_agent.collect(FakeNvml(fail_init=True), declared_gpus=3, declared_memory=mib * 100)  # type: ignore[arg-type]
    assert node_agent.capacity_patch(declared)["status"]["capacity"] == {budget.GPU_MEMORY_RESOURCE: "300"}
    unavailable = node_agent.collect(FakeNvml(fail_init=True))  # type: ignore[arg-type]
    assert unavailable["gpus"] == [] and node_agent.capacity_patch(unavailable) is None
    assert node_agent.capacity_patch({}) is None


def test_publishes_node_annotation(cluster: EmulatedCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster.create(NODES, {**gpu_node("gpu-1"), "status": {}})  # what the agent advertises, alone
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    asyncio.run(node_agent.run("gpu-1", interval=0, once=True, nvml=FakeNvml(devices=2)))  # type: ignore[arg-type]
    node = cluster.get(NODES, None, "gpu-1")
    raw = node["metadata"]["annotations"][budget.GPU_MEMORY_ANNOTATION]
    assert json.loads(raw)["gpus"] == [{"index": i, **RECORDED} for i in range(2)]
    # The node's GPU memory as the extended resource the swarm's GPU pods request, through the status subresource.
    advertised = {budget.GPU_MEMORY_RESOURCE: str(2 * RTX_4090_TOTAL // budget.MIB)}
    assert node["status"]["capacity"] == node["status"]["allocatable"] == advertised
    status_patches = cluster.requests(lambda r: r.method == "PATCH" and r.subresource == "status")
    assert [str(r.url.path) for r in status_patches] == ["/api/v1/nodes/gpu-1/status"]
    # NVML gone and nothing declared: the annotation says so, the last advertised capacity stays (placed pods keep
    # their accounting).
    asyncio.run(node_agent.run("gpu-1", interval=0, once=True, nvml=FakeNvml(fail_init=True)))  # type: ignore[arg-type]
    node = cluster.get(NODES, None, "gpu-1")
    assert json.loads(node["metadata"]["annotations"][budget.GPU_MEMORY_ANNOTATION])["gpus"] == []
    assert node["status"]["capacity"] == node["status"]["allocatable"] == advertised
    assert len(cluster.requests(lambda r: r.method == "PATCH" and r.subresource == "status")) == 1
    # A missing node is logged, not fatal.
    asyncio.run(node_agent.run("no-such-node", interval=0, once=True, nvml=FakeNvml()))  # type: ignore[arg-type]
