"""What several commands share: options built from the one list of each choice (`swarm.model_server.choices`),
the bundled dataset, specialist endpoints, the error exit and publishing metrics."""
from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import NoReturn

import typer

from swarm.model_server.choices import DEVICE_AUTO, DTYPE_NAMES, FUSION_MODES

DEFAULT_DATA = Path("data/sotab-v2-sample")
DEMO_RUN_DIR = Path("runs/demo")  # where `swarm demo` builds the released swarm and `swarm up` serves it from
ENDPOINTS_ENV = "SWARM_SPECIALIST_ENDPOINTS"

# mypy reads members only from a literal in the call (so members are looked up by name: DType["bfloat16"]).
DType = StrEnum("DType", {name: name for name in DTYPE_NAMES})  # type: ignore[misc]
FusionMode = StrEnum("FusionMode", {name: name for name in FUSION_MODES})  # type: ignore[misc]

DEVICE_OPTION = typer.Option(
    DEVICE_AUTO, help="Where the models run: auto (cuda when this machine has a GPU, else cpu), cpu, cuda, cuda:N.")

Precision = StrEnum("Precision", {"auto": "auto"} | {name: name for name in DTYPE_NAMES})  # type: ignore[misc]
PRECISION_OPTION = typer.Option(
    Precision["auto"], "--dtype",
    help="Compute precision: auto (bf16 autocast on CUDA, float32 on the CPU) or a dtype.")


def fail(message: str) -> NoReturn:
    """The CLI's one error exit: the message in red on stderr, status 2, no traceback."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def use_devices(device: str, precision: Precision) -> str:
    """Check a command's --device before any work (an unusable one fails here, clearly) and apply its --dtype to
    this process; returns the resolved device for whatever builds the models."""
    from swarm.model_server.model.devices import resolve_device, set_compute_dtype

    try:
        resolved = str(resolve_device(device))
    except ValueError as exc:
        fail(str(exc))
    set_compute_dtype(precision.value)
    return resolved


def parse_endpoints(pairs: list[str]) -> dict[str, str]:
    """`NAME=HOST:PORT` pairs (empty strings ignored) as a name -> address map."""
    endpoints = {}
    for pair in filter(None, (p.strip() for p in pairs)):
        name, sep, address = pair.partition("=")
        if not sep or not name or not address:
            raise typer.BadParameter(f"{pair!r}: expected NAME=HOST:PORT", param_hint="--specialist")
        endpoints[name] = address
    return endpoints


def endpoints_or_env(specialist: list[str]) -> dict[str, str]:
    """The --specialist endpoints, else those of $SWARM_SPECIALIST_ENDPOINTS (comma-separated)."""
    return parse_endpoints(specialist or os.environ.get(ENDPOINTS_ENV, "").split(","))


def publish(metrics: dict[str, float | int]) -> None:
    """Hand the metrics to the SwarmJob status when running in a trainer pod (a no-op elsewhere)."""
    from swarm.trainer.commands.metrics_publisher import publish_metrics

    publish_metrics(metrics)
