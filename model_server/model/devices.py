"""Where models run and in which precision: one resolution of `--device` / `--dtype` for every command.

`auto` picks CUDA when the process sees a GPU, else the CPU; asking for CUDA without one is an error, not a silent
CPU run. The compute precision is a process-wide setting, like torch's own matmul precision: `--dtype auto` (the
default) computes under bf16 autocast on CUDA and in float32 on the CPU; `--dtype float32|bfloat16|float16` forces
one (weights of trained models stay float32; a served specialist's `--dtype` also casts its weights). On CUDA the
recurrent layers use flash-linear-attention's kernels and the fusion the Triton kernels.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from swarm.model_server.choices import DEVICE_AUTO, DTYPE_NAMES

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}
DTYPE_AUTO = "auto"
_compute_dtype: torch.dtype | None = None  # None: bf16 on CUDA, float32 on the CPU


def set_compute_dtype(name: str | None) -> None:
    """The process's compute precision for `autocast` (`auto`/None restores the per-device default)."""
    global _compute_dtype
    _compute_dtype = None if name in (None, DTYPE_AUTO) else resolve_dtype(name)


def resolve_device(name: str | torch.device | None = DEVICE_AUTO) -> torch.device:
    """`auto`/None → cuda if available else cpu; anything else must name a device this process can use."""
    if isinstance(name, torch.device):
        name = str(name)
    if name in (None, "", DEVICE_AUTO):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but this process sees no CUDA GPU (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {name!r} (auto, cpu, cuda, cuda:N)")
    return device


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_NAMES)}") from None


def compute_dtype(device: torch.device) -> torch.dtype:
    if _compute_dtype is not None:
        return _compute_dtype
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """Autocast to the compute precision (by default bf16 on CUDA, for the tensor cores; nothing on the CPU, where
    bf16 matmuls are slower than float32)."""
    dtype = compute_dtype(device)
    if dtype == torch.float32:
        yield
    else:
        with torch.autocast(device.type, dtype=dtype):
            yield
