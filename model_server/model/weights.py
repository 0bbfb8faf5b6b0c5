"""A standalone primary on disk: `model.safetensors` (the tensors) + `model.json` (its manifest: what to build it
from and what it names, see manifest.py), written so that a reader never sees a half-written tensor file. Training
writes them, serving and evaluation read them (PrimaryModel.load)."""
from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from swarm.model_server.model.manifest import PrimaryManifest

WEIGHTS_FILE = "model.safetensors"


def save_weights(directory: Path, model: nn.Module, manifest: PrimaryManifest) -> None:
    """A standalone model: `model.safetensors` + `model.json` (what evaluation and serving load)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{WEIGHTS_FILE}.tmp"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, directory / WEIGHTS_FILE)
    manifest.save(directory)
