"""swarm.bench.fusion helpers: peak-bandwidth lookup, byte accounting, correctness verdict and report files."""

import json
from pathlib import Path

import pytest
import torch

from swarm.bench import fusion as bench


@pytest.mark.parametrize(
    ("name", "tbps"),
    [
        ("NVIDIA H100 80GB HBM3", 3.35),
        ("NVIDIA H100 PCIe", 2.0),
        ("NVIDIA H200", 4.8),
        ("NVIDIA GeForce RTX 4090", 1.008),
        ("Some Future GPU", None),
    ],
)
def test_peak_lookup(name: str, tbps: float | None) -> None:
    assert bench.peak_tbps(name) == tbps


def test_useful_bytes() -> None:
    shape = bench.Shape()
    plane = 32 * 12 * 64 * 64 * 2
    assert bench.useful_bytes(shape, 3, "forward", torch.bfloat16) == 12 * 4 * plane
    assert bench.useful_bytes(shape, 3, "backward", torch.bfloat16) == 12 * 7 * plane


def test_verdict_and_reports(tmp_path: Path) -> None:
    good = bench.Row("gated", 3, "forward", "triton", ms=1.0, gbps=2.0, rel_err=2**-8)
    bad = bench.Row("gated", 8, "backward", "triton", ms=1.0, gbps=2.0, rel_err=0.1)
    assert bench.failures([good]) == []
    assert bench.failures([good, bad]) == ["triton gated N=8 backward: rel err 1.00e-01"]
    bench.write_reports({"summary": ["device: test"]}, [good], tmp_path)
    assert json.loads((tmp_path / "bench_fusion.json").read_text())["results"][0]["n_agents"] == 3
    assert "| gated | 3 | forward | triton | 1.000 | 2.0 |" in (tmp_path / "bench_fusion.md").read_text()
