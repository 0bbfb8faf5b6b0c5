"""People and organisations.

Packages: nameparser 2.6.0 (LGPL-2.1+; splits a human name into title, first, middle, last, suffix),
probablepeople 0.5.6 (MIT; a CRF model shipped in the wheel, via python-crfsuite 0.9.12, MIT, that tags a string as
Person, Corporation or Household), cleanco 2.3 (MIT; company legal-form terms by type and by country: "GmbH",
"Inc.", "S.p.A."). cleanco's own `matches` costs about 1 ms a string, so its term lists are indexed here and only
a name's last one to three tokens are looked up.
"""
from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence

from swarm.model_server.model.knowledge.base import BaseSource, casefold_key

_NAME_WORD = re.compile(r"^[^\W\d_][^\W\d_'’.\-]*(?:[-'’][^\W\d_]+)*\.?$")
_INITIAL = re.compile(r"^[A-Z]\.?$")
_DIGIT = re.compile(r"\d")


@functools.lru_cache(maxsize=65536)
def probable_tag(text: str) -> tuple[frozenset[str], str]:
    """probablepeople's (component labels, kind), or (∅, "") when it cannot tag the string."""
    import probablepeople

    try:
        tagged, kind = probablepeople.tag(text)
    except Exception:  # RepeatedLabelError on ambiguous strings
        return frozenset(), ""
    return frozenset(tagged), kind


def _name_shaped(text: str) -> bool:
    words = text.split()
    return 2 <= len(words) <= 5 and all(_NAME_WORD.match(w) and w[0].isupper() for w in words)


class PeopleSource(BaseSource):
    name = "people"
    features = ("name_shaped", "first_and_last", "title_or_suffix", "initials", "person", "corporation",
                "household")
    evidence_features = ("person", "first_and_last", "name_shaped", "corporation", "household", "initials",
                         "title_or_suffix")
    generic_features = ("name_shaped", "corporation")
    untraced_imports = ("probablepeople",)
    provenance = ("nameparser==2.6.0 (LGPL-2.1+)", "probablepeople==0.5.6 (MIT; python-crfsuite 0.9.12, MIT)")

    def _load(self) -> None:
        from nameparser import HumanName

        self._human_name = HumanName
        probable_tag("John Smith")  # loads the CRF model

    def _vector(self, text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        words = text.split()
        if len(text) > 80 or len(words) > 8 or _DIGIT.search(text):
            return out
        shaped = _name_shaped(text)
        if shaped:
            out["name_shaped"] = 1.0
            if any(_INITIAL.match(w) for w in words[:-1]):
                out["initials"] = 1.0
            name = self._human_name(text)
            if name.first and name.last:
                out["first_and_last"] = 1.0
            if name.title or name.suffix:
                out["title_or_suffix"] = 1.0
        _, kind = probable_tag(text)
        if kind == "Person":
            # probablepeople calls almost any short string a Person or a Corporation: full weight only for
            # name-shaped strings (2-5 capitalised words)
            out["person"] = 1.0 if shaped else 0.3
        elif kind == "Corporation":
            out["corporation"] = 1.0
        elif kind == "Household":
            out["household"] = 1.0
        return out


class OrganisationsSource(BaseSource):
    name = "organisations"
    features = ("legal_suffix", "legal_suffix_countries", "organisation_word", "and_company", "branch",
                "corporation")
    evidence_features = ("legal_suffix", "organisation_word", "and_company", "branch", "corporation")
    generic_features = ("legal_suffix_countries", "corporation")
    untraced_imports = ("probablepeople",)
    provenance = ("cleanco==2.3 (MIT)", "probablepeople==0.5.6 (MIT)")

    def _load(self) -> None:
        from cleanco.termdata import terms_by_country, terms_by_type

        suffixes: dict[str, set[str]] = {}
        for kind, terms in terms_by_type.items():
            for term in terms:
                suffixes.setdefault(self._key(term), set()).add(f"type:{kind}")
        for country, terms in terms_by_country.items():
            for term in terms:
                suffixes.setdefault(self._key(term), set()).add(country)
        suffixes.pop("", None)
        self._suffixes = suffixes
        probable_tag("Acme Inc")

    @staticmethod
    def _key(term: str) -> str:
        return casefold_key(term.replace(".", " ").replace(",", " "))

    def legal_suffix(self, text: str) -> tuple[str, set[str]] | None:
        words = self._key(text).split()
        for n in (3, 2, 1):
            if len(words) > n:
                tail = " ".join(words[-n:])
                for key in (tail, tail.replace(" ", "")):
                    hit = self._suffixes.get(key)
                    if hit:
                        return key, hit
        return None

    def _vector(self, text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        if len(text) > 100 or not 2 <= len(text.split()) <= 12 or "://" in text or "@" in text:
            return out
        if text.split()[0].replace(".", "").replace(",", "").isdigit():  # "320 kcal", "40 hours per week"
            return out
        found = self.legal_suffix(text)
        if found is not None:
            out["legal_suffix"] = 1.0
            out["legal_suffix_countries"] = min(1.0, sum(not c.startswith("type:") for c in found[1]) / 10)
        tags, kind = probable_tag(text)
        if "CorporationNameOrganization" in tags:
            out["organisation_word"] = 1.0
        if "CorporationNameAndCompany" in tags:
            out["and_company"] = 1.0
        if "CorporationNameBranchType" in tags:
            out["branch"] = 1.0
        if kind == "Corporation" and len(text.split()) >= 2:
            out["corporation"] = 1.0
        return out

    def _detail(self, texts: Sequence[str]) -> str:
        found = Counter(hit[0] for t in texts for hit in [self.legal_suffix(t)] if hit)
        return f"suffix '{found.most_common(1)[0][0]}'" if found else ""
