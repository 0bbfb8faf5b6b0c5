"""Entity kinds: the name of the thing each table row describes (hotel, restaurant, event, book, ...).

A builder makes one entity name for a row; `entity_name` turns a builder into the column factory of a domain's
`<Domain>/name` column and records the row's name, which URLs, image links and descriptions reuse. Also owns
the `CreativeWork` column, whose values are creative-work names or embedded video ids.
"""
from __future__ import annotations

import html
import string
from collections.abc import Callable, Sequence

from . import vocab as V
from .context import CellFn, Ctx, Factory, Row

Builder = Callable[[Ctx, Row], str]


def entity_name(build: Builder) -> Factory:
    """A name column: records the row's entity name (for URLs and descriptions); sometimes upper-cased."""

    def make(ctx: Ctx) -> CellFn:
        upper = ctx.chance(0.08)
        escape = ctx.chance(0.1)

        def cell(row: Row) -> str:
            name = build(ctx, row)
            row.setdefault("name", name)
            name = name.upper() if upper else name
            return html.escape(name) if escape else name

        return cell

    return make


def from_pool(pool: Sequence[str]) -> Builder:
    """A builder drawing names uniformly from `pool`."""
    return lambda ctx, row: ctx.rng.choice(pool)


def from_patterns(patterns: Sequence[str]) -> Builder:
    """A builder filling one of `patterns` ({city}, {name}, {country}) per name."""
    return lambda ctx, row: _fill(ctx, patterns)


def _pick(ctx: Ctx, *pools: Sequence[str]) -> list[str]:
    return [ctx.rng.choice(p) for p in pools]


def _fill(ctx: Ctx, patterns: Sequence[str]) -> str:
    return ctx.rng.choice(patterns).format(city=ctx.fake("city"), name=ctx.fake("last_name"),
                                           country=ctx.rng.choice(V.COUNTRIES))


venue_name = from_patterns(V.VENUE_PATTERNS)
museum_name = from_patterns(V.MUSEUM_PATTERNS)


def book_title(ctx: Ctx) -> str:
    a, b = ctx.rng.sample(V.BOOK_WORDS, 2)
    pattern = ctx.rng.choice(("The {a} of the {b}", "{a} {b}", "The {a}", "{a} and {b}", "A {a} for a {b}"))
    title = pattern.format(a=a, b=b)
    return f"{title}: {ctx.rng.choice(V.BOOK_SUBTITLES)}" if ctx.chance(0.25) else title


def hotel_name(ctx: Ctx, row: Row) -> str:
    stem, word = _pick(ctx, V.HOTEL_STEMS, V.HOTEL_WORDS)
    return ctx.rng.choice((f"{stem} {word}", f"Hotel {stem}", f"{stem} {ctx.fake('city')} {word}",
                           f"{stem} {ctx.fake('city')} {ctx.rng.randint(2, 5)}* Hotel"))


def restaurant_name(ctx: Ctx, row: Row) -> str:
    stem, word = _pick(ctx, V.RESTAURANT_STEMS, V.RESTAURANT_WORDS)
    last = ctx.fake("last_name")
    return ctx.rng.choice((f"{stem} {word}", f"{last}'s {word}", f"{stem} {word} - {ctx.fake('city')}",
                           f"{word} {last}", f"{ctx.rng.choice(V.CUISINES)} {word}"))


def business_name(ctx: Ctx, row: Row) -> str:
    kind, suffix = _pick(ctx, V.BUSINESS_TYPES, V.BUSINESS_SUFFIX)
    return ctx.rng.choice((f"{ctx.fake('last_name')} {kind} {suffix}".strip(), f"{ctx.fake('company')}",
                           f"{kind} {ctx.fake('city')}", f"Access {kind} - {ctx.fake('city')}"))


def event_name(ctx: Ctx, row: Row) -> str:
    return ctx.rng.choice((
        f"{ctx.rng.choice(V.BAND_WORDS)} Live at {venue_name(ctx, row)}",
        f"{ctx.fake('city')} {ctx.rng.choice(('Jazz Festival', 'Book Fair', 'Open House', 'Job Fair'))} 2020",
        f"Introduction to {ctx.rng.choice(V.JOB_CATEGORIES)}", f"{ctx.rng.choice(V.DAYS)} Night Game Night",
        f"Year {ctx.rng.randint(1, 6)} Concert", f"{ctx.rng.choice(V.EVENT_CATEGORIES).title()} Meetup",
        f"Webinar: {book_title(ctx)}"))


def sports_event_name(ctx: Ctx, row: Row) -> str:
    home, away = ctx.rng.sample(V.SPORTS_TEAMS, 2)
    race = f"{ctx.fake('city')} {ctx.rng.choice(V.SPORT_EVENT_WORDS)}"
    return ctx.rng.choice((f"{home} vs. {away}", f"{home} vs {away}", f"{home} - {away}",
                           f"PARKING: {home} vs. {away}", race, f"{ctx.rng.randint(1, 60)}. {race}"))


def episode_name(ctx: Ctx, row: Row) -> str:
    series, season, ep = ctx.rng.choice(V.SERIES), ctx.rng.randint(1, 12), ctx.rng.randint(1, 24)
    title = ctx.rng.choice(V.EPISODE_WORDS)
    return ctx.rng.choice((f"{series} Season {season} Episode {ep}", f"{series} S{season:02d} E{ep:02d}",
                           title, f"Episode {ep}: {title}"))


def movie_name(ctx: Ctx, row: Row) -> str:
    a, b = _pick(ctx, V.MOVIE_WORDS, V.MOVIE_NOUNS)
    return ctx.rng.choice((f"The {a} {b}", f"{a} {b}", f"{b} {ctx.rng.randint(2, 4)}", f"{a} of {b}", b))


def product_name(ctx: Ctx, row: Row) -> str:
    brand, adj, noun = _pick(ctx, V.BRANDS, V.PRODUCT_ADJ, V.PRODUCT_NOUNS)
    size = f"{ctx.rng.randint(10, 500)}{ctx.rng.choice(('W', 'ml', 'Ah', ''))}"
    return ctx.rng.choice((f"{brand} {adj} {noun}", f"{adj} {noun}", f"{brand} {noun} {size}",
                           f"{noun} - {ctx.rng.choice(V.COUNTRIES)}"))


def recipe_name(ctx: Ctx, row: Row) -> str:
    style, main, dish = _pick(ctx, V.RECIPE_STYLES, V.RECIPE_MAINS, V.RECIPE_DISHES)
    return ctx.rng.choice((f"{style} {main} {dish}", f"{main} and {ctx.rng.choice(V.RECIPE_MAINS)} {dish}",
                           f"{main} {dish}", f"{style} {main} {dish} Recipe"))


def creative_work_name(ctx: Ctx, row: Row) -> str:
    kind, author = ctx.rng.choice(V.WORK_TYPES), ctx.fake("name", english=True)
    return ctx.rng.choice((episode_name(ctx, row), f"{book_title(ctx)} - {kind}", f"{kind} by {author}",
                           book_title(ctx)))


def creative_work(ctx: Ctx) -> CellFn:
    video_ids = ctx.chance(0.6)  # real CreativeWork columns often hold embedded YouTube ids
    alphabet = string.ascii_letters + string.digits + "-_"
    if video_ids:
        return lambda row: "".join(ctx.rng.choice(alphabet) for _ in range(11))
    return lambda row: creative_work_name(ctx, row)
