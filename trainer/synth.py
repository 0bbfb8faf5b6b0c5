"""Synthetic SOTAB-style web tables for pre-training volume (the project's own generator).

Owns: the column generators for all 82 SOTAB v2 CTA labels, the domain table layouts that mix them,
`generate`, `write_synthetic` and `table_stats` (which also describes real splits, so both can be compared).

A domain is a list of column specs; a column spec is a label plus a factory. A factory is called once per
column with the table context (so a column keeps one format, as scraped columns do) and returns the per-row
cell function. Everything random flows from one `random.Random(seed)` tree: Faker is only used, with fixed
seeds, to build cached per-locale pools (names, cities, phones, ...) that tables draw from with their own
Random.
"""
from __future__ import annotations

import collections
import functools
import html
import math
import random
import re
import statistics
import string
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from faker import Faker

from . import synth_vocab as V
from .sotab import ColumnRef, Table, load_labels, write_split

GT_NAME = "sotab_v2_cta_synthetic_set.csv"

# Locale of a table's site; most SOTAB sites are English-language.
LOCALES = {"en_US": 40, "en_GB": 10, "de_DE": 9, "fr_FR": 9, "es_ES": 7, "it_IT": 6, "nl_NL": 6, "pt_BR": 6,
           "ja_JP": 3, "en_AU": 4}
_POOL_SIZE = 300
_REGION_ATTRS = ("state_abbr", "state", "region", "province", "prefecture", "county", "administrative_unit")

Row = dict[str, str]
CellFn = Callable[[Row], str]


def _sort_set_built_lists(fake: Faker) -> None:
    """Some Faker providers build their word lists from sets (it_IT's `cities = list({...})`), so their order,
    and hence what a seeded Faker draws, changes with PYTHONHASHSEED from one process to the next. Shadow every
    list-of-strings class attribute with a sorted copy on the instance so seeded draws are reproducible."""
    for provider in fake.get_providers():
        for name in dir(type(provider)):
            value = getattr(type(provider), name, None)
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                setattr(provider, name, sorted(value))


@functools.cache
def _pool(locale: str, kind: str) -> tuple[str, ...]:
    """`_POOL_SIZE` Faker values of one kind, fixed per (locale, kind) so tables stay reproducible."""
    fake = Faker(locale)
    _sort_set_built_lists(fake)
    fake.seed_instance(zlib.crc32(f"{locale}/{kind}".encode()))
    method = getattr(fake, next(a for a in _REGION_ATTRS if hasattr(fake, a)) if kind == "region" else kind)
    return tuple(str(method()) for _ in range(_POOL_SIZE))


@dataclass
class Ctx:
    """Per-table state handed to column factories."""

    rng: random.Random
    locale: str
    site: str

    def fake(self, kind: str, english: bool = False) -> str:
        """A Faker value of `kind` (a Faker method name, or "region") in the table's locale or in English."""
        return self.rng.choice(_pool("en_US" if english else self.locale, kind))

    def english(self) -> bool:
        return self.locale.startswith("en")

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


Factory = Callable[[Ctx], CellFn]


@dataclass(frozen=True)
class Col:
    """A column spec: its label (None for unlabelled context) and the factory of its cell function."""

    label: str | None
    make: Factory
    repeat: float = 0.2  # chance that the column draws from a handful of values (one shop, one brand, ...)
    gappy: float = 0.37  # chance that the column has missing cells at all


@dataclass(frozen=True)
class Domain:
    name: str
    required: tuple[Col, ...]
    optional: tuple[Col, ...]
    weight: float = 1.0


# ------------------------------------------------------------------------------------------------- helpers


def choice(*values: str) -> Factory:
    """A factory drawing each cell uniformly from `values`."""
    return lambda ctx: lambda row: ctx.rng.choice(values)


def styled(*styles: Factory) -> Factory:
    """A factory that picks one of several formats for the whole column."""
    return lambda ctx: ctx.rng.choice(styles)(ctx)


def _schema_enum(values: Sequence[str], multi: float = 0.0, base: str | None = None) -> Factory:
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


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _lognormal_int(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(rng.lognormvariate(math.log(median), sigma))))


def _number(rng: random.Random, median: float, decimals: int, comma: bool = False) -> str:
    text = f"{rng.lognormvariate(math.log(median), 0.8):.{decimals}f}"
    return text.replace(".", ",") if comma else text


def _obfuscate(text: str, rng: random.Random) -> str:
    """HTML-entity obfuscation as anti-spam plugins do it (seen on real email columns)."""
    return "".join(f"&#{ord(c)};" if rng.random() < 0.4 else c for c in text)


def _sentences(ctx: Ctx, lo: int, hi: int, english: bool = True) -> str:
    english = english or ctx.chance(0.5)
    return " ".join(ctx.fake("sentence", english) for _ in range(ctx.rng.randint(lo, hi)))


# ------------------------------------------------------------------------------------ places, contact, web


def locality(ctx: Ctx) -> CellFn:
    upper = ctx.chance(0.1)

    def cell(row: Row) -> str:
        city = ctx.rng.choice(V.AMBIGUOUS_LOCALITIES) if ctx.chance(0.12) else ctx.fake("city")
        row.setdefault("city", city)
        return city.upper() if upper else city

    return cell


def region(ctx: Ctx) -> CellFn:
    style = ctx.rng.choice(("abbr", "full", "locale", "other"))

    def cell(row: Row) -> str:
        if ctx.chance(0.1):
            return ctx.rng.choice(V.AMBIGUOUS_REGIONS)
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
        if ctx.chance(0.08):
            return ctx.rng.choice(V.AMBIGUOUS_COUNTRIES)
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
            parts.append(f"{ctx.rng.choice(V.US_STATES)[0]} {_digits(ctx.rng, 5)}")
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
                number = "+" + _digits(ctx.rng, 2) + " " + number.lstrip("0(")
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
        slug = _slug(row.get("name") or ctx.fake("sentence", english=True)[:30]) or _digits(ctx.rng, 6)
        if style == 0:
            return f"/{slug}/"
        if style == 1:
            return f"https://{ctx.site}/{section}{_digits(ctx.rng, 6)}/{slug.title()}.html"
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
            return f"https://cdn.{ctx.site}/images/{token[:6]}/image-w1280{ext}?{_digits(ctx.rng, 10)}"
        return f"//{ctx.site}/media/{token}{ext}"

    return cell


def site_name(ctx: Ctx) -> str:
    words = [w.lower() for w in ctx.rng.sample(V.BOOK_WORDS + V.MOVIE_WORDS, 2)]
    return "".join(words) + ctx.rng.choice((".com", ".com", ".co.uk", ".de", ".fr", ".net", ".com.au"))


# --------------------------------------------------------------------------------------- time and duration

_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d", "%Y", "%Y",
                 "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d %b %Y", "%B %d, %Y",
                 "%b %d, %Y", "%Y/%m/%d", "de", "fr", "es")
_LOCAL_MONTHS = {"de": ("{d}. {m} {y}", V.MONTHS_DE), "fr": ("{d} {m} {y}", V.MONTHS_FR),
                 "es": ("{d} de {m} de {y}", V.MONTHS_ES)}


def _random_day(rng: random.Random, start: int, end: int) -> date:
    return date(start, 1, 1) + timedelta(days=rng.randrange((end - start + 1) * 365))


def date_col(start: int = 2015, end: int = 2021) -> Factory:
    def make(ctx: Ctx) -> CellFn:
        fmt = ctx.rng.choice(_DATE_FORMATS)
        multi = ctx.chance(0.05)

        def one() -> str:
            day = _random_day(ctx.rng, start, end)
            if fmt in _LOCAL_MONTHS:
                pattern, months = _LOCAL_MONTHS[fmt]
                return pattern.format(d=day.day, m=months[day.month - 1], y=day.year)
            return day.strftime(fmt)

        return lambda row: "; ".join(one() for _ in range(ctx.rng.randint(1, 3) if multi else 1))

    return make


_DATETIME_FORMATS = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S{tz}", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
                     "%Y-%m-%d %H:%M:%S UTC", "%Y-%m-%dT%H:%M", "%a %b %d, %I:%M %p", "%d/%m/%Y %H:%M")


def datetime_col(start: int = 2015, end: int = 2021) -> Factory:
    def make(ctx: Ctx) -> CellFn:
        tz = ctx.rng.choice(("+00:00", "-05:00", "+02:00"))
        fmt = ctx.rng.choice(_DATETIME_FORMATS).replace("{tz}", tz)
        midnight = ctx.chance(0.25)

        def cell(row: Row) -> str:
            day = _random_day(ctx.rng, start, end)
            seconds = 0 if midnight else ctx.rng.randrange(86400) // 300 * 300
            return (datetime(day.year, day.month, day.day) + timedelta(seconds=seconds)).strftime(fmt)

        return cell

    return make


def _iso_duration(minutes: int, seconds: int = 0) -> str:
    hours, mins = divmod(minutes, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "H"), (mins, "M"), (seconds, "S")) if n]
    return "PT" + ("".join(parts) or "0S")


def duration(median_min: float) -> Factory:
    """Durations around `median_min` minutes, as ISO 8601, '90 min', bare minutes, 'h:mm' or 'm:ss'."""

    def make(ctx: Ctx) -> CellFn:
        style = ctx.rng.choice(("iso", "iso", "min", "Min.", "bare", "bare", "hm", "clock"))

        def cell(row: Row) -> str:
            minutes = _lognormal_int(ctx.rng, median_min, 0.4, 1, 600)
            secs = ctx.rng.randrange(60) if median_min < 10 else 0
            if style == "iso":
                return _iso_duration(minutes, secs)
            if style in {"min", "Min."}:
                return f"{minutes} {style}" if ctx.chance(0.95) else "N/A"
            if style == "bare":
                return str(minutes)
            if style == "hm":
                return f"{minutes // 60}h {minutes % 60}min" if minutes >= 60 else f"{minutes} mins"
            return f"{minutes}:{secs:02d}" if median_min < 10 else f"{minutes // 60}:{minutes % 60:02d}:00"

        return cell

    return make


def time_col(iso_share: float = 0.0) -> Factory:
    def make(ctx: Ctx) -> CellFn:
        if ctx.chance(iso_share):
            return lambda row: _iso_duration(_lognormal_int(ctx.rng, 20, 0.6, 1, 480))
        style = ctx.rng.randrange(5)

        def cell(row: Row) -> str:
            hour, minute = ctx.rng.randint(6, 22), ctx.rng.choice((0, 0, 15, 30, 45))
            if style == 0:
                return f"{hour:02d}:{minute:02d}:00"
            if style == 1:
                return f"{hour:02d}:{minute:02d}"
            if style == 2:
                return f"{(hour - 1) % 12 + 1}:{minute:02d} {'PM' if hour >= 12 else 'AM'}"
            if style == 3:
                return f"{hour}h{minute:02d}"
            return f"{hour - 12 if hour > 12 else hour}.{minute:02d}{'pm' if hour >= 12 else 'am'}"

        return cell

    return make


def opening_hours(ctx: Ctx) -> CellFn:
    style = ctx.rng.randrange(4)

    def span() -> str:
        start, minute = ctx.rng.choice((7, 8, 9, 10, 11)), ctx.rng.choice(("00", "30"))
        return f"{start:02d}:{minute}-{ctx.rng.randint(16, 23)}:00"

    def cell(row: Row) -> str:
        if style == 0:
            return f"Mo-Fr {span()}" + (f" Sa {span()}" if ctx.chance(0.5) else "")
        if style == 1:
            return ", ".join(f"{d} {span().replace('-', ' - ')}" for d in V.DAY_ABBR[: ctx.rng.randint(5, 7)])
        if style == 2:
            return " ".join(f"{d} {span()}" for d in ctx.rng.sample(V.DAY_ABBR, ctx.rng.randint(3, 7)))
        first, last = ctx.rng.choice(((0, 4), (0, 5), (1, 6)))
        return f"{V.DAYS[first]} - {V.DAYS[last]}: {ctx.rng.randint(7, 11)}am - {ctx.rng.randint(5, 11)}pm"

    return cell


def day_of_week(ctx: Ctx) -> CellFn:
    days = ctx.rng.choice((V.DAYS, V.DAYS, V.DAY_SHORT, V.DAYS_DE, V.DAYS_FR))
    prefix = "http://schema.org/" if days is V.DAYS and ctx.chance(0.25) else ""
    sep = ctx.rng.choice((" ", "; ", ", "))
    single = ctx.chance(0.3)

    def cell(row: Row) -> str:
        n = 1 if single else ctx.rng.randint(2, 7)
        return sep.join(prefix + d for d in ctx.rng.sample(days, n))

    return cell


def work_hours(ctx: Ctx) -> CellFn:
    return lambda row: ctx.rng.choice(V.WORK_HOURS)


# ------------------------------------------------------------------------------------------ money, numbers


def _money(ctx: Ctx, amount: float, code: str, symbol: str, style: int) -> str:
    comma = style in {1, 4}
    text = f"{amount:,.2f}" if amount >= 1000 and style != 3 else f"{amount:.2f}"
    if comma:
        text = text.replace(",", " ").replace(".", ",")
    if style == 0:
        return symbol + text
    if style == 1:
        return f"{text} {symbol}"
    if style == 2:
        return f"{code} {text}"
    if style == 3:
        whole = code in {"JPY", "HUF"} or ctx.chance(0.3)
        return str(round(amount)) if whole else f"{amount:.2f}".rstrip("0")
    return text


def price(ctx: Ctx) -> CellFn:
    code, symbol = ctx.rng.choice(V.CURRENCIES)
    style = ctx.rng.choice((0, 0, 1, 2, 3, 3, 3, 3, 3, 4, 4))
    median = ctx.rng.choice((5, 15, 40, 120, 900)) * (100 if code in {"JPY", "HUF"} else 1)
    return lambda row: _money(ctx, ctx.rng.lognormvariate(math.log(median), 0.7), code, symbol, style)


def monetary_amount(ctx: Ctx) -> CellFn:
    code, symbol = ctx.rng.choice(V.CURRENCIES[:3] + V.CURRENCIES[:1])
    hourly = ctx.chance(0.4)

    def cell(row: Row) -> str:
        if ctx.chance(0.15):
            return ctx.rng.choice(V.SALARY_TEXT)
        if hourly:
            rate = ctx.rng.uniform(8, 40)
            return ctx.rng.choice((f"{symbol}{rate:.2f} per hour", f"{rate:.2f} HOUR", f"{rate:.2f}/h"))
        low = ctx.rng.randrange(18, 90) * 1000
        high = low + ctx.rng.randrange(2, 20) * 1000
        return ctx.rng.choice((f"{symbol}{low:,} - {symbol}{high:,}", f"{low:,} - {high:,}".replace(",", "."),
                               f"{symbol}{low:,} a year", f"{code} {low}-{high} per annum", str(low)))

    return cell


def price_range(ctx: Ctx) -> CellFn:
    symbol = ctx.rng.choice(("$", "$", "€", "£"))
    textual = ctx.chance(0.3)

    def cell(row: Row) -> str:
        if textual:
            low = ctx.rng.choice((10, 20, 50, 100))
            return f"{symbol}{low}-{symbol}{low * ctx.rng.choice((2, 3, 20)):,}"
        return symbol * ctx.rng.choice((1, 2, 2, 2, 3, 4))

    return cell


def currency(ctx: Ctx) -> CellFn:
    codes = [c for c, _ in V.CURRENCIES]
    main = ctx.rng.choice(codes[:4])
    repeated = ctx.chance(0.08)

    def cell(row: Row) -> str:
        code = main if ctx.chance(0.85) else ctx.rng.choice(codes)
        return "; ".join([code] * ctx.rng.randint(2, 8)) if repeated else code

    return cell


def number(ctx: Ctx) -> CellFn:
    style = ctx.rng.randrange(5)

    def cell(row: Row) -> str:
        if style == 0:
            return f"{ctx.rng.uniform(2.5, 5):.{ctx.rng.choice((1, 2))}f}".rstrip("0").rstrip(".")
        if style == 1:
            return str(ctx.rng.randint(1, 10))
        if style == 2:
            return str(_lognormal_int(ctx.rng, 250, 0.5, 20, 2000))
        if style == 3:
            return f"{ctx.rng.randint(1990, 2020)}.0"
        return f"{ctx.rng.uniform(1, 10):.1f}".replace(".", ",")

    return cell


def quantitative_value(ctx: Ctx) -> CellFn:
    unit = ctx.rng.choice(("",) * 7 + (" servings", " Cupcakes", " pieces", " days", " items", " persons"))

    def cell(row: Row) -> str:
        n = _lognormal_int(ctx.rng, 4, 0.8, 1, 500)
        if unit and ctx.chance(0.2):
            return f"{n}-{n + ctx.rng.randint(1, 4)}{unit}"
        return f"{n}{unit}"

    return cell


def _measure(units: Sequence[tuple[str, float, int]]) -> Factory:
    """Numbers with a unit; `units` holds (suffix, median, decimals); a column picks one."""

    def make(ctx: Ctx) -> CellFn:
        suffix, median, decimals = ctx.rng.choice(units)
        comma = ctx.chance(0.15)
        return lambda row: _number(ctx.rng, median, decimals, comma) + suffix

    return make


distance = styled(
    _measure([("", 15, 1), ("", 40, 0)]),
    _measure([(" cm", 30, 1), (" cm", 170, 0), (" mm", 300, 0), (" km", 5, 1), (" mi", 3, 1), ("", 15, 1),
              (" in", 12, 0), (" m", 40, 0)]),
    lambda ctx: lambda row: f"{ctx.rng.randint(5, 6)}' {ctx.rng.randint(0, 11)}\"",
    lambda ctx: lambda row: " x ".join(str(ctx.rng.randint(5, 120)) for _ in range(3)) + " cm",
)
weight = _measure([(" lbs", 3, 3), (" LBS", 2, 2), (" oz", 12, 1), (" kg", 70, 0), (" kg", 1.5, 2),
                   (" gr", 50, 0), ("", 0.5, 2), ("", 2, 2), (" g", 250, 0), (" Kg", 4, 1)])
energy = _measure([(" calories", 250, 0), (" kcal", 400, 0), (" Calories", 300, 0), (" kJ", 1200, 0),
                   (" cal", 180, 0), ("kcal", 350, 0), ("", 300, 0)])


def mass(ctx: Ctx) -> CellFn:
    unit, median = ctx.rng.choice(((" mg", 300), (" g", 8), ("g", 12), (" grams", 6), (" milligrams", 40)))
    nutrient = f" {ctx.rng.choice(V.NUTRIENTS)}" if ctx.chance(0.3) else ""
    return lambda row: f"{_lognormal_int(ctx.rng, median, 0.8, 0, 5000)}{unit}{nutrient}"


def identifier(ctx: Ctx) -> CellFn:
    style = ctx.rng.choice((0, 1, 2, 2, 3, 3, 4, 5))

    def isbn13() -> str:
        return "978" + _digits(ctx.rng, 10)

    def cell(row: Row) -> str:
        if style == 0:
            code = isbn13()
            return f"{code[:3]}-{code[3]}-{code[4:8]}-{code[8:12]}-{code[12]}"
        if style == 1:
            return "ISBN: " + isbn13()
        if style == 2:  # spreadsheet-mangled ISBNs, common in scraped book tables
            return f"{float(isbn13()):.5e}"
        if style == 3:
            return _digits(ctx.rng, 13)
        if style == 4:
            return "".join(ctx.rng.choices(string.ascii_uppercase, k=3)) + _digits(ctx.rng, 4)
        check = ctx.rng.choice("0123456789X")
        return f"{_digits(ctx.rng, 3)}-{_digits(ctx.rng, 4)}-{_digits(ctx.rng, 2)}-{check}"

    return cell


def product_model(ctx: Ctx) -> CellFn:
    pattern = ctx.rng.choice(("AA9999-9", "AAA-A9999A", "9999A999", "AAAA99A-A", "A99999", "AA-AA999/A",
                              "999999"))

    def cell(row: Row) -> str:
        return "".join(ctx.rng.choice(string.ascii_uppercase) if ch == "A" else
                       ctx.rng.choice(string.digits) if ch == "9" else ch for ch in pattern)

    return cell


def boolean(ctx: Ctx) -> CellFn:
    yes, no = ctx.rng.choice((("true", "false"), ("true", "false"), ("True", "False"), ("yes", "no"),
                              ("https://schema.org/True", "https://schema.org/False"), ("Yes", "No")))
    p_yes = ctx.rng.choice((1.0, 0.9, 0.6))
    return lambda row: yes if ctx.chance(p_yes) else no


def unit_code(ctx: Ctx) -> CellFn:
    return lambda row: ctx.rng.choice(V.UNIT_CODES)


def unit_text(ctx: Ctx) -> CellFn:
    return lambda row: ctx.rng.choice(V.UNIT_TEXT)


# ------------------------------------------------------------------------------------------ names, people


def person(ctx: Ctx) -> CellFn:
    style = ctx.rng.choice(("name", "name", "name", "inverted", "multi"))

    def cell(row: Row) -> str:
        if ctx.chance(0.06):
            return ctx.rng.choice(V.AMBIGUOUS_PERSONS)
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
        if ctx.chance(0.1):
            return ctx.rng.choice(V.AMBIGUOUS_TEAMS)
        return ctx.rng.choice(V.SPORTS_TEAMS) + ctx.rng.choice(V.TEAM_SUFFIX)

    return cell


def entity_name(build: Callable[[Ctx, Row], str]) -> Factory:
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


def _pick(ctx: Ctx, *pools: Sequence[str]) -> list[str]:
    return [ctx.rng.choice(p) for p in pools]


def _title(ctx: Ctx) -> str:
    a, b = ctx.rng.sample(V.BOOK_WORDS, 2)
    pattern = ctx.rng.choice(("The {a} of the {b}", "{a} {b}", "The {a}", "{a} and {b}", "A {a} for a {b}"))
    title = pattern.format(a=a, b=b)
    return f"{title}: {ctx.rng.choice(V.BOOK_SUBTITLES)}" if ctx.chance(0.25) else title


def _hotel(ctx: Ctx, row: Row) -> str:
    stem, word = _pick(ctx, V.HOTEL_STEMS, V.HOTEL_WORDS)
    return ctx.rng.choice((f"{stem} {word}", f"Hotel {stem}", f"{stem} {ctx.fake('city')} {word}",
                           f"{stem} {ctx.fake('city')} {ctx.rng.randint(2, 5)}* Hotel"))


def _restaurant(ctx: Ctx, row: Row) -> str:
    stem, word = _pick(ctx, V.RESTAURANT_STEMS, V.RESTAURANT_WORDS)
    last = ctx.fake("last_name")
    return ctx.rng.choice((f"{stem} {word}", f"{last}'s {word}", f"{stem} {word} - {ctx.fake('city')}",
                           f"{word} {last}", f"{ctx.rng.choice(V.CUISINES)} {word}"))


def _business(ctx: Ctx, row: Row) -> str:
    kind, suffix = _pick(ctx, V.BUSINESS_TYPES, V.BUSINESS_SUFFIX)
    return ctx.rng.choice((f"{ctx.fake('last_name')} {kind} {suffix}".strip(), f"{ctx.fake('company')}",
                           f"{kind} {ctx.fake('city')}", f"Access {kind} - {ctx.fake('city')}"))


def _fill(ctx: Ctx, patterns: Sequence[str]) -> str:
    return ctx.rng.choice(patterns).format(city=ctx.fake("city"), name=ctx.fake("last_name"),
                                           country=ctx.rng.choice(V.COUNTRIES))


def _event(ctx: Ctx, row: Row) -> str:
    return ctx.rng.choice((
        f"{ctx.rng.choice(V.BAND_WORDS)} Live at {_fill(ctx, V.VENUE_PATTERNS)}",
        f"{ctx.fake('city')} {ctx.rng.choice(('Jazz Festival', 'Book Fair', 'Open House', 'Job Fair'))} 2020",
        f"Introduction to {ctx.rng.choice(V.JOB_CATEGORIES)}", f"{ctx.rng.choice(V.DAYS)} Night Game Night",
        f"Year {ctx.rng.randint(1, 6)} Concert", f"{ctx.rng.choice(V.EVENT_CATEGORIES).title()} Meetup",
        f"Webinar: {_title(ctx)}"))


def _sports_event(ctx: Ctx, row: Row) -> str:
    home, away = ctx.rng.sample(V.SPORTS_TEAMS, 2)
    race = f"{ctx.fake('city')} {ctx.rng.choice(V.SPORT_EVENT_WORDS)}"
    return ctx.rng.choice((f"{home} vs. {away}", f"{home} vs {away}", f"{home} - {away}",
                           f"PARKING: {home} vs. {away}", race, f"{ctx.rng.randint(1, 60)}. {race}"))


def _episode(ctx: Ctx, row: Row) -> str:
    series, season, ep = ctx.rng.choice(V.SERIES), ctx.rng.randint(1, 12), ctx.rng.randint(1, 24)
    title = ctx.rng.choice(V.EPISODE_WORDS)
    return ctx.rng.choice((f"{series} Season {season} Episode {ep}", f"{series} S{season:02d} E{ep:02d}",
                           title, f"Episode {ep}: {title}"))


def _movie(ctx: Ctx, row: Row) -> str:
    a, b = _pick(ctx, V.MOVIE_WORDS, V.MOVIE_NOUNS)
    return ctx.rng.choice((f"The {a} {b}", f"{a} {b}", f"{b} {ctx.rng.randint(2, 4)}", f"{a} of {b}", b))


def _product(ctx: Ctx, row: Row) -> str:
    brand, adj, noun = _pick(ctx, V.BRANDS, V.PRODUCT_ADJ, V.PRODUCT_NOUNS)
    size = f"{ctx.rng.randint(10, 500)}{ctx.rng.choice(('W', 'ml', 'Ah', ''))}"
    return ctx.rng.choice((f"{brand} {adj} {noun}", f"{adj} {noun}", f"{brand} {noun} {size}",
                           f"{noun} - {ctx.rng.choice(V.COUNTRIES)}"))


def _recipe(ctx: Ctx, row: Row) -> str:
    style, main, dish = _pick(ctx, V.RECIPE_STYLES, V.RECIPE_MAINS, V.RECIPE_DISHES)
    return ctx.rng.choice((f"{style} {main} {dish}", f"{main} and {ctx.rng.choice(V.RECIPE_MAINS)} {dish}",
                           f"{main} {dish}", f"{style} {main} {dish} Recipe"))


def _creative_work_name(ctx: Ctx, row: Row) -> str:
    kind, author = ctx.rng.choice(V.WORK_TYPES), ctx.fake("name", english=True)
    return ctx.rng.choice((_episode(ctx, row), f"{_title(ctx)} - {kind}", f"{kind} by {author}", _title(ctx)))


def creative_work(ctx: Ctx) -> CellFn:
    video_ids = ctx.chance(0.6)  # real CreativeWork columns often hold embedded YouTube ids
    alphabet = string.ascii_letters + string.digits + "-_"
    if video_ids:
        return lambda row: "".join(ctx.rng.choice(alphabet) for _ in range(11))
    return lambda row: _creative_work_name(ctx, row)


# ---------------------------------------------------------------------------------------------- free text


def description(domain: str, lo: int = 1, hi: int = 4) -> Factory:
    openers = V.DESCRIPTION_OPENERS.get(domain, ("",))

    def make(ctx: Ctx) -> CellFn:
        wrap = ctx.rng.choice(("", "", "", "html", "escaped"))

        def cell(row: Row) -> str:
            opener = ctx.rng.choice(openers).format(
                city=row.get("city") or ctx.fake("city"), stars=ctx.rng.randint(2, 5),
                date=_random_day(ctx.rng, 1950, 2020).isoformat(), score=f"{ctx.rng.uniform(3, 9):.1f}",
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


def _joined(pool: Sequence[str], lo: int, hi: int, seps: Sequence[str] = (" ", ", ", "; ")) -> Factory:
    def make(ctx: Ctx) -> CellFn:
        sep = ctx.rng.choice(seps)
        return lambda row: sep.join(ctx.rng.sample(pool, ctx.rng.randint(lo, min(hi, len(pool)))))

    return make


_GOODRELATIONS = "http://purl.org/goodrelations/v1#"
amenities = _joined(V.AMENITIES, 2, 9)
payment = styled(
    _joined(V.PAYMENT_TEXT, 1, 6, (", ", "; ", " ")),
    _joined(tuple(_GOODRELATIONS + p for p in V.PAYMENT_GR), 1, 5, (",", " ")),
)
delivery = styled(_schema_enum(V.DELIVERY, multi=0.3, base=_GOODRELATIONS),
                  choice(*V.DELIVERY_TEXT))
book_format = styled(_schema_enum(V.BOOK_FORMATS), choice(*V.BOOK_FORMAT_TEXT))
language = styled(choice(*V.LANGUAGES), choice(*V.LANGUAGE_NATIVE), choice(*V.LANGUAGE_CODES),
                  _joined(V.LANGUAGES, 1, 2, (", ",)))
rating = styled(choice(*V.RATINGS_MPAA), choice(*V.RATINGS_MPAA[:6]),
                choice("2 stars", "3 stars", "4 stars", "5 stars", "★★★", "★★★★", "4.5/5"))

# -------------------------------------------------------------------------------------------------- domains


def _c(label: str, make: Factory, repeat: float = 0.2) -> Col:
    return Col(label, make, repeat)


def _from(pool: Sequence[str]) -> Callable[[Ctx, Row], str]:
    return lambda ctx, row: ctx.rng.choice(pool)


def _venue(ctx: Ctx, row: Row) -> str:
    return _fill(ctx, V.VENUE_PATTERNS)


# The default column spec of each label; domains refer to labels by name and may override a spec.
COLUMNS: dict[str, Col] = {c.label: c for c in (
    _c("streetAddress", street), _c("addressLocality", locality), _c("postalCode", postal_code),
    _c("addressRegion", region), _c("Country", country, 0.5), _c("PostalAddress", postal_address),
    _c("CoordinateAT", coordinate, 0.0), _c("telephone", phone("Tel: ")), _c("faxNumber", phone("Fax: ")),
    _c("email", email), _c("URL", url, 0.0), _c("Photograph", photograph, 0.05),
    _c("price", price, 0.1), _c("currency", currency, 0.7), _c("priceRange", price_range, 0.5),
    _c("MonetaryAmount", monetary_amount), _c("ItemAvailability", _schema_enum(V.AVAILABILITY)),
    _c("OfferItemCondition", _schema_enum(V.CONDITION)), _c("DeliveryMethod", delivery),
    _c("paymentAccepted", payment), _c("openingHours", opening_hours, 0.5), _c("DayOfWeek", day_of_week, 0.5),
    _c("Time", time_col()), _c("Date", date_col()), _c("DateTime", datetime_col()),
    _c("Duration", duration(30)), _c("workHours", work_hours, 0.5), _c("Boolean", boolean, 0.5),
    _c("Number", number), _c("QuantitativeValue", quantitative_value), _c("Distance", distance),
    _c("weight", weight), _c("Mass", mass), _c("Energy", energy), _c("unitCode", unit_code, 0.6),
    _c("unitText", unit_text, 0.6), _c("IdentifierAT", identifier, 0.0),
    _c("ProductModel", product_model, 0.05),
    _c("Person/name", person), _c("Organization", organization, 0.4), _c("MusicArtistAT", artist),
    _c("GenderType", gender), _c("SportsTeam", team), _c("Brand", choice(*V.BRANDS), 0.5),
    _c("Language", language, 0.5), _c("Rating", rating), _c("Review", review),
    _c("ItemList", item_list), _c("LocationFeatureSpecification", amenities),
    _c("RestrictedDiet", _schema_enum(V.DIETS, multi=0.4)), _c("BookFormatType", book_format, 0.4),
    _c("EventAttendanceModeEnumeration", _schema_enum(V.ATTENDANCE)),
    _c("EventStatusType", _schema_enum(V.EVENT_STATUS)), _c("CreativeWork", creative_work, 0.0),
    _c("CreativeWorkSeries", choice(*V.SERIES), 0.5), _c("CategoryCode", choice(*V.JOB_CATEGORIES)),
    _c("OccupationalExperienceRequirements", choice(*V.EXPERIENCE)),
    _c("EducationalOccupationalCredential", choice(*V.CREDENTIALS)),
    _c("category", choice(*V.PRODUCT_CATEGORIES)), _c("MusicAlbum/name", choice(*V.ALBUM_WORDS), 0.5),
    _c("MusicRecording/name", choice(*V.SONG_WORDS)), _c("Place/name", entity_name(_venue)),
    _c("CreativeWork/name", entity_name(_creative_work_name)),
    _c("Event/description", description("Event")), _c("Movie/description", description("Movie")),
    _c("Hotel/description", description("Hotel")), _c("Book/description", description("Book")),
    _c("Recipe/description", description("Recipe")), _c("Product/description", description("Product")),
    _c("JobPosting/description", description("JobPosting", 2, 6)),
)}


def _domain(name: str, build: Callable[[Ctx, Row], str], labels: str, weight: float = 1.0,
            **overrides: Col) -> Domain:
    """A domain: its `<name>/name` entity column plus optional columns by label (a label may repeat).

    `overrides` replaces a label's default spec (key: the label with '/' written as '_').
    """
    names = labels.split()
    if not set(overrides) <= {n.replace("/", "_") for n in names}:
        raise ValueError(f"{name}: overrides {sorted(overrides)} name labels the domain does not use")
    optional = tuple(overrides.get(label.replace("/", "_"), COLUMNS[label]) for label in names)
    return Domain(name, (Col(f"{name}/name", entity_name(build), repeat=0.04, gappy=0.05),), optional, weight)


ADDRESS = "streetAddress addressLocality postalCode addressRegion Country "
CONTACT = "telephone faxNumber email URL Photograph "
OFFER = "price currency ItemAvailability OfferItemCondition "
DOMAINS: tuple[Domain, ...] = (
    _domain("Restaurant", _restaurant, ADDRESS + CONTACT + "priceRange openingHours paymentAccepted "
            "DayOfWeek Time CoordinateAT PostalAddress Rating"),
    _domain("Hotel", _hotel, ADDRESS + CONTACT + "Hotel/description CoordinateAT "
            "LocationFeatureSpecification priceRange Time paymentAccepted Brand Rating currency Boolean",
            Brand=_c("Brand", choice(*V.HOTEL_CHAINS), 0.6)),
    _domain("LocalBusiness", _business, ADDRESS + CONTACT + "openingHours DayOfWeek priceRange PostalAddress "
            "Brand paymentAccepted CoordinateAT Time"),
    _domain("Museum", lambda ctx, row: _fill(ctx, V.MUSEUM_PATTERNS), ADDRESS + CONTACT + "openingHours "
            "DayOfWeek Time priceRange Boolean CoordinateAT"),
    _domain("Place", _venue, "PostalAddress addressLocality Country CoordinateAT telephone URL Photograph "
            "LocationFeatureSpecification Distance", weight=0.6),
    _domain("Event", _event, "Event/description Date DateTime EventAttendanceModeEnumeration EventStatusType "
            "Place/name PostalAddress addressLocality Organization price currency URL Photograph Time email "
            "telephone Boolean category ItemAvailability Country", weight=1.3,
            Date=_c("Date", date_col(2019, 2021)), DateTime=_c("DateTime", datetime_col(2019, 2021)),
            category=_c("category", choice(*V.EVENT_CATEGORIES), 0.6)),
    _domain("SportsEvent", _sports_event, "SportsTeam SportsTeam DateTime Date Place/name addressLocality "
            "EventStatusType URL Time price Event/description Organization"),
    _domain("Book", lambda ctx, row: _title(ctx), OFFER + "Book/description Person/name Organization "
            "IdentifierAT BookFormatType Date Language Number Review Photograph URL DateTime CreativeWork "
            "Boolean Rating", weight=1.3, Date=_c("Date", date_col(1990, 2020))),
    _domain("Movie", _movie, "Movie/description Duration Date Rating Country Language Person/name "
            "MusicArtistAT URL Photograph Number DateTime category", Duration=_c("Duration", duration(100)),
            Date=_c("Date", date_col(1960, 2021)), category=_c("category", choice(*V.MOVIE_GENRES))),
    _domain("TVEpisode", _episode, "CreativeWorkSeries Date Duration Number URL Photograph CreativeWork/name "
            "Movie/description Rating Person/name", weight=0.8, Duration=_c("Duration", duration(40))),
    _domain("MusicRecording", _from(V.SONG_WORDS), "MusicAlbum/name MusicArtistAT Duration Date URL ItemList "
            "Number Photograph DateTime Organization", Duration=_c("Duration", duration(4))),
    _domain("MusicAlbum", _from(V.ALBUM_WORDS), "MusicArtistAT ItemList Date Number price currency URL "
            "Photograph MusicRecording/name Duration", weight=0.7, Duration=_c("Duration", duration(45))),
    _domain("Product", _product, OFFER + "Product/description Brand ProductModel IdentifierAT DeliveryMethod "
            "paymentAccepted weight unitCode unitText QuantitativeValue Distance category Photograph URL "
            "Date Number Review Boolean MonetaryAmount", weight=1.6),
    _domain("Recipe", _recipe, "Recipe/description ItemList Energy Mass Mass Duration Time RestrictedDiet "
            "DateTime Person/name Number QuantitativeValue category Review Photograph Date",
            Time=_c("Time", time_col(iso_share=0.8)), category=_c("category", choice(*V.RECIPE_CATEGORIES))),
    _domain("JobPosting", _from(V.JOB_TITLES), "JobPosting/description Organization MonetaryAmount workHours "
            "OccupationalExperienceRequirements EducationalOccupationalCredential CategoryCode DateTime Date "
            "addressLocality addressRegion Country postalCode email URL currency unitText", weight=1.2,
            unitText=_c("unitText", choice("HOUR", "YEAR", "MONTH", "WEEK"), 0.7)),
    _domain("Person", lambda ctx, row: person(ctx)(row), "GenderType Date Distance weight Country email "
            "telephone addressLocality Photograph URL Organization SportsTeam MusicArtistAT",
            Date=_c("Date", date_col(1940, 2002))),
    _domain("CreativeWork", _creative_work_name, "CreativeWork Person/name DateTime Date Language URL Review "
            "Photograph Organization Boolean CreativeWorkSeries Duration"),
)

# How many domains offer each label: a column's sampling weight is 1 / spread, so labels that only one domain
# has (BookFormatType, DeliveryMethod, ...) are about as frequent overall as those that every domain has.
_SPREAD: dict[str | None, int] = collections.Counter(c.label for d in DOMAINS for c in set(d.optional))

# Unlabelled context columns: the kind of extra columns real tables carry outside the ground truth.
CONTEXT: tuple[Col, ...] = (
    Col(None, lambda ctx: lambda row: str(ctx.rng.randint(1, 99999)), 0.0),
    Col(None, lambda ctx: lambda row: str(_lognormal_int(ctx.rng, 40, 1.0, 0, 10000)), 0.1),
    Col(None, lambda ctx: lambda row: f"{ctx.rng.uniform(1, 5):.1f}", 0.1),
    Col(None, lambda ctx: lambda row: str(ctx.rng.randint(1990, 2021)), 0.3),
    Col(None, lambda ctx: lambda row: _number(ctx.rng, 30, 2), 0.1),
    Col(None, choice("Offer", "AggregateOffer", "Thing", "ListItem", "WebPage"), 0.9),
    Col(None, _joined(V.MOVIE_GENRES + V.CUISINES, 1, 3, ("; ", ", ")), 0.2),
    Col(None, lambda ctx: lambda row: "; ".join(ctx.fake("name", True) for _ in range(ctx.rng.randint(2, 4))),
        0.1),
    Col(None, lambda ctx: lambda row: row.get("name", "")[: ctx.rng.randint(5, 40)] or "-", 0.0),
    Col(None, lambda ctx: lambda row: ctx.fake("sentence"), 0.1),
)

# ------------------------------------------------------------------------------------------------ assembly


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
    n_rows = _lognormal_int(rng, 33, 0.9, 2, 200)
    n_cols = _lognormal_int(rng, 7, 0.55, 2, 24)
    n_context = sum(rng.random() < 0.15 for _ in range(n_cols - 1))
    n_optional = max(0, min(len(domain.optional), n_cols - n_context - len(domain.required)))
    # Weighted sampling without replacement (Efraimidis-Spirakis keys), weights from _SPREAD.
    keys = sorted(((rng.random() ** _SPREAD[c.label], j) for j, c in enumerate(domain.optional)),
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


def write_synthetic(out_dir: Path, n_tables: int, seed: int) -> Path:
    """Generate and write a SOTAB split directory (tables/ + ground truth); returns the directory."""
    out_dir = Path(out_dir)
    tables, refs = generate(n_tables, seed)
    write_split(out_dir, tables, refs, GT_NAME)
    return out_dir


# ------------------------------------------------------------------------------------------------ statistics

_NUMERIC = re.compile(r"[+-]?(\d+([.,]\d+)?|[.,]\d+)([eE][+-]?\d+)?")


@dataclass
class _Counts:
    columns: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    cells: int = 0
    empty: int = 0
    numeric_columns: int = 0


def table_stats(tables: Iterable[Table]) -> dict[str, float]:
    """Shape statistics of tables: columns per table, rows, empty-cell share and non-numeric column share.

    A column is numeric when most of its non-empty cells are plain numbers (decimal point or comma allowed).
    """
    counts = _Counts()
    for table in tables:
        counts.columns.append(len(table.columns))
        counts.rows.append(table.n_rows)
        for col in table.columns:
            filled = [v.strip() for v in col if v.strip()]
            counts.cells += len(col)
            counts.empty += len(col) - len(filled)
            if filled and sum(bool(_NUMERIC.fullmatch(v)) for v in filled) * 2 > len(filled):
                counts.numeric_columns += 1
    if not counts.columns:
        raise ValueError("table_stats needs at least one table")
    n_columns = sum(counts.columns)
    return {
        "tables": len(counts.columns),
        "mean_columns": statistics.fmean(counts.columns),
        "median_columns": statistics.median(counts.columns),
        "median_rows": statistics.median(counts.rows),
        "mean_rows": statistics.fmean(counts.rows),
        "empty_cell_share": counts.empty / max(1, counts.cells),
        "non_numeric_column_share": 1 - counts.numeric_columns / max(1, n_columns),
    }
