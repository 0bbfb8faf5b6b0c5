"""Quantities: a number, a number with a unit, a bare unit, and the unit's physical dimension.

Package: pint 0.25.3 (BSD-3; its default unit registry ships inside the wheel). pint 0.26 needs Python >= 3.12, so
0.25.3 is the newest that installs here. Units are resolved one token at a time with `parse_unit_name` (never
pint's expression evaluator), memoised per token; prefixes other than the common ones (kilo, centi, milli, micro,
mega, giga) are refused so that "PG" (a rating) does not read as petagauss.
"""
from __future__ import annotations

import math
import re

from swarm.model_server.model.knowledge.base import BaseSource

_NUMBER = re.compile(r"^[~≈]?[-+]?(\d{1,3}(?:[ ,.]\d{3})+|\d+)(?:[.,](\d+))?$")
_QUANTITY = re.compile(r"^[~≈]?[-+]?(\d+(?:[.,]\d+)?)\s*([A-Za-zµμ°][A-Za-zµμ°²³.]*)(?:\s|$|/)")
_UNIT_ONLY = re.compile(r"^[A-Za-zµμ°][A-Za-zµμ°²³ ]{0,20}$")
COMMON_PREFIXES = frozenset({"", "kilo", "centi", "milli", "micro", "mega", "giga", "deci"})
DIMENSIONS = ("mass", "length", "time", "energy", "volume", "area", "temperature", "speed", "power")


class QuantitiesSource(BaseSource):
    name = "quantities"
    features = ("number", "quantity", "unit_only", *DIMENSIONS, "other_dimension", "magnitude_log")
    evidence_features = ("quantity", "unit_only", *DIMENSIONS, "other_dimension", "number")
    generic_features = ("number", "magnitude_log")
    provenance = ("pint==0.25.3 (BSD-3)",)

    def _load(self) -> None:
        import pint

        self._ureg: pint.UnitRegistry = pint.UnitRegistry()
        u = self._ureg
        dims = {
            "mass": u.kilogram, "length": u.meter, "time": u.second, "energy": u.joule, "volume": u.liter,
            "area": u.meter**2, "temperature": u.kelvin, "speed": u.meter / u.second, "power": u.watt,
        }
        self._dims = {name: q.dimensionality for name, q in dims.items()}
        self._units: dict[str, str | None] = {}

    def dimension_of(self, token: str) -> str | None:
        """The dimension name of a unit token ("kg" → "mass"), "other" for a known unit of another dimension."""
        token = token.rstrip(".")
        if token in self._units:
            return self._units[token]
        found: str | None = None
        for candidate in dict.fromkeys((token, token.lower())):
            if len(candidate) == 1 and candidate != token:
                continue
            try:
                parsed = self._ureg.parse_unit_name(candidate)
            except Exception:  # pint raises several error types on odd names
                continue
            if not parsed or parsed[0][0] not in COMMON_PREFIXES:
                continue
            try:
                dim = self._ureg.Unit(parsed[0][1]).dimensionality
            except Exception:
                continue
            found = next((name for name, d in self._dims.items() if d == dim), "other")
            break
        if len(self._units) < 20000:
            self._units[token] = found
        return found

    def _vector(self, text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        if len(text) > 60:
            return out
        m = _NUMBER.match(text)
        if m:
            out["number"] = 1.0
            try:
                value = float(re.sub(r"[ ,]", "", text.lstrip("~≈")).replace(",", "."))
                out["magnitude_log"] = math.log10(abs(value) + 1) / 10
            except ValueError:
                pass
            return out
        m = _QUANTITY.match(text + " ")
        dim = None
        if m:
            dim = self.dimension_of(m[2])
            if dim is not None:
                out["quantity"] = 1.0
                out["magnitude_log"] = math.log10(abs(float(m[1].replace(",", "."))) + 1) / 10
        elif len(text) >= 2 and _UNIT_ONLY.match(text) and len(text.split()) <= 2:
            dim = self.dimension_of(text.replace(" ", "_"))
            if dim is not None:
                out["unit_only"] = 1.0
        if dim is not None:
            out["other_dimension" if dim == "other" else dim] = 1.0
        return out
