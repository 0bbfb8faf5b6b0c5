"""Compiled Triton fusion kernels against the torch reference (float64 truth), forward and backward, fp32 and bf16."""

from __future__ import annotations

import pytest
import torch

from swarm.model_server.model.fusion import fuse
from swarm.model_server.model.fusion import reference as ref

pytestmark = pytest.mark.cuda

MODES = ("weighted_sum", "gated")
SHAPES = [  # (N, B, H, K, V)
    (1, 1, 12, 64, 64),
    (3, 2, 3, 48, 48),
    (8, 1, 3, 64, 64),
    (2, 3, 5, 20, 36),
    (3, 2, 3, 22, 48),  # several row tiles, the last one partly masked
    (2, 1, 2, 128, 128),
    (1, 1, 1, 1, 1),
    (8, 64, 12, 64, 64),  # base: 8 specialists, batch 64
]
# The GPU kernel accumulates in fp32 and rounds to nearest once: bf16 results are within half a bf16 ulp.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2**-7, atol=1e-3)}


def _kernel(tk, mode: str):
    return tk.weighted_sum_triton if mode == "weighted_sum" else tk.gated_triton


def _reference(mode: str):
    return ref.weighted_sum if mode == "weighted_sum" else ref.gated


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


def test_kernels_are_compiled(kernels) -> None:
    from triton.runtime.interpreter import InterpretedFunction

    assert not isinstance(kernels._fuse_fwd_kernel, InterpretedFunction)
    assert not isinstance(kernels._fuse_bwd_kernel, InterpretedFunction)
    cfg = kernels.launch_config(torch.empty(8, 64, 12, 64, 64, device="cuda"))
    assert cfg.block_k * cfg.block_v <= kernels.TILE_ELEMS["gpu"] and cfg.grid[0] > 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_kernel_matches_reference(kernels, mode: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    states = torch.randn(shape).to("cuda", dtype)
    coef = _coef(mode, shape, dtype).cuda()
    got = _run(_kernel(kernels, mode), states, coef)
    grad_out = got[3]
    # Truth: the reference on the same (already rounded) inputs in float64.
    want = _run(_reference(mode), states.double(), coef.double(), grad_out.double())
    for name, g, w in zip(("out", "d_states", "d_coef"), got[:3], want[:3], strict=True):
        assert g.dtype == dtype and g.is_cuda, name
        tol = dict(TOL[dtype])
        if name == "d_coef" and dtype == torch.float32:
            tol["atol"] = 2e-4  # sums of up to B*V or K*V = 4096 products in fp32 (|d_coef| ~ 64 at the base shape)
        torch.testing.assert_close(g.double(), w, **tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("mode", MODES)
def test_frozen_bf16_states_fp32_coefficients(kernels, mode: str) -> None:
    """The module's real use: frozen bf16 specialist states, fp32 coefficients; only dc is computed."""
    shape = (8, 16, 12, 64, 64)
    states = torch.randn(shape).to("cuda", torch.bfloat16)
    coef = _coef(mode, shape, torch.float32).cuda().requires_grad_()
    out = _kernel(kernels, mode)(states, coef)
    assert out.dtype == torch.bfloat16
    exact = _reference(mode)(states.double(), coef.detach().double())
    torch.testing.assert_close(out.double(), exact, **TOL[torch.bfloat16])
    grad_out = torch.randn_like(out)
    (d_coef,) = torch.autograd.grad(out, (coef,), grad_out)
    assert d_coef.dtype == torch.float32
    c64 = coef.detach().double().requires_grad_()
    (want,) = torch.autograd.grad(_reference(mode)(states.double(), c64), (c64,), grad_out.double())
    torch.testing.assert_close(d_coef.double(), want, rtol=1e-5, atol=1e-4)


def test_non_contiguous_states(kernels) -> None:
    base = torch.randn(2, 3, 4, 16, 8, device="cuda")  # (N, H, B, K, V) -> a (N, B, H, K, V) view
    states = base.transpose(1, 2)
    weights = torch.softmax(torch.randn(4, 3, 2, device="cuda"), -1)
    torch.testing.assert_close(kernels.weighted_sum_triton(states, weights), ref.weighted_sum(states, weights))


@pytest.mark.parametrize("mode", MODES)
def test_auto_backend_uses_the_kernel_on_cuda(kernels, mode: str) -> None:
    shape = (2, 1, 2, 8, 8)
    states = torch.randn(shape, device="cuda")
    coef = _coef(mode, shape, torch.float32).cuda().requires_grad_()
    assert "FusionFunction" in fuse(mode, states, coef, backend="auto").grad_fn.name()
    assert "FusionFunction" not in fuse(mode, states, coef, backend="torch").grad_fn.name()
