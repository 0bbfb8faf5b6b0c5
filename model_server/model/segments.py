"""Reductions over the columns of many tables at once: `table` maps each column (row of `values`) to its table in
0..n_tables-1, and every reduction gives one row per table (a table without columns gets the reduction's identity:
0 for mean, max and sum, False for any). The orchestrator's policy (serving and PARL) and its training environment
batch whole datasets this way."""
from __future__ import annotations

import torch
from torch import Tensor


def _per_table(values: Tensor, table: Tensor) -> Tensor:
    """`table` shaped to index `values` along its first axis, whatever its trailing dimensions."""
    return table.view(-1, *([1] * (values.dim() - 1))).expand_as(values)


def segment_mean(values: Tensor, table: Tensor, n_tables: int) -> Tensor:
    out = values.new_zeros((n_tables, *values.shape[1:])).index_add_(0, table, values)
    count = torch.bincount(table, minlength=n_tables).clamp_min(1).to(values.dtype)
    return out / count.view(-1, *([1] * (values.dim() - 1)))


def segment_max(values: Tensor, table: Tensor, n_tables: int) -> Tensor:
    out = values.new_full((n_tables, *values.shape[1:]), -torch.inf)
    out = out.scatter_reduce(0, _per_table(values, table), values, "amax")
    return torch.where(torch.isfinite(out), out, torch.zeros_like(out))


def segment_sum(values: Tensor, table: Tensor, n_tables: int) -> Tensor:
    return values.new_zeros((n_tables, *values.shape[1:])).index_add_(0, table, values)


def segment_any(values: Tensor, table: Tensor, n_tables: int) -> Tensor:
    out = torch.zeros((n_tables, *values.shape[1:]), dtype=torch.long, device=values.device)
    return out.index_add_(0, table, values.long()) > 0
