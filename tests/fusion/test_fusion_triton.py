"""Triton kernels (run by the interpreter on CPU) against the torch reference, forward and backward."""

import os

import pytest
import torch
from triton.runtime.interpreter import InterpretedFunction

from swarm.model_server.model.fusion import fuse
from swarm.model_server.model.fusion import reference as ref
from swarm.model_server.model.fusion import triton_kernels as tk

MODES = {
    "weighted_sum": (tk.weighted_sum_triton, ref.weighted_sum),
    "gated": (tk.gated_triton, ref.gated),
}
SHAPES = [  # (N, B, H, K, V)
    (1, 1, 12, 64, 64),
    (3, 2, 3, 48, 48),
    (8, 1, 3, 64, 64),
    (2, 3, 5, 20, 36),
    (2, 1, 2, 128, 128),
    (1, 1, 1, 1, 1),
]
# bf16: the kernel accumulates in fp32 and rounds once; the Triton 3.9 interpreter truncates fp32 -> bf16
# instead of rounding to nearest, so allow one bf16 ulp relative to the exact result.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2**-7, atol=1e-3)}


def _coef(mode: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    n, b, h, k, _ = shape
    if mode == "weighted_sum":
        return torch.softmax(3 * torch.randn(b, h, n), dim=-1).to(dtype)
    return torch.rand(n, h, k).to(dtype)


def _run(fn, states: torch.Tensor, coef: torch.Tensor, grad_out: torch.Tensor | None = None):
    states = states.detach().requires_grad_()
    coef = coef.detach().requires_grad_()
    out = fn(states, coef)
    if grad_out is None:
        grad_out = torch.randn_like(out)
    d_states, d_coef = torch.autograd.grad(out, (states, coef), grad_out)
    return out, d_states, d_coef, grad_out


def _assert_matches(mode: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    kernel, reference = MODES[mode]
    states = torch.randn(shape).to(dtype)
    coef = _coef(mode, shape, dtype)
    got = _run(kernel, states, coef)
    grad_out = got[3]
    # Truth: the reference on the same (already rounded) inputs in float64.
    want = _run(reference, states.double(), coef.double(), grad_out.double())
    for name, g, w in zip(("out", "d_states", "d_coef"), got[:3], want[:3], strict=True):
        assert g.dtype == dtype, name
        torch.testing.assert_close(g.double(), w, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")


def test_kernels_are_interpreted() -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1"
    assert tk.INTERPRETED
    assert isinstance(tk._fuse_fwd_kernel, InterpretedFunction)
    assert isinstance(tk._fuse_bwd_kernel, InterpretedFunction)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_kernel_matches_reference(mode: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    _assert_matches(mode, shape, dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(3, 2, 3, 22, 48), (2, 1, 2, 48, 48)], ids=["K22xV48", "K48xV48"])
def test_several_row_tiles(monkeypatch: pytest.MonkeyPatch, mode: str, shape: tuple[int, ...]) -> None:
    """GPU-style tiling: several row tiles per (b, h) plane, the last one partially masked for K=22."""
    monkeypatch.setitem(tk.TILE_ELEMS, "interpreter", 256)
    cfg = tk.launch_config(torch.empty(shape))
    assert cfg.grid[0] > 1 and cfg.block_k * cfg.grid[0] >= shape[3]
    _assert_matches(mode, shape, torch.float32)


@pytest.mark.parametrize("mode", MODES)
def test_mixed_dtypes_and_frozen_states(mode: str) -> None:
    """The module's real use: frozen bf16 specialist states, fp32 coefficients; only dc is computed."""
    kernel, reference = MODES[mode]
    shape = (3, 2, 3, 16, 24)
    states = torch.randn(shape).bfloat16()
    coef = _coef(mode, shape, torch.float32).requires_grad_()
    out = kernel(states, coef)
    assert out.dtype == torch.bfloat16
    exact = reference(states.double(), coef.detach().double())
    torch.testing.assert_close(out.double(), exact, **TOL[torch.bfloat16])
    grad_out = torch.randn_like(out)
    (d_coef,) = torch.autograd.grad(out, (coef,), grad_out)
    assert d_coef.dtype == torch.float32
    c64 = coef.detach().double().requires_grad_()
    (want_coef,) = torch.autograd.grad(reference(states.double(), c64), (c64,), grad_out.double())
    torch.testing.assert_close(d_coef.double(), want_coef, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_backward_without_coef_grad(mode: str) -> None:
    kernel, reference = MODES[mode]
    shape = (2, 2, 3, 16, 16)
    states = torch.randn(shape, requires_grad=True)
    coef = _coef(mode, shape, torch.float32)
    grad_out = torch.randn(shape[1:])
    (d_states,) = torch.autograd.grad(kernel(states, coef), (states,), grad_out)
    (want,) = torch.autograd.grad(reference(states, coef), (states,), grad_out)
    torch.testing.assert_close(d_states, want)


def test_non_contiguous_states() -> None:
    base = torch.randn(2, 3, 4, 16, 8)  # (N, H, B, K, V) -> a (N, B, H, K, V) view with odd strides
    states = base.transpose(1, 2)
    weights = torch.softmax(torch.randn(4, 3, 2), -1)
    torch.testing.assert_close(tk.weighted_sum_triton(states, weights), ref.weighted_sum(states, weights))


@pytest.mark.parametrize("mode", MODES)
def test_fuse_dispatches_to_kernel(mode: str) -> None:
    shape = (2, 1, 2, 8, 8)
    states = torch.randn(shape)
    coef = _coef(mode, shape, torch.float32).requires_grad_()
    assert "FusionFunction" in fuse(mode, states, coef, backend="triton").grad_fn.name()
    assert "FusionFunction" not in fuse(mode, states, coef, backend="torch").grad_fn.name()
    assert "FusionFunction" not in fuse(mode, states, coef, backend="auto").grad_fn.name()  # CPU -> torch


def test_head_dim_limit() -> None:
    states = torch.randn(1, 1, 1, 129, 4)
    with pytest.raises(ValueError, match="K, V <= 128"):
        tk.gated_triton(states, torch.rand(1, 1, 129))


def test_cpu_without_interpreter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tk, "INTERPRETED", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        tk.weighted_sum_triton(torch.randn(1, 1, 1, 4, 4), torch.ones(1, 1, 1))
