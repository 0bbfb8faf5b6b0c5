"""Checkpoints: model and optimizer tensors in safetensors, the rest in JSON, written atomically.

A training checkpoint is a directory `step-NNNNNNN/` (model.safetensors, optim.safetensors, trainer.json); the
file `LATEST` names the newest complete one. A directory is renamed into place only once fully written and `LATEST`
is replaced atomically, so a kill at any instant leaves the previous checkpoint intact and resumable.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

LATEST = "LATEST"
KEEP = 2


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training(root: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: torch.optim.lr_scheduler.LRScheduler, meta: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    tensors, optim_meta = _flatten_optimizer(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, tmp / "optim.safetensors")
    record = {"step": step, "meta": meta, "optimizer": optim_meta, "scheduler": scheduler.state_dict()}
    (tmp / "trainer.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = root / f"{LATEST}.tmp"
    latest_tmp.write_text(final.name, encoding="utf-8")
    os.replace(latest_tmp, root / LATEST)
    for old in sorted(root.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text(encoding="utf-8").strip()
    return path if (path / "trainer.json").is_file() else None


def load_training(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: torch.optim.lr_scheduler.LRScheduler) -> tuple[int, dict[str, Any]]:
    """Restore model, optimizer, scheduler and RNG in place; returns (step, meta)."""
    record = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
    model.load_state_dict(load_file(path / "model.safetensors"))
    tensors = load_file(path / "optim.safetensors")
    torch.set_rng_state(tensors.pop("rng.torch"))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, record["optimizer"]))
    scheduler.load_state_dict(record["scheduler"])
    return int(record["step"]), record["meta"]
