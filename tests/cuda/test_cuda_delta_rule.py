"""The recurrence on CUDA: flash-linear-attention (`impl="fla"`) against the chunked torch path, and the dispatch.

Truth is the chunked path in float64 on the same (already rounded) inputs. fla runs fp32 matmuls as TF32 and keeps
bf16 intermediates for bf16 inputs, so the limits are relative errors of that order; a layout or sign error (head
first vs time first, a missing scale, a transposed state) gives errors of order 1.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from cuda_helpers import assert_close_rel

from swarm.model_server.model import delta_rule as dr

pytestmark = pytest.mark.cuda

# (rms, max) relative error limits.
OUT_TOL = {torch.float32: (5e-3, 3e-2), torch.bfloat16: (2e-2, 8e-2)}
GRAD_TOL = {torch.float32: (1e-2, 6e-2), torch.bfloat16: (5e-2, 2e-1)}
SHAPES = [  # (B, H, T, K, V)
    (2, 4, 100, 64, 64),  # small/base head size, T not a multiple of fla's 64-token chunk
    (3, 2, 37, 32, 32),  # tiny's head size, T shorter than one chunk
    (2, 12, 256, 64, 64),  # base: 12 heads, max_len 256
]


def make_inputs(b: int, h: int, t: int, dk: int, dv: int, dtype: torch.dtype, pad: int = 0):
    """Backbone-like inputs on CUDA: unit-norm silu keys, queries scaled by 1/sqrt(K), log-decays g <= 0, write
    strengths in (0, 1), and the last `pad` steps of batch row 0 padding (g = beta = 0); plus an initial state."""
    q = F.normalize(F.silu(torch.randn(b, h, t, dk)), dim=-1) / math.sqrt(dk)
    k = F.normalize(F.silu(torch.randn(b, h, t, dk)), dim=-1)
    v = F.silu(torch.randn(b, h, t, dv))
    g = -1.5 * torch.rand(b, h, t)
    beta = torch.sigmoid(torch.randn(b, h, t))
    if pad:
        g[0, :, t - pad:] = 0.0
        beta[0, :, t - pad:] = 0.0
    h0 = 0.5 * torch.randn(b, h, dk, dv)
    return [x.to("cuda", dtype) for x in (q, k, v, g, beta, h0)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fla_matches_chunked(fla_ready, shape, with_state: bool, dtype: torch.dtype) -> None:
    q, k, v, g, beta, h0 = make_inputs(*shape, dtype, pad=shape[2] // 3)
    h0 = h0 if with_state else None
    o, state = dr.gated_delta_rule(q, k, v, g, beta, h0, impl="fla")
    assert o.dtype == dtype and state.dtype == dtype
    assert o.shape == (*shape[:3], shape[4]) and state.shape == (shape[0], shape[1], shape[3], shape[4])
    want_o, want_state = dr.gated_delta_rule(*(x.double() for x in (q, k, v, g, beta)),
                                             None if h0 is None else h0.double(), impl="chunked")
    assert_close_rel("outputs", o, want_o, *OUT_TOL[dtype])
    assert_close_rel("final state", state, want_state, *OUT_TOL[dtype])
    # The chunked path in the same dtype, which `auto` uses without fla, agrees too.
    c_o, c_state = dr.gated_delta_rule(q, k, v, g, beta, h0, impl="chunked")
    assert_close_rel("fla vs chunked outputs", o, c_o.double(), *OUT_TOL[dtype])
    assert_close_rel("fla vs chunked state", state, c_state.double(), *OUT_TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fla_gradients_match_chunked(fla_backward_ready, dtype: torch.dtype) -> None:
    """Training runs fla's backward: gradients for q, k, v, g, beta and the initial state (the fused specialist
    states' path into the primary)."""
    inputs = make_inputs(2, 4, 100, 64, 64, dtype, pad=30)
    w_o = torch.randn(2, 4, 100, 64, device="cuda", dtype=torch.float64)
    w_s = torch.randn(2, 4, 64, 64, device="cuda", dtype=torch.float64)

    def grads(impl: str, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [x.detach().requires_grad_() for x in xs]
        o, state = dr.gated_delta_rule(*xs[:5], xs[5], impl=impl)
        loss = (o.double() * w_o).sum() + (state.double() * w_s).sum()
        return list(torch.autograd.grad(loss, xs))

    got = grads("fla", inputs)
    want = grads("chunked", [x.double() for x in inputs])
    for name, a, b in zip(("dq", "dk", "dv", "dg", "dbeta", "dh0"), got, want, strict=True):
        assert a.dtype == dtype, name
        assert_close_rel(name, a, b, *GRAD_TOL[dtype])


def test_fla_under_autocast(fla_ready) -> None:
    """The backbone's dtypes under bf16 autocast: q and k float32 (F.normalize), v and beta bf16, g float32. fla gets
    them as one bf16 dtype and returns q's dtype."""
    q, k, v, g, beta, h0 = make_inputs(2, 4, 100, 64, 64, torch.float32, pad=10)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert dr.fla_dtype(q, k, v.bfloat16()) == torch.bfloat16
        o, state = dr.gated_delta_rule(q, k, v.bfloat16(), g, beta.bfloat16(), h0, impl="auto")
    assert o.dtype == torch.float32 and state.dtype == torch.float32
    rounded = (q, k, v.bfloat16(), g, beta.bfloat16(), h0)
    want_o, want_state = dr.gated_delta_rule(*(x.double() for x in rounded), impl="chunked")
    assert_close_rel("outputs", o, want_o, *OUT_TOL[torch.bfloat16])
    assert_close_rel("final state", state, want_state, *OUT_TOL[torch.bfloat16])


def test_auto_picks_fla_on_cuda(fla_ready, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = dr.fla

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return real(*args, **kwargs)

    monkeypatch.setattr(dr, "fla", spy)
    q, k, v, g, beta, h0 = make_inputs(1, 2, 20, 32, 32, torch.float32)
    dr.gated_delta_rule(q, k, v, g, beta, h0)
    assert calls == [torch.float32]
    dr.gated_delta_rule(*(x.double() for x in (q, k, v, g, beta, h0)))  # float64: no fla kernels, chunked
    dr.gated_delta_rule(*(x.cpu() for x in (q, k, v, g, beta, h0)))  # CPU: chunked
    assert calls == [torch.float32]


def test_auto_falls_back_to_chunked_without_fla(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU machine without flash-linear-attention trains on the chunked path: no error, same results."""
    monkeypatch.setitem(sys.modules, "fla.ops.gated_delta_rule", None)  # `import` now raises ImportError
    assert not dr.fla_available()

    def fail(*args, **kwargs):
        raise AssertionError("fla called although it is not importable")

    monkeypatch.setattr(dr, "fla", fail)
    q, k, v, g, beta, h0 = make_inputs(2, 2, 50, 32, 32, torch.float32)
    o, state = dr.gated_delta_rule(q, k, v, g, beta, h0, impl="auto")
    want_o, want_state = dr.gated_delta_rule(q, k, v, g, beta, h0, impl="chunked")
    torch.testing.assert_close(o, want_o)
    torch.testing.assert_close(state, want_state)


def test_auto_trains_through_a_path_whose_backward_runs(fla_ready) -> None:
    """`auto` with gradients picks fla only where fla's backward runs, and the chunked path elsewhere."""
    inputs = [x.detach().requires_grad_() for x in make_inputs(2, 4, 40, 64, 64, torch.float32, pad=5)]
    picked = []
    real = dr.fla
    try:
        dr.fla = lambda *a, **kw: picked.append("fla") or real(*a, **kw)
        o, state = dr.gated_delta_rule(*inputs[:5], inputs[5], impl="auto")
    finally:
        dr.fla = real
    (o.sum() + state.sum()).backward()
    assert picked == (["fla"] if dr.fla_backward_ok() else [])
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in inputs)
