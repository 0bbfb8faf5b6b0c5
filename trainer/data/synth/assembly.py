"""Table assembly: `generate` draws the tables and their ground truth from one seed.

Per table: a domain, a locale and site, the shape (rows, columns, context columns), the optional columns
(weighted by `SPREAD`), then each column's values with repeats and gaps. Everything random flows from one
`random.Random(seed)` tree, so the same seed gives identical tables.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from swarm.model_server.model.tables import Table, load_labels
from swarm.trainer.data.sotab import ColumnRef

from .context import LOCALES, Ctx, Row
from .domains import CONTEXT, DOMAINS, SPREAD, Col, Domain
from .places import site_name
from .primitives import lognormal_int


def _column(col: Col, ctx: Ctx, rows: list[Row]) -> list[str]:
    cell = col.make(ctx)
    if ctx.chance(col.repeat):
        fixed = [cell({}) for _ in range(ctx.rng.choice((1, 1, 2, 3)))]
        values = [ctx.rng.choice(fixed) for _ in rows]
    else:
        values = [cell(row) for row in rows]
    missing = ctx.rng.choice((0.05, 0.1, 0.2, 0.3, 0.5)) if ctx.chance(col.gappy) else 0.0
    values = ["" if ctx.chance(missing) else v for v in values]
    if not any(values):  # a fully empty column would vanish from the JSON rows and shift the width
        values[0] = cell(rows[0])
    return values


def _build_table(domain: Domain, name: str, seed: int, allowed: set[str]) -> tuple[Table, list[ColumnRef]]:
    rng = random.Random(seed)
    ctx = Ctx(rng=rng, locale=rng.choices(list(LOCALES), weights=list(LOCALES.values()))[0], site="")
    ctx.site = site_name(ctx)
    n_rows = lognormal_int(rng, 33, 0.9, 2, 200)
    n_cols = lognormal_int(rng, 7, 0.55, 2, 24)
    n_context = sum(rng.random() < 0.15 for _ in range(n_cols - 1))
    n_optional = max(0, min(len(domain.optional), n_cols - n_context - len(domain.required)))
    # Weighted sampling without replacement (Efraimidis-Spirakis keys), weights from SPREAD.
    keys = sorted(((rng.random() ** SPREAD[c.label], j) for j, c in enumerate(domain.optional)),
                  reverse=True)
    cols = list(domain.required) + [domain.optional[j] for _, j in keys[:n_optional]]
    if not any(c.label in allowed for c in cols):
        cols.append(rng.choice([c for c in domain.optional if c.label in allowed]))
    body = cols[1:]
    rng.shuffle(body)
    cols = cols[:1] + body
    for _ in range(n_context):
        cols.insert(rng.randint(1, len(cols)), rng.choice(CONTEXT))
    rows: list[Row] = [{} for _ in range(n_rows)]
    columns = tuple(tuple(_column(col, ctx, rows)) for col in cols)
    refs = [ColumnRef(name, j, c.label) for j, c in enumerate(cols) if c.label in allowed]
    return Table(name=name, columns=columns), refs


def generate(
    n_tables: int, seed: int, labels: Sequence[str] | None = None
) -> tuple[list[Table], list[ColumnRef]]:
    """`n_tables` synthetic tables and their labelled columns; the same seed gives identical output.

    `labels` restricts the ground truth to those labels (columns of other types stay in the tables,
    unlabelled) and the domains to the ones that can produce at least one of them.
    """
    known = load_labels()
    allowed = set(known if labels is None else labels)
    unknown = allowed - set(known)
    if unknown:
        raise ValueError(f"unknown SOTAB labels: {sorted(unknown)}")
    domains = [d for d in DOMAINS if any(c.label in allowed for c in d.required + d.optional)]
    if not domains:
        raise ValueError("no domain produces any of the requested labels")
    master = random.Random(seed)
    tables: list[Table] = []
    refs: list[ColumnRef] = []
    for i in range(n_tables):
        domain = master.choices(domains, weights=[d.weight for d in domains])[0]
        name = f"Synth_{domain.name}_{seed}_{i}.json.gz"
        table, table_refs = _build_table(domain, name, master.getrandbits(64), allowed)
        tables.append(table)
        refs.extend(table_refs)
    return tables, refs
