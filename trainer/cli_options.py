"""Options that several commands share, built from the one list of each choice (`swarm.model_server.choices`)."""
from __future__ import annotations

from enum import StrEnum

import typer

from swarm.model_server.choices import DEVICE_AUTO, DTYPE_NAMES, FUSION_MODES

DType = StrEnum("DType", {name: name for name in DTYPE_NAMES})
FusionMode = StrEnum("FusionMode", {name: name for name in FUSION_MODES})

DEVICE_OPTION = typer.Option(
    DEVICE_AUTO, help="Where the models run: auto (cuda when this machine has a GPU, else cpu), cpu, cuda, cuda:N.")
