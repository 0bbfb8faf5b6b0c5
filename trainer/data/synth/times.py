"""Value generators for time: dates, date-times, durations, times of day, opening hours and days of the week,
each in the formats (ISO 8601, local month names, 12/24-hour clocks, ...) that real columns mix."""
from __future__ import annotations

from datetime import datetime, timedelta

from . import vocab as V
from .context import CellFn, Ctx, Factory, Row
from .primitives import lognormal_int, random_day

_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d", "%Y", "%Y",
                 "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d %b %Y", "%B %d, %Y",
                 "%b %d, %Y", "%Y/%m/%d", "de", "fr", "es")
_LOCAL_MONTHS = {"de": ("{d}. {m} {y}", V.MONTHS_DE), "fr": ("{d} {m} {y}", V.MONTHS_FR),
                 "es": ("{d} de {m} de {y}", V.MONTHS_ES)}


def date_col(start: int = 2015, end: int = 2021) -> Factory:
    def make(ctx: Ctx) -> CellFn:
        fmt = ctx.rng.choice(_DATE_FORMATS)
        multi = ctx.chance(0.05)

        def one() -> str:
            day = random_day(ctx.rng, start, end)
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
            day = random_day(ctx.rng, start, end)
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
            minutes = lognormal_int(ctx.rng, median_min, 0.4, 1, 600)
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
            return lambda row: _iso_duration(lognormal_int(ctx.rng, 20, 0.6, 1, 480))
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
