"""Value generators for free text: per-domain descriptions (optionally HTML-wrapped or escaped), reviews, and
item lists (recipe steps, track lists)."""
from __future__ import annotations

import html

from . import vocab as V
from .context import CellFn, Ctx, Factory, Row
from .primitives import random_day


def _sentences(ctx: Ctx, lo: int, hi: int, english: bool = True) -> str:
    english = english or ctx.chance(0.5)
    return " ".join(ctx.fake("sentence", english) for _ in range(ctx.rng.randint(lo, hi)))


def description(domain: str, lo: int = 1, hi: int = 4) -> Factory:
    openers = V.DESCRIPTION_OPENERS.get(domain, ("",))

    def make(ctx: Ctx) -> CellFn:
        wrap = ctx.rng.choice(("", "", "", "html", "escaped"))

        def cell(row: Row) -> str:
            opener = ctx.rng.choice(openers).format(
                city=row.get("city") or ctx.fake("city"), stars=ctx.rng.randint(2, 5),
                date=random_day(ctx.rng, 1950, 2020).isoformat(), score=f"{ctx.rng.uniform(3, 9):.1f}",
                noun=ctx.rng.choice(V.PRODUCT_NOUNS), job=ctx.rng.choice(V.JOB_TITLES),
                company=ctx.rng.choice(V.COMPANIES_JOBS))
            text = opener + (row.get("name", "") + ". " if ctx.chance(0.3) else "") + _sentences(
                ctx, lo, hi, english=ctx.english() or ctx.chance(0.5))
            if wrap == "html":
                return f"<p>{text}</p>"
            return html.escape(f"<p>{text}</p>") if wrap == "escaped" else text

        return cell

    return make


def review(ctx: Ctx) -> CellFn:
    return lambda row: f"{ctx.rng.choice(V.REVIEW_OPENERS)} {_sentences(ctx, 1, 4)}"


def item_list(ctx: Ctx) -> CellFn:
    style = ctx.rng.randrange(3)

    def cell(row: Row) -> str:
        if style == 2:
            tracks = ctx.rng.sample(V.SONG_WORDS, ctx.rng.randint(3, 8))
            return " ".join(f"{i}. {t} {ctx.rng.randint(2, 6)}:{ctx.rng.randrange(60):02d}"
                            for i, t in enumerate(tracks, 1))
        steps = ctx.rng.sample(V.RECIPE_STEPS, ctx.rng.randint(2, 6))
        return " ".join(f"{i}. {s}" for i, s in enumerate(steps, 1)) if style == 1 else "; ".join(steps)

    return cell
