"""A standalone model on disk: `model.safetensors` (the tensors) + `model.json` (what to build it from), written
so that a reader never sees a half-written tensor file. Training writes them, serving and evaluation read them."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def save_weights(directory: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """A standalone model: `model.safetensors` + `model.json` (what evaluation and serving load)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "model.safetensors.tmp"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, directory / "model.safetensors")
    (directory / "model.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def load_weights(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    directory = Path(directory)
    if not (directory / "model.json").is_file():
        raise FileNotFoundError(f"{directory}: not a model directory (no model.json)")
    meta = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    return load_file(directory / "model.safetensors"), meta
