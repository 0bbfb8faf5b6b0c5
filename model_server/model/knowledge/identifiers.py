"""Identifiers: product and publication numbers whose check digits validate.

Package: python-stdnum 2.2 (LGPL-2.1+): EAN/GTIN (8, 12 = UPC-A, 13, 14), ISBN-10/13, ISSN, ISMN, IBAN. A check
digit is the fact MiniLM cannot see: "4006381333931" and "4006381333932" look alike, one is a valid EAN-13.
Generic flags: digits only, and a letters-and-digits code without spaces (SKUs, model numbers, video ids).
"""
from __future__ import annotations

import re

from swarm.model_server.model.knowledge.base import BaseSource

_SEPARATORS = re.compile(r"[\s\-]")
_DIGITISH = re.compile(r"^[\dXx\s\-]{8,20}$")
_CODE = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_#\-./]{3,40}$")


class IdentifiersSource(BaseSource):
    name = "identifiers"
    features = ("gtin8", "gtin12", "gtin13", "gtin14", "isbn10", "isbn13", "issn", "ismn", "iban", "digits_only",
                "alnum_code")
    evidence_features = ("isbn13", "isbn10", "gtin13", "gtin12", "gtin14", "gtin8", "issn", "ismn", "iban",
                         "alnum_code", "digits_only")
    generic_features = ("digits_only", "alnum_code")
    provenance = ("python-stdnum==2.2 (LGPL-2.1+)",)

    def _load(self) -> None:
        from stdnum import ean, iban, isbn, ismn, issn

        self._ean, self._isbn, self._issn, self._ismn, self._iban = ean, isbn, issn, ismn, iban

    def _vector(self, text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        if len(text) > 40:
            return out
        compact = _SEPARATORS.sub("", text)
        if compact.isdigit():
            out["digits_only"] = 1.0
        elif _CODE.match(text):
            out["alnum_code"] = 1.0
        if 15 <= len(compact) <= 34 and compact[:2].isalpha() and self._iban.is_valid(text):
            out["iban"] = 1.0
        if not _DIGITISH.match(text):
            return out
        n = len(compact)
        if compact.isdigit() and n in (8, 12, 13, 14) and self._ean.is_valid(compact):
            out[f"gtin{n}"] = 1.0
        if n == 10 and self._isbn.is_valid(compact):
            out["isbn10"] = 1.0
        if n == 13 and compact[:3] in ("978", "979") and self._isbn.is_valid(compact):
            out["isbn13"] = 1.0
        if n == 8 and self._issn.is_valid(compact):
            out["issn"] = 1.0
        if n == 13 and compact.startswith("9790") and self._ismn.is_valid(compact):
            out["ismn"] = 1.0
        return out
