"""Training survives kills: resuming from the last checkpoint reproduces the uninterrupted run exactly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from swarm.model_server.model.backbone import get_config
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.tables import load_labels
from swarm.trainer.data.columns import build_examples
from swarm.trainer.data.sotab import load_dataset
from swarm.trainer.training.checkpoint import latest_checkpoint
from swarm.trainer.training.train import TrainConfig, encode, train


def _setup(data: Path) -> tuple[PrimaryModel, object]:
    labels = load_labels()
    examples = build_examples([load_dataset(data)["training"]], labels)
    torch.manual_seed(0)
    model = PrimaryModel(get_config("tiny"), labels)
    encoded = encode([e.text for e in examples], [e.label for e in examples], ColumnEncoder(64))
    return model, encoded


def test_resume_after_simulated_kill_is_exact(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(steps=12, batch_size=8, ckpt_every=4)
    full, data = _setup(tiny_dataset)
    train(full, data, cfg, tmp_path / "full", full.meta())

    killed, data = _setup(tiny_dataset)
    reached = train(killed, data, cfg.model_copy(update={"stop_after": 6}), tmp_path / "killed", killed.meta())
    assert reached == 6
    assert latest_checkpoint(tmp_path / "killed" / "checkpoints").name == "step-0000004"
    resumed, data = _setup(tiny_dataset)  # a fresh process would start from fresh weights
    assert train(resumed, data, cfg, tmp_path / "killed", resumed.meta()) == 12
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def _cli(data: Path, run_dir: Path, reports: Path) -> list[str]:
    return [sys.executable, "-m", "swarm.trainer.commands.cli", "train", "--data", str(data), "--run-dir", str(run_dir),
            "--model", "tiny", "--steps", "150", "--batch-size", "8", "--ckpt-every", "5",
            "--reports-dir", str(reports)]


def _wait_for_checkpoint(root: Path, proc: subprocess.Popen, after: int, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        latest = latest_checkpoint(root)
        if latest is not None and int(latest.name.split("-")[1]) > after:
            return int(latest.name.split("-")[1])
        assert proc.poll() is None, "training exited before it was interrupted"
        time.sleep(0.01)
    raise TimeoutError("no checkpoint appeared")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_cli_sigterm_then_sigkill_then_resume(tiny_dataset: Path, tmp_path: Path) -> None:
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    ref = subprocess.run(_cli(tiny_dataset, tmp_path / "ref", tmp_path / "rep0"), env=env, capture_output=True,
                         text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]

    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    proc = subprocess.Popen(_cli(tiny_dataset, run, tmp_path / "rep1"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(ckpts, proc, after=0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    # Checkpointed and stopped the whole command (not only the training loop), with 128 + SIGTERM.
    assert proc.returncode == 143, err[-2000:]
    assert "stopped at step" in err
    assert not (run / "model").exists()
    stopped = int(latest_checkpoint(ckpts).name.split("-")[1])
    assert 0 < stopped < 150

    proc = subprocess.Popen(_cli(tiny_dataset, run, tmp_path / "rep2"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(ckpts, proc, after=stopped)
    proc.kill()
    proc.wait(timeout=60)

    done = subprocess.run(_cli(tiny_dataset, run, tmp_path / "rep3"), env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert latest_checkpoint(ckpts).name == "step-0000150"
    a = load_file(tmp_path / "ref" / "model" / "model.safetensors")
    b = load_file(run / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
