"""Time: dates, date-times, times of day, durations, month and day names, opening hours.

Packages: isodate 0.7.2 (BSD-3; ISO-8601 durations), babel 2.18.0 (BSD-3; CLDR month and weekday names, wide and
abbreviated, in 20 locales), opening-hours-py 2.1.4 (MIT OR Apache-2.0; the OpenStreetMap opening_hours grammar,
which schema.org's openingHours follows: "Mo-Fr 09:00-18:00"). Dates and date-times are checked with the standard
library (`datetime.fromisoformat`, `strptime`) behind regexes. dateparser was not used: it is slow on non-dates and
the regexes cover the formats web tables use.
"""
from __future__ import annotations

import datetime as dt
import re

from swarm.model_server.model.knowledge.base import BaseSource

NAME_LOCALES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da", "fi", "cs", "ro", "hu", "tr", "id", "ru",
                "ja", "zh", "ar")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_SLASH_DATE = re.compile(r"^(\d{1,4})[/.\-](\d{1,2})[/.\-](\d{1,4})$")
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}")
_TIME = re.compile(r"^(\d{1,2})[:.h](\d{2})(?::(\d{2}))?(?:\s*([ap]\.?m\.?))?$|^(\d{1,2})\s*([ap]\.?m\.?)$", re.I)
_TIME_IN = re.compile(r"\b\d{1,2}:\d{2}\b|\b\d{1,2}\s*[ap]\.?m\b", re.I)
_CLOCK = r"\d{1,2}(?::\d{2}|\s*[ap]\.?m\.?)"
_TIME_RANGE = re.compile(_CLOCK + r"\s*(?:-|–|to|bis|till|until)\s*(?:to\s+)?" + _CLOCK, re.I)
_ISO_DURATION = re.compile(r"^-?P(?=\d|T\d)")
_DURATION_WORDS = re.compile(r"^(?:\d+(?:[.,]\d+)?\s*(?:h|hr|hrs|hours?|m|min|mins|minutes?|s|sec|secs|seconds?|"
                             r"d|days?|weeks?|months?|years?|std|stunden?|minuten?)\.?\s*)+(?:per\s+\w+)?$", re.I)
_OH_PRECHECK = re.compile(r"\b(Mo|Tu|We|Th|Fr|Sa|Su|PH)\b|^24/7$|\d{2}:\d{2}-\d{2}:\d{2}")
_YEAR = re.compile(r"^(1[5-9]\d{2}|20\d{2}|2100)$")
_WORD = re.compile(r"[^\W\d_]+\.?", re.UNICODE)
_DIGITS = re.compile(r"\d")


class TimeSource(BaseSource):
    name = "time"
    features = ("iso_date", "date_numeric", "datetime", "time_of_day", "time_range", "iso_duration",
                "duration_words", "month_name", "day_name", "opening_hours", "year", "textual_date")
    evidence_features = ("iso_date", "date_numeric", "datetime", "time_of_day", "time_range", "iso_duration",
                         "duration_words", "opening_hours", "day_name", "month_name", "textual_date", "year")
    generic_features = ("year",)
    provenance = ("isodate==0.7.2 (BSD-3)", "babel==2.18.0 (BSD-3; CLDR)",
                  "opening-hours-py==2.1.4 (MIT OR Apache-2.0)")

    def _load(self) -> None:
        import isodate
        import opening_hours
        from babel import Locale

        months: set[str] = set()
        days: set[str] = set()
        for loc in NAME_LOCALES:
            locale = Locale.parse(loc)
            for ctx in ("format", "stand-alone"):
                months.update(m.casefold() for m in locale.months[ctx]["wide"].values())
                days.update(d.casefold() for d in locale.days[ctx]["wide"].values())
                if loc == "en":  # abbreviations only in English: other locales' ("pt", "min", "to") are words
                    months.update(m.casefold().rstrip(".") for m in locale.months[ctx]["abbreviated"].values())
                    days.update(d.casefold().rstrip(".") for d in locale.days[ctx]["abbreviated"].values())
        self._months, self._days = months, days
        self._parse_duration = isodate.parse_duration
        self._opening_hours = opening_hours.OpeningHours

    def _date_ok(self, y: int, m: int, d: int) -> bool:
        try:
            dt.date(y, m, d)
        except ValueError:
            return False
        return 1000 <= y <= 2200

    def _vector(self, text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        if len(text) > 120:
            return out
        m = _ISO_DATE.match(text)
        if m and self._date_ok(int(m[1]), int(m[2]), int(m[3])):
            out["iso_date"] = 1.0
        m = _SLASH_DATE.match(text)
        if m and not out:
            a, b, c = (int(x) for x in m.groups())
            year_first = len(m[1]) == 4
            y = a if year_first else (c if c > 99 else 2000 + c)
            rest = (b, c) if year_first else (a, b)
            if self._date_ok(y, rest[0], rest[1]) or self._date_ok(y, rest[1], rest[0]):
                out["date_numeric"] = 1.0
        if _ISO_DATETIME.match(text):
            try:
                dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
                out["datetime"] = 1.0
            except ValueError:
                pass
        m = _TIME.match(text)
        if m:
            hour = int(m[1] or m[5])
            minute = int(m[2] or 0)
            if hour <= 24 and minute < 60:
                out["time_of_day"] = 1.0
        if _TIME_RANGE.search(text) and _TIME_IN.search(text):
            out["time_range"] = 1.0
        if _ISO_DURATION.match(text):
            try:
                self._parse_duration(text)
                out["iso_duration"] = 1.0
            except (ValueError, TypeError, ArithmeticError):
                pass
        if _DIGITS.search(text) and _DURATION_WORDS.match(text):
            out["duration_words"] = 1.0
        words = [w.casefold().rstrip(".") for w in _WORD.findall(text)]
        if words and len(words) <= 8:
            if any(w in self._months for w in words) and len(words) <= 3:
                out["month_name"] = 1.0
                if _DIGITS.search(text):
                    out["textual_date"] = 1.0
            if sum(w in self._days for w in words) >= max(1, len(words) // 2):
                out["day_name"] = 1.0
        if _OH_PRECHECK.search(text):
            try:
                self._opening_hours(text)
                out["opening_hours"] = 1.0
            except Exception:  # the parser raises its own ParserError (and others on odd input)
                pass
        if _YEAR.match(text):
            out["year"] = 1.0
        return out
