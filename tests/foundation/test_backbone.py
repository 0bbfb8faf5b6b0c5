"""The recurrent-state backbone: the chunked path equals the step-by-step recurrence, states flow in and out."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from swarm.model_server.model.backbone import CONFIGS, Backbone, count_parameters, get_config
from swarm.model_server.model.column_encoder import COL, CTX, EMPTY, N_SPECIAL, ColumnEncoder
from swarm.model_server.model.delta_rule import chunked, gated_delta_rule, recurrent
from swarm.model_server.model.text import MAX_CELL_CHARS, parse_column, serialize_column


def _inputs(b: int, h: int, t: int, k: int, v: int, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(b, h, t, k, generator=gen, dtype=dtype), dim=-1)
    kk = F.normalize(torch.randn(b, h, t, k, generator=gen, dtype=dtype), dim=-1)
    vv = torch.randn(b, h, t, v, generator=gen, dtype=dtype)
    g = -torch.rand(b, h, t, generator=gen, dtype=dtype) * 0.5
    beta = torch.rand(b, h, t, generator=gen, dtype=dtype)
    s0 = torch.randn(b, h, k, v, generator=gen, dtype=dtype)
    return q, kk, vv, g, beta, s0


@pytest.mark.parametrize(("t", "chunk"), [(1, 16), (37, 16), (64, 64), (130, 32)])
def test_chunked_equals_recurrent(t: int, chunk: int) -> None:
    q, k, v, g, beta, s0 = _inputs(2, 3, t, 8, 12)
    o1, s1 = recurrent(q, k, v, g, beta, s0)
    o2, s2 = chunked(q, k, v, g, beta, s0, chunk=chunk)
    torch.testing.assert_close(o1, o2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s1, s2, rtol=1e-10, atol=1e-10)


def test_chunked_gradients_equal_recurrent() -> None:
    tensors = [x.requires_grad_() for x in _inputs(1, 2, 20, 4, 5)]
    o1, s1 = recurrent(*tensors)
    g1 = torch.autograd.grad((o1.sum() + s1.square().sum()), tensors)
    o2, s2 = chunked(*tensors, chunk=8)
    g2 = torch.autograd.grad((o2.sum() + s2.square().sum()), tensors)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_zero_gate_and_write_leave_state_untouched() -> None:
    q, k, v, g, beta, s0 = _inputs(1, 2, 10, 4, 4)
    _, state = recurrent(q, k, v, torch.zeros_like(g), torch.zeros_like(beta), s0)
    torch.testing.assert_close(state, s0)


def test_unknown_impl() -> None:
    q, k, v, g, beta, _ = _inputs(1, 1, 2, 2, 2)
    with pytest.raises(ValueError, match="unknown delta-rule implementation"):
        gated_delta_rule(q, k, v, g, beta, impl="magic")


def test_configs_and_base_size() -> None:
    base = Backbone(get_config("base"))
    n = count_parameters(base)
    print(f"base parameters: {n:,}")
    assert 90e6 < n < 140e6
    with pytest.raises(ValueError, match="unknown model config"):
        get_config("huge")
    assert set(CONFIGS) == {"tiny", "small", "base"}


def test_states_shape_padding_invariance_and_initial_state() -> None:
    torch.manual_seed(0)
    model = Backbone(get_config("tiny")).eval()
    tok = ColumnEncoder(64)
    texts = [serialize_column(["Berlin", "Paris", ""], [["2020-01-01"]]), serialize_column(["+49 30 123"] * 3)]
    ids, mask = tok(texts)
    out = model(ids, mask)
    cfg = model.cfg
    assert [s.shape for s in out.states] == [(2, cfg.n_heads, cfg.head_k, cfg.head_v)] * cfg.n_layers
    # The shorter column, alone and unpadded, gives the same state as inside the padded batch.
    n = int(mask[1].sum())
    alone = model(ids[1:, :n], mask[1:, :n])
    torch.testing.assert_close(alone.states[-1][0], out.states[-1][1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone.pooled[0], out.pooled[1], rtol=1e-4, atol=1e-5)
    # Injected initial states change what the model computes (this is how specialists' states enter).
    injected = model(ids, mask, initial_states=[torch.randn_like(s) for s in out.states])
    assert not torch.allclose(injected.pooled, out.pooled)
    with pytest.raises(ValueError, match="initial states"):
        model(ids, mask, initial_states=[out.states[0]])


def test_serialization_round_trip() -> None:
    text = serialize_column(["  Berlin ", "Berlin", "", "x" * 500], [["ctx", "", "a", "b", "c"], ["", " "]])
    cells, context = parse_column(text)
    assert cells == ["Berlin", "x" * MAX_CELL_CHARS]  # de-duplicated, empties dropped, clipped
    assert context == [["ctx", "a", "b"]]  # at most CONTEXT_VALUES per neighbour, empty neighbours dropped
    assert parse_column(serialize_column(["", " "])) == ([], [])
    assert parse_column("Hotel Adlon") == (["Hotel Adlon"], [])  # a hand-written request: one cell


def test_encoder_layout() -> None:
    """[CTX] neighbours [COL] cells joined features; an empty column reads [COL] [EMPTY]; padding on the right."""
    ids, mask = ColumnEncoder(64)([serialize_column(["Berlin", "Paris"], [["2020-01-01"], ["EUR 12"]]),
                                   serialize_column([""], [["x"]])])
    first = ids[0][mask[0]].tolist()
    assert first[0] == CTX and first[3] == COL and first[-1] < 0
    assert all(i >= N_SPECIAL for i in first[1:3] + first[4:7])  # 2 neighbours, 2 cells, the joined column
    assert len(first) == 8
    second = ids[1][mask[1]].tolist()
    assert second[:4] == [CTX, second[1], COL, EMPTY] and second[-1] < 0
    assert ColumnEncoder(64, features=False)([serialize_column(["a"])])[0].min() >= 0
    with pytest.raises(ValueError, match="empty batch"):
        ColumnEncoder(16)([])


def test_equal_cells_share_one_cached_vector(tmp_path) -> None:
    from swarm.model_server.model.cell_vectors import CellVectorStore

    first = CellVectorStore(tmp_path)
    ids = first.ids(["Berlin", " Berlin  ", "Paris"])
    assert ids[0] == ids[1] != ids[2]
    again = CellVectorStore(tmp_path)  # a new process: read from the disk cache, nothing encoded
    assert again.ids(["Paris", "Berlin"]) == [ids[2], ids[0]] and again._encoder is None
    torch.testing.assert_close(again.table(torch.device("cpu"))[ids[2]], first.table(torch.device("cpu"))[ids[2]],
                               atol=1e-3, rtol=0)  # float16 on disk


def test_bfloat16_model_runs_on_cpu_close_to_float32() -> None:
    torch.manual_seed(0)
    model = Backbone(get_config("tiny")).eval()
    ids, mask = ColumnEncoder(32)(["Berlin | Paris", "2020-01-01 | 2021-02-03"])
    ref = model(ids, mask).states[-1]
    half = model.to(torch.bfloat16)(ids, mask).states[-1]
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), ref, rtol=0.1, atol=0.05)
