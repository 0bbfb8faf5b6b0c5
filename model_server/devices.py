"""Where models run and in which precision: one resolution of `--device` / `--dtype` for every command.

`auto` picks CUDA when the process sees a GPU, else the CPU; asking for CUDA without one is an error, not a silent
CPU run. On CUDA, training and serving compute under bf16 autocast (weights stay float32 unless `--dtype` says
otherwise); the recurrent layers then use flash-linear-attention's kernels and the fusion the Triton kernels.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from swarm.model_server.choices import DEVICE_AUTO, DTYPE_NAMES

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}


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


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """bf16 autocast on CUDA (tensor cores; the states still leave each layer in their own dtype); nothing on CPU,
    where bf16 matmuls are slower than float32."""
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield
