"""Per-table context of the synthetic generator: site locales, cached Faker pools and `Ctx`.

Owns the cell-function types (`Row`, `CellFn`, `Factory`) and the only use of Faker: fixed-seed, per-locale
pools (names, cities, phones, ...) that tables draw from with their own `random.Random`, so everything random
flows from one seed.
"""
from __future__ import annotations

import functools
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from faker import Faker

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
