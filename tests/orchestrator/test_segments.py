"""The per-table reductions against a loop over the tables, with tables that have no columns."""
from __future__ import annotations

import pytest
import torch

from swarm.model_server.model.segments import segment_any, segment_max, segment_mean, segment_sum

N_TABLES = 5  # table 3 gets no column


def _loop(values: torch.Tensor, table: torch.Tensor, reduce, empty) -> torch.Tensor:
    rows = []
    for t in range(N_TABLES):
        mine = values[table == t]
        rows.append(reduce(mine) if len(mine) else torch.full(values.shape[1:], empty, dtype=reduce(values).dtype))
    return torch.stack(rows)


@pytest.mark.parametrize("trailing", [(), (3,), (2, 4)])
def test_each_reduction_matches_a_loop_over_tables(trailing: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    table = torch.tensor([0, 2, 1, 0, 4, 2, 2, 0])
    values = torch.randn((len(table), *trailing), generator=gen)
    torch.testing.assert_close(segment_mean(values, table, N_TABLES), _loop(values, table, lambda v: v.mean(0), 0.0))
    torch.testing.assert_close(segment_max(values, table, N_TABLES),
                               _loop(values, table, lambda v: v.max(0).values, 0.0))
    torch.testing.assert_close(segment_sum(values, table, N_TABLES), _loop(values, table, lambda v: v.sum(0), 0.0))
    flags = values > 0.5
    assert segment_any(flags, table, N_TABLES).equal(_loop(flags, table, lambda v: v.any(0), False))
