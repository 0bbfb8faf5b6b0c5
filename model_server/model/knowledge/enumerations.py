"""Schema.org enumerations: is a cell (or each item of a list cell) a member of a schema.org enumeration?

Package: msgspec-schemaorg 0.2.1 (MIT): Python enums generated from the schema.org vocabulary, one per schema.org
enumeration type (79), members with their schema.org ids and comments. pydantic-schemaorg 1.0.6 was the first
candidate but pins pydantic < 2, which this project cannot take. The member lists are read from the package; the
only names written here are which enumeration types get a dimension of their own (ENUMERATIONS), the rest count
towards `any_enumeration`. Aliases are derived from the data: the word most members of an enumeration share at the
start or end is dropped ("NewCondition" → "New", "VeganDiet" → "Vegan", "EventScheduled" → "Scheduled").
A value's URL prefix (https://schema.org/InStock, purl.org/goodrelations/v1#DeliveryModeMail) is stripped first;
GoodRelations' own terms are not in the package (schema.org lists only LockerDelivery, OnSitePickup and
ParcelService under DeliveryMethod), so `goodrelations_url` flags them instead.
"""
from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Sequence

from swarm.model_server.model.knowledge.base import BaseSource

ENUMERATIONS = ("ItemAvailability", "OfferItemCondition", "BookFormatType", "EventStatusType",
                "EventAttendanceModeEnumeration", "DayOfWeek", "GenderType", "RestrictedDiet", "DeliveryMethod",
                "PaymentMethodType", "MusicAlbumProductionType", "MusicReleaseFormatType")
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_SPLIT = re.compile(r"[;,|]")
_NON_ALNUM = re.compile(r"[^0-9a-z]")


def _key(text: str) -> str:
    return _NON_ALNUM.sub("", text.casefold())


def _aliases(members: list[str]) -> dict[str, str]:
    """member key → member, plus each member without the first/last CamelCase word most members share."""
    out = {_key(m): m for m in members}
    if len(members) < 2:
        return out
    words = [_CAMEL.findall(m) for m in members]
    for pos in (0, -1):
        common, n = Counter(w[pos] for w in words if len(w) > 1).most_common(1)[0] if any(
            len(w) > 1 for w in words) else ("", 0)
        if n * 2 < len(members) or not common:
            continue
        for member, w in zip(members, words, strict=True):
            if len(w) > 1 and w[pos] == common:
                rest = w[1:] if pos == 0 else w[:-1]
                out.setdefault(_key("".join(rest)), member)
    return out


class EnumerationsSource(BaseSource):
    name = "enumerations"
    features = (*ENUMERATIONS, "any_enumeration", "schema_org_url", "goodrelations_url")
    provenance = ("msgspec-schemaorg==0.2.1 (MIT; schema.org vocabulary, CC-BY-SA 3.0)",)

    def _load(self) -> None:
        import importlib

        # `from msgspec_schemaorg import enums` recurses in the package's lazy __getattr__; import the module itself
        enums = importlib.import_module("msgspec_schemaorg.enums")

        members_of: dict[str, list[str]] = {}
        for type_name in enums.__all__:
            cls = getattr(enums, type_name, None)
            if isinstance(cls, type) and issubclass(cls, enum.Enum):
                members_of[type_name] = [m.value for m in cls if m.name != "metadata"]
        missing = set(ENUMERATIONS) - set(members_of)
        if missing:
            raise RuntimeError(f"msgspec-schemaorg lacks enumerations {sorted(missing)}")
        self._members_of = members_of
        self._by_key: dict[str, set[str]] = {}
        for type_name, members in members_of.items():
            for key in _aliases(members):
                if key:
                    self._by_key.setdefault(key, set()).add(type_name)

    def enumerations_of(self, item: str) -> set[str]:
        item = item.strip().rstrip("/")
        tail = re.split(r"[/#]", item)[-1] if ("/" in item or "#" in item) else item
        return self._by_key.get(_key(tail), set())

    def _vector(self, text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        lowered = text.casefold()
        if "schema.org/" in lowered:
            out["schema_org_url"] = 1.0
        if "purl.org/goodrelations" in lowered:
            out["goodrelations_url"] = 1.0
        if len(text) > 400:
            return out
        items = [p for p in (s.strip() for s in _SPLIT.split(text)) if p][:20]
        if not items or any(len(i) > 60 for i in items):
            return out
        counts: Counter[str] = Counter()
        anywhere = 0
        for item in items:
            found = self.enumerations_of(item)
            anywhere += bool(found)
            counts.update(found)
        if anywhere:
            out["any_enumeration"] = anywhere / len(items)
        for type_name in ENUMERATIONS:
            if counts[type_name]:
                out[type_name] = counts[type_name] / len(items)
        return out

    def _detail(self, texts: Sequence[str]) -> str:
        members = Counter(
            item for t in texts for item in (p.strip() for p in _SPLIT.split(t)) if self.enumerations_of(item))
        if not members:
            return ""
        item = members.most_common(1)[0][0]
        return f"e.g. {re.split(r'[/#]', item)[-1][:24]}"
