"""Error measures shared by the CUDA tests (a module of its own: conftest files are not for importing)."""

from __future__ import annotations

import torch


def rel_errors(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    """(rms(got - want) / rms(want), max|got - want| / max|want|), in float64."""
    got, want = got.detach().double(), want.detach().double().to(got.device)
    diff = got - want
    rms = (diff.square().mean().sqrt() / want.square().mean().sqrt().clamp_min(1e-30)).item()
    worst = (diff.abs().max() / want.abs().max().clamp_min(1e-30)).item()
    return rms, worst


def assert_close_rel(name: str, got: torch.Tensor, want: torch.Tensor, rms: float, worst: float) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    e_rms, e_max = rel_errors(got, want)
    assert e_rms <= rms and e_max <= worst, (
        f"{name}: rms rel err {e_rms:.2e} (limit {rms:.0e}), max rel err {e_max:.2e} (limit {worst:.0e})"
    )
