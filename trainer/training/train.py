"""Supervised training of column classifiers (the primary, and specialists before they are frozen).

Deterministic and resumable: the batch order of every epoch is a function of (seed, epoch), and checkpoints carry
model, optimizer, scheduler and RNG state, so a run killed at any point and resumed ends with the same weights as
an uninterrupted one. SIGTERM/SIGINT finish the current step, checkpoint and exit cleanly.
"""
from __future__ import annotations

import math
import random
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor, nn
from tqdm.auto import tqdm

from swarm.model_server.choices import DEVICE_AUTO
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.devices import autocast, resolve_device
from swarm.trainer.training import checkpoint


class TrainConfig(BaseModel):
    """One training run's optimisation (the descriptions are `swarm train`'s help)."""

    steps: int = Field(600, ge=1, description="Optimizer steps on the real training columns.")
    batch_size: int = Field(32, ge=1, description="Columns per batch.")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.01, ge=0)
    warmup: int = Field(30, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    ckpt_every: int = Field(100, ge=1, description="Checkpoint every N steps (and on SIGTERM/SIGINT).")
    seed: int = 0
    # auto: CUDA when this machine has a GPU, else the CPU (swarm.model_server.model.devices.resolve_device).
    device: str = DEVICE_AUTO
    stop_after: int | None = Field(None, description="Test hook: stop (as if killed) right after this step, without "
                                   "a final checkpoint.")


@dataclass
class Encoded:
    """Tokenized columns: ids per column (unpadded) and integer labels."""

    ids: list[Tensor]
    labels: Tensor

    def __len__(self) -> int:
        return len(self.ids)


def encode(texts: Sequence[str], labels: Sequence[int], tokenizer: ColumnEncoder, chunk: int = 512) -> Encoded:
    ids: list[Tensor] = []
    for start in range(0, len(texts), chunk):
        batch_ids, mask = tokenizer(texts[start:start + chunk])
        ids += [row[: int(m.sum())].clone() for row, m in zip(batch_ids, mask, strict=True)]
    return Encoded(ids=ids, labels=torch.tensor(list(labels), dtype=torch.long))


def collate(data: Encoded, index: Sequence[int], pad_id: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    rows = [data.ids[i] for i in index]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = True
    return ids, mask, data.labels[list(index)]


def epoch_batches(data: Encoded, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar length (less padding), reproducible from (seed, epoch)."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(data)))
    rng.shuffle(order)
    pool = batch_size * 16
    batches = []
    for start in range(0, len(order), pool):
        block = sorted(order[start:start + pool], key=lambda i: len(data.ids[i]))
        batches += [block[i:i + batch_size] for i in range(0, len(block), batch_size)]
    rng.shuffle(batches)
    return batches


def _schedule(cfg: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


# Extra model inputs for a batch (e.g. specialist states), looked up by example index.
ExtraInputs = Callable[[Sequence[int]], dict[str, Any]]


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors (also inside lists and dicts, as extra inputs hold them) moved to `device`; anything else as is."""
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, list | tuple):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class TrainingInterrupted(SystemExit):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint; the same command resumes it.

    A SystemExit with status 143 (128 + SIGTERM): it unwinds whatever pipeline runs the training, and a pod
    interrupted this way does not count as having succeeded.
    """

    def __init__(self, step: int) -> None:
        super().__init__(128 + signal.SIGTERM)
        self.step = step


class _StopFlag:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True


def train(model: nn.Module, data: Encoded, cfg: TrainConfig, run_dir: Path, meta: dict[str, Any],
          extra: ExtraInputs | None = None, desc: str = "train") -> int:
    """Train `model(ids, mask, **extra(index)) -> logits` for cfg.steps steps; returns the step reached.

    The model moves to `cfg.device` (and stays there); batches follow it, under bf16 autocast on CUDA.
    Resumes from `run_dir/checkpoints` when a checkpoint exists. On SIGTERM/SIGINT it checkpoints and raises
    TrainingInterrupted, so whatever pipeline runs it stops there too.
    """
    ckpt_root = run_dir / "checkpoints"
    device = resolve_device(cfg.device)
    model.to(device)
    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg))
    step = 0
    latest = checkpoint.latest_checkpoint(ckpt_root)
    if latest is not None:
        step, _ = checkpoint.load_training(latest, model, optimizer, scheduler)

    stop = _StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)} \
        if _in_main_thread() else {}
    per_epoch = len(epoch_batches(data, cfg.batch_size, cfg.seed, 0))
    model.train()
    try:
        with tqdm(total=cfg.steps, initial=step, desc=desc, unit="step", dynamic_ncols=True) as bar:
            while step < cfg.steps:
                epoch, pos = divmod(step, per_epoch)
                index = epoch_batches(data, cfg.batch_size, cfg.seed, epoch)[pos]
                ids, mask, labels = to_device(collate(data, index), device)
                with autocast(device):
                    logits = model(ids, mask, **to_device(extra(index) if extra else {}, device))
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch)
                if cfg.stop_after is not None and step >= cfg.stop_after:
                    return step
                if step % cfg.ckpt_every == 0 or step == cfg.steps or stop.requested:
                    checkpoint.save_training(ckpt_root, step, model, optimizer, scheduler, meta)
                if stop.requested:
                    bar.write(f"stopped at step {step} on signal; checkpoint saved, resume with the same command",
                              file=sys.stderr)
                    raise TrainingInterrupted(step)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        model.eval()
    return step


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@torch.inference_mode()
def predict(model: nn.Module, data: Encoded, extra: ExtraInputs | None = None, batch_size: int = 64) -> Tensor:
    """Class probabilities (N, labels) on the CPU, in the original example order; computed on the model's device."""
    model.eval()
    device = model_device(model)
    order = sorted(range(len(data)), key=lambda i: len(data.ids[i]))
    probs: list[Tensor] = [torch.empty(0)] * len(data)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        ids, mask, _ = to_device(collate(data, index), device)
        with autocast(device):
            logits = model(ids, mask, **to_device(extra(index) if extra else {}, device))
        out = logits.float().softmax(-1).cpu()
        for i, row in zip(index, out, strict=True):
            probs[i] = row
    return torch.stack(probs)
