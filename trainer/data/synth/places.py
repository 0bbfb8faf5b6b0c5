"""Value generators for places, contact details and the web: addresses, regions, countries, coordinates,
phone numbers, e-mail addresses, URLs, image links, and the site name a table is scraped from."""
from __future__ import annotations

import random
import re
import string

from . import vocab as V
from .ambiguity import AMBIGUOUS_COUNTRIES, AMBIGUOUS_LOCALITIES, AMBIGUOUS_REGIONS, ambiguous
from .context import CellFn, Ctx, Factory, Row
from .primitives import digits


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _obfuscate(text: str, rng: random.Random) -> str:
    """HTML-entity obfuscation as anti-spam plugins do it (seen on real email columns)."""
    return "".join(f"&#{ord(c)};" if rng.random() < 0.4 else c for c in text)


def locality(ctx: Ctx) -> CellFn:
    upper = ctx.chance(0.1)

    def cell(row: Row) -> str:
        city = ambiguous(ctx, AMBIGUOUS_LOCALITIES, 0.12) or ctx.fake("city")
        row.setdefault("city", city)
        return city.upper() if upper else city

    return cell


def region(ctx: Ctx) -> CellFn:
    style = ctx.rng.choice(("abbr", "full", "locale", "other"))

    def cell(row: Row) -> str:
        if value := ambiguous(ctx, AMBIGUOUS_REGIONS, 0.1):
            return value
        if style == "locale" and not ctx.locale.startswith("en_US"):
            return ctx.fake("region")
        if style == "other":
            return ctx.rng.choice(V.OTHER_REGIONS)
        abbr, full = ctx.rng.choice(V.US_STATES)
        return abbr if style == "abbr" else full

    return cell


def country(ctx: Ctx) -> CellFn:
    pool = ctx.rng.choice((V.COUNTRIES, V.COUNTRIES, V.COUNTRY_CODES, V.COUNTRY_SHORT))
    multi = ctx.chance(0.15)

    def cell(row: Row) -> str:
        if value := ambiguous(ctx, AMBIGUOUS_COUNTRIES, 0.08):
            return value
        n = ctx.rng.randint(1, 2) if multi else 1
        return ("; " if ctx.chance(0.5) else ", ").join(ctx.rng.sample(pool, n))

    return cell


def postal_code(ctx: Ctx) -> CellFn:
    return lambda row: ctx.fake("postcode")


def street(ctx: Ctx) -> CellFn:
    upper = ctx.chance(0.12)
    return lambda row: ctx.fake("street_address").upper() if upper else ctx.fake("street_address")


def postal_address(ctx: Ctx) -> CellFn:
    style = ctx.rng.randrange(3)

    def cell(row: Row) -> str:
        city = row.get("city") or ctx.fake("city")
        parts = [ctx.fake("street_address"), city]
        if style == 0:
            parts.append(f"{ctx.rng.choice(V.US_STATES)[0]} {digits(ctx.rng, 5)}")
        elif style == 1:
            parts[1] = f"{ctx.fake('postcode')} {city}"
        return (", " if ctx.chance(0.8) else " ").join(parts)

    return cell


def coordinate(ctx: Ctx) -> CellFn:
    bound = ctx.rng.choice((90, 180))
    decimals = ctx.rng.choice((4, 5, 6, 7))
    centre = ctx.rng.uniform(-bound * 0.7, bound * 0.7)
    return lambda row: f"{centre + ctx.rng.uniform(-3, 3):.{decimals}f}"


def phone(prefix: str = "") -> Factory:
    def make(ctx: Ctx) -> CellFn:
        label = prefix if ctx.chance(0.3) else ""
        intl = ctx.chance(0.15)
        digits_only = ctx.chance(0.1)

        def cell(row: Row) -> str:
            number = ctx.fake("phone_number")
            if intl and not number.startswith("+"):
                number = "+" + digits(ctx.rng, 2) + " " + number.lstrip("0(")
            return re.sub(r"\D", "", number) if digits_only else label + number

        return cell

    return make


def email(ctx: Ctx) -> CellFn:
    style = ctx.rng.choice(("plain", "plain", "mailto", "entities"))

    def cell(row: Row) -> str:
        address = ctx.fake("email") if ctx.chance(0.7) else f"info@{ctx.site}"
        if style == "mailto":
            return "mailto:" + address
        return _obfuscate(address, ctx.rng) if style == "entities" else address

    return cell


def url(ctx: Ctx) -> CellFn:
    section = ctx.rng.choice(("", "events/", "movies/", "product/", "listing/", "p/", "en/"))
    style = ctx.rng.randrange(4)

    def cell(row: Row) -> str:
        slug = _slug(row.get("name") or ctx.fake("sentence", english=True)[:30]) or digits(ctx.rng, 6)
        if style == 0:
            return f"/{slug}/"
        if style == 1:
            return f"https://{ctx.site}/{section}{digits(ctx.rng, 6)}/{slug.title()}.html"
        return f"https://{'www.' if style == 2 else ''}{ctx.site}/{section}{slug}/"

    return cell


def photograph(ctx: Ctx) -> CellFn:
    style = ctx.rng.randrange(4)
    ext = ctx.rng.choice((".jpg", ".jpg", ".png", ".jpeg", ".webp"))

    def cell(row: Row) -> str:
        token = "".join(ctx.rng.choice(string.ascii_letters + string.digits) for _ in range(11))
        if style == 0:
            year, month = ctx.rng.randint(2014, 2020), ctx.rng.randint(1, 12)
            slug = _slug(row.get("name", "")) or token
            return f"https://{ctx.site}/wp-content/uploads/{year}/{month:02d}/{slug}{ext}"
        if style == 1:
            return f"https://images-na.ssl-images-amazon.com/images/I/{token}._SL1500_{ext}"
        if style == 2:
            return f"https://cdn.{ctx.site}/images/{token[:6]}/image-w1280{ext}?{digits(ctx.rng, 10)}"
        return f"//{ctx.site}/media/{token}{ext}"

    return cell


def site_name(ctx: Ctx) -> str:
    words = [w.lower() for w in ctx.rng.sample(V.BOOK_WORDS + V.MOVIE_WORDS, 2)]
    return "".join(words) + ctx.rng.choice((".com", ".com", ".co.uk", ".de", ".fr", ".net", ".com.au"))
