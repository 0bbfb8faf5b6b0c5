"""Money: prices, price ranges, currency codes, names and symbols.

Packages: price-parser 0.5.1 (BSD-3; amount and currency extraction), pycountry 26.2.16 (LGPL-2.1; ISO 4217
currency codes and names), babel 2.18.0 (BSD-3; CLDR currency symbols and names in 20 locales).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from swarm.model_server.model.knowledge.base import BaseSource, casefold_key

SYMBOL_LOCALES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da", "cs", "ro", "hu", "tr", "id", "ru",
                  "ja", "zh", "ar", "hi")
_HAS_DIGIT = re.compile(r"\d")
_RANGE = re.compile(r"\d\s*(?:-|–|to)\s*\D{0,4}\d")
_PER_PERIOD = re.compile(r"\b(?:per\s+)?(hour|hr|day|week|month|year|annum|hourly|daily|weekly|monthly|yearly)\b",
                         re.I)
_PRICE_SHAPE = re.compile(r"^\D{0,6}\d[\d\s.,']*(?:\D{1,4}\d[\d\s.,']*)?\D{0,12}$")


class MoneySource(BaseSource):
    name = "money"
    features = ("amount", "currency_in_text", "two_decimals", "price_range", "per_period", "currency_code",
                "currency_name", "currency_symbol", "amount_log")
    evidence_features = ("currency_in_text", "price_range", "per_period", "currency_code", "currency_name",
                         "currency_symbol", "two_decimals", "amount")
    generic_features = ("amount", "two_decimals", "amount_log")
    provenance = ("price-parser==0.5.1 (BSD-3)", "pycountry==26.2.16 (LGPL-2.1)", "babel==2.18.0 (BSD-3; CLDR)")

    def _load(self) -> None:
        import pycountry
        from babel import Locale
        from price_parser import Price

        self._price = Price.fromstring
        self._codes = {c.alpha_3 for c in pycountry.currencies}
        names = {casefold_key(c.name) for c in pycountry.currencies}
        symbols: set[str] = set()
        for loc in SYMBOL_LOCALES:
            locale = Locale.parse(loc)
            symbols.update(s for code, s in locale.currency_symbols.items() if code in self._codes and s != code)
            names.update(casefold_key(n) for n in locale.currencies.values())
        self._names, self._symbols = names, symbols

    def currency_of(self, text: str) -> str | None:
        price = self._price(text)
        return price.currency if price.amount is not None else None

    def _vector(self, text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        if len(text) > 40:
            return out
        if text.upper() in self._codes and len(text) == 3:
            out["currency_code"] = 1.0
        if casefold_key(text) in self._names:
            out["currency_name"] = 1.0
        if text in self._symbols:
            out["currency_symbol"] = 1.0
        if not (_HAS_DIGIT.search(text) and _PRICE_SHAPE.match(text)):
            return out
        price = self._price(text)
        if price.amount is None:
            return out
        out["amount"] = 1.0
        out["amount_log"] = math.log10(abs(float(price.amount)) + 1) / 10
        if price.currency:
            out["currency_in_text"] = 1.0
        if re.search(r"\d[.,]\d{2}(?!\d)", text):
            out["two_decimals"] = 1.0
        if _RANGE.search(text):
            out["price_range"] = 1.0
        if _PER_PERIOD.search(text):
            out["per_period"] = 1.0
        return out

    def _detail(self, texts: Sequence[str]) -> str:
        found: Counter[str] = Counter()
        for t in texts:
            if t.upper() in self._codes and len(t) == 3:
                found[t.upper()] += 1
            elif _HAS_DIGIT.search(t) and len(t) <= 40:
                currency = self.currency_of(t)
                if currency:
                    found[currency] += 1
        return f"currency {found.most_common(1)[0][0]}" if found else ""
