"""Building blocks shared by the value generators: factory combinators and random draws.

A factory is called once per column with the table's `Ctx` (so a column keeps one format, as scraped columns
do) and returns the per-row cell function; `choice`, `styled`, `joined` and `schema_enum` build the common
kinds of factory. The draw helpers (digits, log-normal numbers, days) are used by several generator modules.
"""
from __future__ import annotations

import math
import random
import string
from collections.abc import Sequence
from datetime import date, timedelta

from .context import CellFn, Ctx, Factory, Row


def choice(*values: str) -> Factory:
    """A factory drawing each cell uniformly from `values`."""
    return lambda ctx: lambda row: ctx.rng.choice(values)


def styled(*styles: Factory) -> Factory:
    """A factory that picks one of several formats for the whole column."""
    return lambda ctx: ctx.rng.choice(styles)(ctx)


def joined(pool: Sequence[str], lo: int, hi: int, seps: Sequence[str] = (" ", ", ", "; ")) -> Factory:
    """A factory joining `lo` to `hi` distinct values of `pool` per cell, with one separator per column."""

    def make(ctx: Ctx) -> CellFn:
        sep = ctx.rng.choice(seps)
        return lambda row: sep.join(ctx.rng.sample(pool, ctx.rng.randint(lo, min(hi, len(pool)))))

    return make


def schema_enum(values: Sequence[str], multi: float = 0.0, base: str | None = None) -> Factory:
    """Schema.org enumeration members as full URLs, bare names or prefixed names, chosen per column."""

    def make(ctx: Ctx) -> CellFn:
        prefix = base if base is not None else ctx.rng.choice(
            ("https://schema.org/", "http://schema.org/", "", "", "schema:"))
        sep = ctx.rng.choice((" ", "; ", ", "))
        dominant = ctx.rng.choice(values)

        def cell(row: Row) -> str:
            n = 1 + (ctx.rng.random() < multi) * ctx.rng.randint(1, 2)
            picks = [dominant if ctx.chance(0.6) else ctx.rng.choice(values) for _ in range(n)]
            return sep.join(prefix + p for p in dict.fromkeys(picks))

        return cell

    return make


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def lognormal_int(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(rng.lognormvariate(math.log(median), sigma))))


def lognormal_number(rng: random.Random, median: float, decimals: int, comma: bool = False) -> str:
    """A log-normal number around `median` with `decimals` places, with a decimal comma if `comma`."""
    text = f"{rng.lognormvariate(math.log(median), 0.8):.{decimals}f}"
    return text.replace(".", ",") if comma else text


def random_day(rng: random.Random, start: int, end: int) -> date:
    return date(start, 1, 1) + timedelta(days=rng.randrange((end - start + 1) * 365))
