"""`--device` / `--dtype`: one resolution for every command, clear errors, and the compute precision switch."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from swarm.model_server.model import devices
from swarm.model_server.model.devices import autocast, resolve_device, resolve_dtype, set_compute_dtype


def test_auto_is_cuda_only_where_a_gpu_is_visible() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_a_gpu_is_an_error_not_a_silent_cpu_run() -> None:
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        resolve_device("cuda")


@pytest.mark.parametrize("name", ["tpu", "gpu0", "cuda:x"])
def test_unknown_devices_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="device"):
        resolve_device(name)


def test_dtypes_by_name() -> None:
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        resolve_dtype("int8")


def test_compute_precision_is_float32_on_cpu_unless_asked() -> None:
    cpu = torch.device("cpu")
    x = torch.randn(4, 8)
    w = torch.randn(8, 8)
    try:
        set_compute_dtype("auto")
        with autocast(cpu):
            assert (x @ w).dtype == torch.float32
        set_compute_dtype("bfloat16")
        with autocast(cpu):
            assert (x @ w).dtype == torch.bfloat16
    finally:
        set_compute_dtype(None)
    assert devices.compute_dtype(cpu) == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
@pytest.mark.parametrize("command", [
    ["train", "--steps", "1"],
    ["eval", "--data", ".", "--checkpoint", "."],
    ["serve-specialist", "--specialist", "temporal", "--port", "0"],
])
def test_commands_refuse_cuda_on_a_cpu_machine_with_a_clear_error(command: list[str], tiny_dataset) -> None:
    args = [a if a != "." else str(tiny_dataset) for a in command]
    if command[0] == "train":
        args += ["--data", str(tiny_dataset), "--model", "tiny", "--run-dir", str(tiny_dataset / "run")]
    done = subprocess.run([sys.executable, "-m", "swarm.trainer.commands.cli", *args, "--device", "cuda"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "sees no CUDA GPU" in done.stderr and "Traceback" not in done.stderr
