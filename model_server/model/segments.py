"""Reductions over the columns of many tables at once: `table` maps each column (row of `values`) to its table in
0..n_tables-1, and every reduction gives one row per table (a table without columns gets the reduction's identity:
0 for mean, max and sum, False for any). The orchestrator's policy (serving and PARL) and its training environment
batch whole datasets this way."""
from __future__ import annotations

import torch
from torch import Tensor


def _by_row(per_row: Tensor, values: Tensor) -> Tensor:
    """A (rows,) tensor shaped (rows, 1, ...) to broadcast along `values`' trailing dimensions."""
    return per_row.view(-1, *([1] * (values.dim() - 1)))


def segment_mean(values: Tensor, table: Tensor, n_tables: int) -> Tensor:
    out = values.new_zeros((n_tables, *values.shape[1:])).index_add_(0, table, values)
    count = torch.bincount(table, minlength=n_tables).clamp_min(1).to(values.dtype)
    return out / _by_row(count, values)


def segment_max(values: Tensor, table: Tensor, n_tables: int) -> Tensor:
    out = values.new_full((n_tables, *values.shape[1:]), -torch.inf)
    out = out.scatter_reduce(0, _by_row(table, values).expand_as(values), values, "amax")
    return torch.where(torch.isfinite(out), out, torch.zeros_like(out))


def segment_sum(values: Tensor, table: Tensor, n_tables: int) -> Tensor:
    return values.new_zeros((n_tables, *values.shape[1:])).index_add_(0, table, values)


def segment_any(values: Tensor, table: Tensor, n_tables: int) -> Tensor:
    out = torch.zeros((n_tables, *values.shape[1:]), dtype=torch.long, device=values.device)
    return out.index_add_(0, table, values.long()) > 0
