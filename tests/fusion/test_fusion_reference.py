"""The torch reference against naive per-element loops, its explicit backward formulas, and gradcheck."""

import pytest
import torch

from swarm.model_server.model.fusion import reference as ref

F64 = torch.float64


def _inputs(n: int = 3, b: int = 2, h: int = 2, k: int = 4, v: int = 3, rank: int = 2, dtype=F64):
    states = torch.randn(n, b, h, k, v, dtype=dtype)
    weights = torch.softmax(torch.randn(b, h, n, dtype=dtype), dim=-1)
    gates = torch.rand(n, h, k, dtype=dtype)
    up = torch.randn(n, h, k, rank, dtype=dtype)
    down = torch.randn(n, h, rank, k, dtype=dtype)
    return states, weights, gates, up, down


def test_weighted_sum_matches_loop() -> None:
    states, weights, *_ = _inputs()
    n, b, h = states.shape[:3]
    expected = torch.zeros(states.shape[1:], dtype=F64)
    for i in range(n):
        for j in range(b):
            for m in range(h):
                expected[j, m] += weights[j, m, i] * states[i, j, m]
    torch.testing.assert_close(ref.weighted_sum(states, weights), expected)


def test_gated_matches_loop() -> None:
    states, _, gates, *_ = _inputs()
    n, b, h, k = states.shape[:4]
    expected = torch.zeros(states.shape[1:], dtype=F64)
    for i in range(n):
        for j in range(b):
            for m in range(h):
                for r in range(k):
                    expected[j, m, r] += gates[i, m, r] * states[i, j, m, r]
    torch.testing.assert_close(ref.gated(states, gates), expected)


def test_concat_project_matches_loop() -> None:
    states, _, _, up, down = _inputs()
    n, b, h = states.shape[:3]
    expected = torch.zeros(states.shape[1:], dtype=F64)
    for i in range(n):
        for j in range(b):
            for m in range(h):
                expected[j, m] += up[i, m] @ (down[i, m] @ states[i, j, m])
    torch.testing.assert_close(ref.concat_project(states, up, down), expected)


@pytest.mark.parametrize(
    ("forward", "backward", "coef_index"),
    [(ref.weighted_sum, ref.weighted_sum_backward, 1), (ref.gated, ref.gated_backward, 2)],
)
def test_explicit_backward_matches_autograd(forward, backward, coef_index: int) -> None:
    inputs = _inputs()
    states = inputs[0].requires_grad_()
    coef = inputs[coef_index].requires_grad_()
    out = forward(states, coef)
    grad_out = torch.randn_like(out)
    d_states, d_coef = torch.autograd.grad(out, (states, coef), grad_out)
    e_states, e_coef = backward(states.detach(), coef.detach(), grad_out)
    torch.testing.assert_close(e_states, d_states)
    torch.testing.assert_close(e_coef, d_coef)


@pytest.mark.parametrize("n", [1, 3])
def test_gradcheck(n: int) -> None:
    states, weights, gates, up, down = (t.requires_grad_() for t in _inputs(n=n, b=2, h=2, k=3, v=2))
    assert torch.autograd.gradcheck(ref.weighted_sum, (states, weights))
    assert torch.autograd.gradcheck(ref.gated, (states, gates))
    assert torch.autograd.gradcheck(ref.concat_project, (states, up, down))


def test_bf16_accumulates_in_fp32_and_keeps_dtype() -> None:
    states, weights, gates, up, down = _inputs(n=8, k=16, v=16, dtype=torch.float32)
    bf_states = states.bfloat16()
    for fn, params in [
        (ref.weighted_sum, (weights,)),
        (ref.gated, (gates,)),
        (ref.concat_project, (up, down)),
    ]:
        out = fn(bf_states, *params)
        assert out.dtype == torch.bfloat16
        exact = fn(bf_states.double(), *(p.double() for p in params))
        # one bf16 rounding of an fp32-accumulated result, not eight of a bf16 running sum
        torch.testing.assert_close(out.double(), exact, rtol=2**-8, atol=1e-6)
