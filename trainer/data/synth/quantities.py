"""Value generators for money and numbers: prices, salaries, price ranges, currencies, plain numbers,
quantities, measures with units (distance, weight, energy, mass), identifiers (ISBNs, SKUs), product model
codes and booleans."""
from __future__ import annotations

import math
import string
from collections.abc import Sequence

from . import vocab as V
from .context import CellFn, Ctx, Factory, Row
from .primitives import digits, lognormal_int, lognormal_number, styled


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
            return str(lognormal_int(ctx.rng, 250, 0.5, 20, 2000))
        if style == 3:
            return f"{ctx.rng.randint(1990, 2020)}.0"
        return f"{ctx.rng.uniform(1, 10):.1f}".replace(".", ",")

    return cell


def quantitative_value(ctx: Ctx) -> CellFn:
    unit = ctx.rng.choice(("",) * 7 + (" servings", " Cupcakes", " pieces", " days", " items", " persons"))

    def cell(row: Row) -> str:
        n = lognormal_int(ctx.rng, 4, 0.8, 1, 500)
        if unit and ctx.chance(0.2):
            return f"{n}-{n + ctx.rng.randint(1, 4)}{unit}"
        return f"{n}{unit}"

    return cell


def _measure(units: Sequence[tuple[str, float, int]]) -> Factory:
    """Numbers with a unit; `units` holds (suffix, median, decimals); a column picks one."""

    def make(ctx: Ctx) -> CellFn:
        suffix, median, decimals = ctx.rng.choice(units)
        comma = ctx.chance(0.15)
        return lambda row: lognormal_number(ctx.rng, median, decimals, comma) + suffix

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
    return lambda row: f"{lognormal_int(ctx.rng, median, 0.8, 0, 5000)}{unit}{nutrient}"


def identifier(ctx: Ctx) -> CellFn:
    style = ctx.rng.choice((0, 1, 2, 2, 3, 3, 4, 5))

    def isbn13() -> str:
        return "978" + digits(ctx.rng, 10)

    def cell(row: Row) -> str:
        if style == 0:
            code = isbn13()
            return f"{code[:3]}-{code[3]}-{code[4:8]}-{code[8:12]}-{code[12]}"
        if style == 1:
            return "ISBN: " + isbn13()
        if style == 2:  # spreadsheet-mangled ISBNs, common in scraped book tables
            return f"{float(isbn13()):.5e}"
        if style == 3:
            return digits(ctx.rng, 13)
        if style == 4:
            return "".join(ctx.rng.choices(string.ascii_uppercase, k=3)) + digits(ctx.rng, 4)
        check = ctx.rng.choice("0123456789X")
        return f"{digits(ctx.rng, 3)}-{digits(ctx.rng, 4)}-{digits(ctx.rng, 2)}-{check}"

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
