"""Surface features of a column's cells that sentence vectors blur: character classes, number statistics, units,
currencies and date/time/duration shapes — aimed at the confusions of the cell-vector model (Time vs openingHours;
weight / Distance / price / QuantitativeValue; unitCode vs unitText; Review vs description).

`column_features(cells)` gives a fixed-length float vector (`FEATURES` names its entries); each entry is a share of
the non-empty cells in [0, 1] or a squashed statistic, so no scaling is learnt from data.

`is_empty_cell` is the one definition of an empty cell (the annotator labels a column of empty cells `unknown`): no
visible character, i.e. only whitespace, control characters and format characters such as zero-width spaces and
joiners, the word joiner or a byte-order mark.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence

import torch

_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
_PATTERNS: dict[str, re.Pattern[str]] = {
    "iso_date": re.compile(r"\b\d{4}-\d{2}-\d{2}\b"),
    "slash_date": re.compile(r"\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"),
    "month_name": re.compile(r"\b(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\b", re.I),
    "clock": re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\s*(am|pm)?\b", re.I),
    "iso_time": re.compile(r"T\d{2}:\d{2}"),
    "iso_duration": re.compile(r"^P(T?\d+[YMWDHS])+", re.I),
    "duration_word": re.compile(r"\b\d+\s*(min|mins|minutes|hours?|hrs?|h|sec|seconds|days?)\b", re.I),
    "weekday": re.compile(r"\b(mo|tu|we|th|fr|sa|su|mon|tue|wed|thu|fri|sat|sun)[a-z]*\b", re.I),
    "day_range": re.compile(r"\b(mo|tu|we|th|fr|sa|su)[a-z]*\s*[-–]\s*(mo|tu|we|th|fr|sa|su)", re.I),
    "currency_symbol": re.compile(r"[$€£¥₹]"),
    "currency_code": re.compile(r"\b(usd|eur|gbp|jpy|chf|cad|aud|inr|cny|sek|nok|dkk|pln|brl|rub)\b", re.I),
    "weight_unit": re.compile(r"\d\s*(kg|g|lbs?|oz|mg|t)\b", re.I),
    "distance_unit": re.compile(r"\d\s*(km|m|mi|miles?|ft|feet|cm|mm|in|inch|meters?|yards?)\b", re.I),
    "unit_code": re.compile(r"^[A-Z0-9]{2,3}$"),
    "percent": re.compile(r"%"),
    "email": re.compile(r"\S+@\S+\.\w+"),
    "url": re.compile(r"(https?://|www\.)", re.I),
    "phone": re.compile(r"^\+?[\d\s().-]{7,}$"),
    "postal": re.compile(r"^([A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}|\d{4,5}(-\d{4})?)$", re.I),
    "coordinate": re.compile(r"^[-+]?\d{1,3}\.\d{3,}$"),
    "boolean": re.compile(r"^(true|false|yes|no|y|n)$", re.I),
    "schema_enum": re.compile(r"(schema\.org/|^https?://schema)", re.I),
}


def _invisible(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf")


def is_empty_cell(value: str) -> bool:
    """True for a cell without a visible character ("", whitespace, "\\u200b", "\\ufeff", "\\u2060", ...)."""
    return all(_invisible(ch) for ch in value)  # stops at the first visible character


def _share(cells: Sequence[str], test: Callable[[str], object]) -> float:
    return sum(1 for c in cells if test(c)) / len(cells)


def _squash(x: float) -> float:
    return math.tanh(x / 4.0)


def _numbers(cells: Sequence[str]) -> list[float]:
    out = []
    for c in cells:
        m = _NUMBER.search(c)
        if m:
            try:
                out.append(float(m.group().replace(",", "")))
            except ValueError:
                continue
    return out


def _stats(cells: Sequence[str]) -> dict[str, float]:
    lengths = [len(c) for c in cells]
    words = [len(c.split()) for c in cells]
    numbers = _numbers(cells)
    logs = [math.log10(abs(v) + 1) for v in numbers]
    mean_log = sum(logs) / len(logs) if logs else 0.0
    spread = (sum((v - mean_log) ** 2 for v in logs) / len(logs)) ** 0.5 if logs else 0.0
    letters = sum(sum(ch.isalpha() for ch in c) for c in cells)
    total = max(1, sum(lengths))
    return {
        "log_chars": _squash(math.log1p(sum(lengths) / len(cells))),
        "log_words": _squash(math.log1p(sum(words) / len(cells))),
        "letter_share": letters / total,
        "digit_share": sum(sum(ch.isdigit() for ch in c) for c in cells) / total,
        "upper_share": sum(sum(ch.isupper() for ch in c) for c in cells) / max(1, letters),
        "punct_share": sum(sum(not ch.isalnum() and not ch.isspace() for ch in c) for c in cells) / total,
        "all_digits": _share(cells, lambda c: c.replace(" ", "").isdigit()),
        "numeric": _share(cells, lambda c: bool(re.fullmatch(r"[-+]?[\d,]*\.?\d+", c.replace(" ", "")))),
        "has_number": _share(cells, lambda c: bool(_NUMBER.search(c))),
        "decimal": _share(cells, lambda c: bool(re.search(r"\d\.\d", c))),
        "number_mean_log": _squash(mean_log),
        "number_spread_log": _squash(spread),
        "negative": _share(cells, lambda c: c.lstrip().startswith("-")),
        "unique": len(set(cells)) / len(cells),
        "single_word": _share(cells, lambda c: len(c.split()) == 1),
        "long_text": _share(cells, lambda c: len(c) > 100),
    }


FEATURES: tuple[str, ...] = (*_PATTERNS, *_stats(["x"]))
EMPTY = torch.zeros(len(FEATURES))


def column_features(cells: Sequence[str]) -> torch.Tensor:
    """(len(FEATURES),) float32 for the column's non-empty cells (zeros when there are none)."""
    cells = [c.strip() for c in cells if not is_empty_cell(c)]
    if not cells:
        return EMPTY.clone()
    values = {name: _share(cells, pattern.search) for name, pattern in _PATTERNS.items()}
    values |= _stats(cells)
    return torch.tensor([values[name] for name in FEATURES], dtype=torch.float32)
