"""Knowledge sources on real values: each positive must fire its feature, each negative must not."""
from __future__ import annotations

import pytest

from swarm.model_server.model.knowledge import MAX_EVIDENCE_CHARS, SOURCES, KnowledgeSource
from swarm.model_server.model.knowledge.places import PlacesSource


def fired(source: str, cell: str) -> dict[str, float]:
    s = SOURCES[source]
    return {f: v for f, v in zip(s.features, s.vector(cell), strict=True) if v > 0}


POSITIVES = [
    ("places", "Berlin", "city"),
    ("places", "Deutschland", "country_name"),
    ("places", "Germany", "country_name"),
    ("places", "Stati Uniti", "country_name"),
    ("places", "DE", "country_code"),
    ("places", "California", "subdivision_name"),
    ("places", "10115", "postcode_pattern"),
    ("places", "SW1A 1AA", "postcode_alnum"),
    ("places", "CA", "subdivision_code"),
    ("time", "2019-06-01", "iso_date"),
    ("time", "2016-04-06T17:39:09+05:30", "datetime"),
    ("time", "15:00", "time_of_day"),
    ("time", "From 15:00 - To 23:00", "time_range"),
    ("time", "PT1H30M", "iso_duration"),
    ("time", "77 min", "duration_words"),
    ("time", "Januar", "month_name"),
    ("time", "Thursday; Saturday; Tuesday", "day_name"),
    ("time", "Mo-Fr 09:00-18:00", "opening_hours"),
    ("quantities", "5 kg", "mass"),
    ("quantities", "9 grams carbohydrates", "mass"),
    ("quantities", "12 cm", "length"),
    ("quantities", "250 kcal", "energy"),
    ("quantities", "1.5 l", "volume"),
    ("quantities", "Kg", "unit_only"),
    ("money", "12.99 €", "currency_in_text"),
    ("money", "$19-$577", "price_range"),
    ("money", "RON", "currency_code"),
    ("money", "Euro", "currency_name"),
    ("money", "€", "currency_symbol"),
    ("contact", "+49 30 1234567", "phone_valid"),
    ("contact", "310-843-9777", "phone_valid"),
    ("contact", "kathi@aacfnc.org", "email"),
    ("contact", "&#107;at&#104;i&#64;a&#97;cfnc.org", "email"),
    ("contact", "https://asyouchange.co.uk/wp", "domain_known_suffix"),
    ("identifiers", "978-3-16-148410-0", "isbn13"),
    ("identifiers", "963-9467-03-0", "isbn10"),
    ("identifiers", "4006381333931", "gtin13"),
    ("identifiers", "0317-8471", "issn"),
    ("identifiers", "DE89 3704 0044 0532 0130 00", "iban"),
    ("people", "Maureen Smith", "person"),
    ("people", "Dr. John A. Smith Jr.", "title_or_suffix"),
    ("organisations", "Acme GmbH", "legal_suffix"),
    ("organisations", "Apple Inc.", "legal_suffix"),
    ("enumerations", "InStock", "ItemAvailability"),
    ("enumerations", "https://schema.org/InStock", "ItemAvailability"),
    ("enumerations", "http://schema.org/NewCondition", "OfferItemCondition"),
    ("enumerations", "Paperback", "BookFormatType"),
    ("enumerations", "EventScheduled", "EventStatusType"),
    ("enumerations", "Vegan", "RestrictedDiet"),
    ("enumerations", "Female", "GenderType"),
    ("enumerations", "Thursday; Saturday", "DayOfWeek"),
]

NEGATIVES = [
    ("places", "Paperback", "city"),
    ("places", "hello world", "country_name"),
    ("places", "Maureen Smith", "city"),
    ("places", "ZZ", "country_code"),
    ("places", "R", "subdivision_code"),
    ("places", "77250", "postcode_alnum"),
    ("contact", "2019-06-01", "phone_possible"),
    ("organisations", "http://schema.org/NewCondition", "branch"),
    ("time", "2019-13-45", "iso_date"),
    ("time", "2019-02-30", "iso_date"),
    ("time", "25:99", "time_of_day"),
    ("time", "P", "iso_duration"),
    ("time", "Berlin", "month_name"),
    ("time", "hello world", "opening_hours"),
    ("quantities", "5 stars", "quantity"),
    ("quantities", "PG", "unit_only"),
    ("quantities", "hello", "unit_only"),
    ("quantities", "5 kg", "length"),
    ("money", "hello", "amount"),
    ("money", "XYZ", "currency_code"),
    ("money", "19.99", "currency_in_text"),
    ("contact", "12345", "phone_valid"),
    ("contact", "+49 0", "phone_valid"),
    ("contact", "kathi at aacfnc", "email"),
    ("contact", "not a url", "url"),
    ("identifiers", "978-3-16-148410-1", "isbn13"),
    ("identifiers", "4006381333932", "gtin13"),
    ("identifiers", "963-9467-03-1", "isbn10"),
    ("people", "12.99", "person"),
    ("people", "Acme GmbH", "person"),
    ("organisations", "Maureen Smith", "legal_suffix"),
    ("organisations", "GmbH", "legal_suffix"),
    ("enumerations", "hello", "any_enumeration"),
    ("enumerations", "Berlin", "any_enumeration"),
    ("enumerations", "InStock", "OfferItemCondition"),
]


@pytest.mark.parametrize(("source", "cell", "feature"), POSITIVES)
def test_fires_on_real_values(source: str, cell: str, feature: str) -> None:
    assert feature in fired(source, cell), fired(source, cell)


@pytest.mark.parametrize(("source", "cell", "feature"), NEGATIVES)
def test_stays_silent_on_negatives(source: str, cell: str, feature: str) -> None:
    assert feature not in fired(source, cell), fired(source, cell)


def test_berlin_is_a_german_city_and_germany_a_country() -> None:
    places = SOURCES["places"]
    assert isinstance(places, PlacesSource)
    places.load()
    city = places.city_of("Berlin")
    assert city is not None and city[0] == "DE" and city[1] > 1_000_000
    assert {places.country_of(c) for c in ("Deutschland", "DE", "Germany", "Allemagne")} == {"DE"}


def test_person_needs_a_name_shape() -> None:
    assert fired("people", "Maureen Smith")["person"] == 1.0
    assert fired("people", "hello world").get("person", 0.0) < 0.5  # probablepeople alone is not enough


def test_phone_region_and_currency() -> None:
    contact = SOURCES["contact"]
    contact.load()
    assert contact.phone_region("+49 30 1234567")[2] == "DE"  # type: ignore[attr-defined]
    money = SOURCES["money"]
    money.load()
    assert money.currency_of("12.99 €") == "€"  # type: ignore[attr-defined]
    assert fired("money", "12.99 €")["amount_log"] == pytest.approx(0.1146, abs=1e-3)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_vector_length_and_range(name: str) -> None:
    source = SOURCES[name]
    assert isinstance(source, KnowledgeSource)
    assert len(set(source.features)) == len(source.features)
    cells = ["", "   ", "Berlin", "5 kg", "12.99 €", "x" * 5000, "InStock; OutOfStock", "&amp;", "2019-06-01",
             "+49 30 1234567", "Acme GmbH", "日本", "🙂", "978-3-16-148410-0"]
    for cell in cells:
        vec = source.vector(cell)
        assert len(vec) == len(source.features), cell
        assert all(0.0 <= v <= 1.0 for v in vec), (cell, vec)
    assert source.vector("") == [0.0] * len(source.features)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_evidence_is_bounded(name: str) -> None:
    source = SOURCES[name]
    long_cells = ["Berlin", "Deutschland", "5 kg", "12.99 €", "Acme GmbH", "InStock", "PT1H30M", "y" * 3000] * 20
    for cells in ([], ["hello"], long_cells):
        text = source.describe(cells)
        assert text.startswith(f"{name}:")
        assert len(text) <= MAX_EVIDENCE_CHARS


def test_evidence_names_what_it_found() -> None:
    text = SOURCES["places"].describe(["Berlin", "Hamburg", "München", "Köln", "Frankfurt am Main"])
    assert text.startswith("places: 5/5 city") and text.endswith("; 5 in DE"), text  # Berlin, Hamburg: also states
    assert SOURCES["identifiers"].describe(["978-3-16-148410-0", "9780306406157", "hello"]).startswith(
        "identifiers: 2/3 isbn13")
