"""Value generators for people and organisations: person names, organisations, music artists, genders and
sports teams."""
from __future__ import annotations

from . import vocab as V
from .ambiguity import AMBIGUOUS_PERSONS, AMBIGUOUS_TEAMS, ambiguous
from .context import CellFn, Ctx, Row


def person(ctx: Ctx) -> CellFn:
    style = ctx.rng.choice(("name", "name", "name", "inverted", "multi"))

    def cell(row: Row) -> str:
        if value := ambiguous(ctx, AMBIGUOUS_PERSONS, 0.06):
            return value
        name = ctx.fake("name") if ctx.chance(0.6) else ctx.fake("name", english=True)
        if style == "inverted" and " " in name:
            first, _, last = name.rpartition(" ")
            return f"{last}, {first}"
        if style == "multi" and ctx.chance(0.4):
            return f"{name}; {ctx.fake('name', english=True)}"
        return name

    return cell


def organization(ctx: Ctx) -> CellFn:
    pool = ctx.rng.choice((V.PUBLISHERS, V.COMPANIES_JOBS, None))

    def cell(row: Row) -> str:
        if pool is None or ctx.chance(0.15):
            return ctx.fake("company")
        return ctx.rng.choice(pool)

    return cell


def artist(ctx: Ctx) -> CellFn:
    return lambda row: ctx.rng.choice(V.BAND_WORDS) if ctx.chance(0.4) else ctx.fake("name")


def gender(ctx: Ctx) -> CellFn:
    pair = ctx.rng.choice((V.GENDERS[:2], V.GENDERS[2:4], V.GENDERS[4:6], V.GENDERS[6:8]))
    return lambda row: ctx.rng.choice(pair) if ctx.chance(0.97) else ctx.rng.choice(V.GENDERS[8:])


def team(ctx: Ctx) -> CellFn:
    def cell(row: Row) -> str:
        if value := ambiguous(ctx, AMBIGUOUS_TEAMS, 0.1):
            return value
        return ctx.rng.choice(V.SPORTS_TEAMS) + ctx.rng.choice(V.TEAM_SUFFIX)

    return cell
