"""StateFusion: shapes, initialisation, agent subsets, backends agree, every mode trains."""

import pytest
import torch

from swarm.model_server.model.fusion import MODES, StateFusion

L, H, K, V, Q = 2, 3, 8, 6, 10


def _module(mode: str, n_agents: int = 4, backend: str = "torch") -> StateFusion:
    return StateFusion(mode, n_agents, L, H, K, V, Q, rank=2, backend=backend)


def _states(n: int, b: int = 2, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    return [torch.randn(n, b, H, K, V, dtype=dtype) for _ in range(L)]


def _randomise(module: StateFusion) -> None:
    """Move every parameter off its (often symmetric or zero) initialisation."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5 * torch.randn_like(p))


@pytest.mark.parametrize("mode", MODES)
def test_output_shapes(mode: str) -> None:
    out = _module(mode)(_states(4, b=3), torch.randn(3, Q))
    assert len(out) == L
    assert all(o.shape == (3, H, K, V) for o in out)


@pytest.mark.parametrize("mode", ["gated", "concat_project"])
def test_starts_at_plain_average(mode: str) -> None:
    states = _states(3)
    out = _module(mode, n_agents=5)(states, torch.randn(2, Q), agent_ids=[4, 0, 2])
    for o, s in zip(out, states, strict=True):
        torch.testing.assert_close(o, s.mean(0))


def test_weighted_sum_starts_near_uniform() -> None:
    module = _module("weighted_sum")
    weights = module.attention_weights(torch.randn(2, Q), [0, 1, 2, 3])
    assert weights.shape == (L, 2, H, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(L, 2, H))
    assert (weights - 0.25).abs().max() < 0.05


def test_weighted_sum_uses_query() -> None:
    module = _module("weighted_sum")
    _randomise(module)
    w = module.attention_weights(torch.randn(2, Q), [0, 1, 2, 3])
    assert (w[:, 0] - w[:, 1]).abs().max() > 1e-3  # different tables get different mixes


@pytest.mark.parametrize("mode", MODES)
def test_subset_is_permutation_equivariant(mode: str) -> None:
    """Stacking order must not matter once agent_ids says who is who (catches wrong parameter indexing)."""
    module = _module(mode, n_agents=5)
    _randomise(module)
    states, query = _states(3), torch.randn(2, Q)
    out = module(states, query, agent_ids=[4, 1, 2])
    perm = [2, 0, 1]
    out_perm = module([s[perm] for s in states], query, agent_ids=[2, 4, 1])
    for a, b in zip(out, out_perm, strict=True):
        torch.testing.assert_close(a, b)
    wrong = module([s[perm] for s in states], query, agent_ids=[4, 1, 2])
    assert not torch.allclose(out[0], wrong[0])


def test_gated_subset_uses_those_agents_gates() -> None:
    module = _module("gated", n_agents=4)
    _randomise(module)
    ids = [3, 1]
    states = _states(len(ids))
    out = module(states, torch.randn(2, Q), agent_ids=ids)
    coef = torch.sigmoid(module.gate_logits.detach()) * 2 / len(ids)
    for layer in range(L):
        want = sum(coef[layer, a, :, :, None] * states[layer][i] for i, a in enumerate(ids))
        torch.testing.assert_close(out[layer], want)


@pytest.mark.parametrize("mode", MODES)
def test_absent_agents_get_no_gradient(mode: str) -> None:
    module = _module(mode, n_agents=4)
    _randomise(module)
    out = module(_states(2), torch.randn(2, Q), agent_ids=[1, 3])
    sum(o.square().sum() for o in out).backward()
    agent_dim = {"agent_keys": 2, "agent_bias": 2, "gate_logits": 1, "up": 1, "down": 1}
    for name, p in module.named_parameters():
        if name not in agent_dim:
            continue
        per_agent = p.grad.movedim(agent_dim[name], 0).flatten(1).abs().sum(1)
        assert per_agent[[0, 2]].eq(0).all(), name
        assert per_agent[[1, 3]].gt(0).all(), name


@pytest.mark.parametrize("mode", MODES)
def test_single_agent_and_no_agents(mode: str) -> None:
    module = _module(mode)
    query = torch.randn(2, Q)
    single = _states(1)
    out = module(single, query, agent_ids=[2])
    if mode != "concat_project":  # softmax over one agent / gate at init: exactly that agent's state
        for o, s in zip(out, single, strict=True):
            torch.testing.assert_close(o, s[0])
    empty = module(_states(0), query, agent_ids=[])
    assert all(o.shape == (2, H, K, V) and not o.any() for o in empty)


@pytest.mark.parametrize("mode", ["weighted_sum", "gated"])
def test_triton_backend_matches_torch(mode: str) -> None:
    torch_mod = _module(mode, n_agents=4, backend="torch")
    _randomise(torch_mod)
    triton_mod = _module(mode, n_agents=4, backend="triton")
    triton_mod.load_state_dict(torch_mod.state_dict())
    states, query, ids = _states(3, dtype=torch.bfloat16), torch.randn(2, Q), [0, 3, 1]
    results = []
    for module in (torch_mod, triton_mod):
        out = module(states, query, agent_ids=ids)
        loss = sum((o.float() * torch.linspace(-1, 1, V)).sum() for o in out)
        loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in module.named_parameters()}))
    (out_t, grads_t), (out_k, grads_k) = results
    for a, b in zip(out_t, out_k, strict=True):
        torch.testing.assert_close(b.float(), a.float(), rtol=2**-7, atol=1e-2)
    for name, g in grads_t.items():
        torch.testing.assert_close(grads_k[name], g, rtol=1e-4, atol=1e-4, msg=name)


def _target(mode: str, states: list[torch.Tensor], query: torch.Tensor) -> list[torch.Tensor]:
    """A fusion the module can represent but does not start at."""
    teacher = _module(mode, n_agents=3)
    _randomise(teacher)
    with torch.no_grad():
        return teacher(states, query)


@pytest.mark.parametrize(
    ("mode", "backend"),
    [("weighted_sum", "torch"), ("gated", "torch"), ("concat_project", "torch"), ("weighted_sum", "triton"),
     ("gated", "triton")],
)  # fmt: skip
def test_mode_trains(mode: str, backend: str) -> None:
    states, query = _states(3, b=4), torch.randn(4, Q)
    target = _target(mode, states, query)
    module = _module(mode, n_agents=3, backend=backend)
    opt = torch.optim.Adam(module.parameters(), lr=0.05)

    def loss_fn() -> torch.Tensor:
        return sum(torch.nn.functional.mse_loss(o, t) for o, t in zip(module(states, query), target, strict=True))

    initial = loss_fn().item()
    for _ in range(40 if backend == "torch" else 15):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    final = loss_fn().item()
    assert final < 0.5 * initial, (initial, final)


def test_parameter_counts_match_docstring() -> None:
    n, layers, heads, k, q, d = 8, 12, 12, 64, 768, StateFusion.ATTN_DIM
    counts = {m: sum(p.numel() for p in StateFusion(m, n, layers, heads, k, k, q).parameters()) for m in MODES}
    assert counts["weighted_sum"] == q * d + layers * heads * n * (d + 1) == 62_592
    assert counts["gated"] == layers * n * heads * k == 73_728
    assert counts["concat_project"] == layers * n * heads * 2 * k * 8 == 1_179_648
