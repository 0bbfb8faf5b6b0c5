"""Ambiguity injection: surface values that are genuinely ambiguous between labels, and how they get in.

"Washington" is a locality, a region, a country-like value, a person and a team; a share of the cells of the
locality, region, country, person and team columns are drawn from these lists instead, so the same string
appears under several labels, as it does in real SOTAB columns.
"""
from __future__ import annotations

from collections.abc import Sequence

from .context import Ctx

# Surface values that are genuinely ambiguous between place, region, country and person labels.
AMBIGUOUS_LOCALITIES = ("Springfield", "Washington", "Paris", "Jordan", "Victoria", "Florence", "Georgia",
                        "Lincoln", "Madison", "Austin", "Charlotte", "Orlando", "Sydney", "Jackson",
                        "Chelsea")
AMBIGUOUS_REGIONS = ("Georgia", "Washington", "Victoria", "Jordan", "Paris", "Madison")
AMBIGUOUS_COUNTRIES = ("Georgia", "Jordan", "Chad", "Niger", "Washington", "Paris")
AMBIGUOUS_PERSONS = ("Jordan", "Paris", "Georgia", "Madison", "Austin", "Charlotte", "Washington", "Victoria",
                     "Lincoln", "Jackson", "Sydney", "Florence")
AMBIGUOUS_TEAMS = ("Washington", "Georgia", "Jordan", "Paris", "Victoria", "Jackson", "Orlando", "Charlotte")


def ambiguous(ctx: Ctx, values: Sequence[str], p: float) -> str | None:
    """With probability `p`, one of the ambiguous `values` (never empty); otherwise None."""
    return ctx.rng.choice(values) if ctx.chance(p) else None
