"""Table schemas: which columns each domain's tables have, and the unlabelled context columns.

A domain (Restaurant, Book, JobPosting, ...) is its `<Domain>/name` entity column plus the optional columns a
table of it may carry; a column spec (`Col`) is a label plus the factory of its cells. `COLUMNS` holds the
default spec of every SOTAB v2 CTA label; domains refer to labels by name and may override a spec. `SPREAD`
counts the domains offering each label, which weights column sampling in `assembly.py`.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import cast

from . import vocab as V
from .context import Factory
from .entities import (
    Builder,
    book_title,
    business_name,
    creative_work,
    creative_work_name,
    entity_name,
    episode_name,
    event_name,
    from_pool,
    hotel_name,
    movie_name,
    museum_name,
    product_name,
    recipe_name,
    restaurant_name,
    sports_event_name,
    venue_name,
)
from .enumerations import amenities, book_format, delivery, language, payment, rating
from .people import artist, gender, organization, person, team
from .places import (
    coordinate,
    country,
    email,
    locality,
    phone,
    photograph,
    postal_address,
    postal_code,
    region,
    street,
    url,
)
from .primitives import choice, joined, lognormal_int, lognormal_number, schema_enum
from .quantities import (
    boolean,
    currency,
    distance,
    energy,
    identifier,
    mass,
    monetary_amount,
    number,
    price,
    price_range,
    product_model,
    quantitative_value,
    weight,
)
from .text import description, item_list, review
from .times import date_col, datetime_col, day_of_week, duration, opening_hours, time_col


@dataclass(frozen=True)
class Col:
    """A column spec: its label (None for unlabelled context) and the factory of its cell function."""

    label: str | None
    make: Factory
    repeat: float = 0.2  # chance that the column draws from a handful of values (one shop, one brand, ...)
    gappy: float = 0.37  # chance that the column has missing cells at all


@dataclass(frozen=True)
class Domain:
    """A kind of table: its required columns (the entity name), the optional ones and its share of tables."""

    name: str
    required: tuple[Col, ...]
    optional: tuple[Col, ...]
    weight: float = 1.0


def _c(label: str, make: Factory, repeat: float = 0.2) -> Col:
    return Col(label, make, repeat)


# The default column spec of each label; domains refer to labels by name and may override a spec.
COLUMNS: dict[str, Col] = {cast(str, c.label): c for c in (  # every _c column is labelled
    _c("streetAddress", street), _c("addressLocality", locality), _c("postalCode", postal_code),
    _c("addressRegion", region), _c("Country", country, 0.5), _c("PostalAddress", postal_address),
    _c("CoordinateAT", coordinate, 0.0), _c("telephone", phone("Tel: ")), _c("faxNumber", phone("Fax: ")),
    _c("email", email), _c("URL", url, 0.0), _c("Photograph", photograph, 0.05),
    _c("price", price, 0.1), _c("currency", currency, 0.7), _c("priceRange", price_range, 0.5),
    _c("MonetaryAmount", monetary_amount), _c("ItemAvailability", schema_enum(V.AVAILABILITY)),
    _c("OfferItemCondition", schema_enum(V.CONDITION)), _c("DeliveryMethod", delivery),
    _c("paymentAccepted", payment), _c("openingHours", opening_hours, 0.5), _c("DayOfWeek", day_of_week, 0.5),
    _c("Time", time_col()), _c("Date", date_col()), _c("DateTime", datetime_col()),
    _c("Duration", duration(30)), _c("workHours", choice(*V.WORK_HOURS), 0.5), _c("Boolean", boolean, 0.5),
    _c("Number", number), _c("QuantitativeValue", quantitative_value), _c("Distance", distance),
    _c("weight", weight), _c("Mass", mass), _c("Energy", energy), _c("unitCode", choice(*V.UNIT_CODES), 0.6),
    _c("unitText", choice(*V.UNIT_TEXT), 0.6), _c("IdentifierAT", identifier, 0.0),
    _c("ProductModel", product_model, 0.05),
    _c("Person/name", person), _c("Organization", organization, 0.4), _c("MusicArtistAT", artist),
    _c("GenderType", gender), _c("SportsTeam", team), _c("Brand", choice(*V.BRANDS), 0.5),
    _c("Language", language, 0.5), _c("Rating", rating), _c("Review", review),
    _c("ItemList", item_list), _c("LocationFeatureSpecification", amenities),
    _c("RestrictedDiet", schema_enum(V.DIETS, multi=0.4)), _c("BookFormatType", book_format, 0.4),
    _c("EventAttendanceModeEnumeration", schema_enum(V.ATTENDANCE)),
    _c("EventStatusType", schema_enum(V.EVENT_STATUS)), _c("CreativeWork", creative_work, 0.0),
    _c("CreativeWorkSeries", choice(*V.SERIES), 0.5), _c("CategoryCode", choice(*V.JOB_CATEGORIES)),
    _c("OccupationalExperienceRequirements", choice(*V.EXPERIENCE)),
    _c("EducationalOccupationalCredential", choice(*V.CREDENTIALS)),
    _c("category", choice(*V.PRODUCT_CATEGORIES)), _c("MusicAlbum/name", choice(*V.ALBUM_WORDS), 0.5),
    _c("MusicRecording/name", choice(*V.SONG_WORDS)), _c("Place/name", entity_name(venue_name)),
    _c("CreativeWork/name", entity_name(creative_work_name)),
    _c("Event/description", description("Event")), _c("Movie/description", description("Movie")),
    _c("Hotel/description", description("Hotel")), _c("Book/description", description("Book")),
    _c("Recipe/description", description("Recipe")), _c("Product/description", description("Product")),
    _c("JobPosting/description", description("JobPosting", 2, 6)),
)}


def _domain(name: str, build: Builder, labels: str, weight: float = 1.0, **overrides: Col) -> Domain:
    """A domain: its `<name>/name` entity column plus optional columns by label (a label may repeat).

    `overrides` replaces a label's default spec (key: the label with '/' written as '_').
    """
    names = labels.split()
    if not set(overrides) <= {n.replace("/", "_") for n in names}:
        raise ValueError(f"{name}: overrides {sorted(overrides)} name labels the domain does not use")
    optional = tuple(overrides.get(label.replace("/", "_"), COLUMNS[label]) for label in names)
    return Domain(name, (Col(f"{name}/name", entity_name(build), repeat=0.04, gappy=0.05),), optional, weight)


ADDRESS = "streetAddress addressLocality postalCode addressRegion Country "
CONTACT = "telephone faxNumber email URL Photograph "
OFFER = "price currency ItemAvailability OfferItemCondition "
DOMAINS: tuple[Domain, ...] = (
    _domain("Restaurant", restaurant_name, ADDRESS + CONTACT + "priceRange openingHours paymentAccepted "
            "DayOfWeek Time CoordinateAT PostalAddress Rating"),
    _domain("Hotel", hotel_name, ADDRESS + CONTACT + "Hotel/description CoordinateAT "
            "LocationFeatureSpecification priceRange Time paymentAccepted Brand Rating currency Boolean",
            Brand=_c("Brand", choice(*V.HOTEL_CHAINS), 0.6)),
    _domain("LocalBusiness", business_name, ADDRESS + CONTACT + "openingHours DayOfWeek priceRange PostalAddress "
            "Brand paymentAccepted CoordinateAT Time"),
    _domain("Museum", museum_name, ADDRESS + CONTACT + "openingHours DayOfWeek Time priceRange Boolean "
            "CoordinateAT"),
    _domain("Place", venue_name, "PostalAddress addressLocality Country CoordinateAT telephone URL Photograph "
            "LocationFeatureSpecification Distance", weight=0.6),
    _domain("Event", event_name, "Event/description Date DateTime EventAttendanceModeEnumeration EventStatusType "
            "Place/name PostalAddress addressLocality Organization price currency URL Photograph Time email "
            "telephone Boolean category ItemAvailability Country", weight=1.3,
            Date=_c("Date", date_col(2019, 2021)), DateTime=_c("DateTime", datetime_col(2019, 2021)),
            category=_c("category", choice(*V.EVENT_CATEGORIES), 0.6)),
    _domain("SportsEvent", sports_event_name, "SportsTeam SportsTeam DateTime Date Place/name addressLocality "
            "EventStatusType URL Time price Event/description Organization"),
    _domain("Book", lambda ctx, row: book_title(ctx), OFFER + "Book/description Person/name Organization "
            "IdentifierAT BookFormatType Date Language Number Review Photograph URL DateTime CreativeWork "
            "Boolean Rating", weight=1.3, Date=_c("Date", date_col(1990, 2020))),
    _domain("Movie", movie_name, "Movie/description Duration Date Rating Country Language Person/name "
            "MusicArtistAT URL Photograph Number DateTime category", Duration=_c("Duration", duration(100)),
            Date=_c("Date", date_col(1960, 2021)), category=_c("category", choice(*V.MOVIE_GENRES))),
    _domain("TVEpisode", episode_name, "CreativeWorkSeries Date Duration Number URL Photograph CreativeWork/name "
            "Movie/description Rating Person/name", weight=0.8, Duration=_c("Duration", duration(40))),
    _domain("MusicRecording", from_pool(V.SONG_WORDS), "MusicAlbum/name MusicArtistAT Duration Date URL ItemList "
            "Number Photograph DateTime Organization", Duration=_c("Duration", duration(4))),
    _domain("MusicAlbum", from_pool(V.ALBUM_WORDS), "MusicArtistAT ItemList Date Number price currency URL "
            "Photograph MusicRecording/name Duration", weight=0.7, Duration=_c("Duration", duration(45))),
    _domain("Product", product_name, OFFER + "Product/description Brand ProductModel IdentifierAT DeliveryMethod "
            "paymentAccepted weight unitCode unitText QuantitativeValue Distance category Photograph URL "
            "Date Number Review Boolean MonetaryAmount", weight=1.6),
    _domain("Recipe", recipe_name, "Recipe/description ItemList Energy Mass Mass Duration Time RestrictedDiet "
            "DateTime Person/name Number QuantitativeValue category Review Photograph Date",
            Time=_c("Time", time_col(iso_share=0.8)), category=_c("category", choice(*V.RECIPE_CATEGORIES))),
    _domain("JobPosting", from_pool(V.JOB_TITLES), "JobPosting/description Organization MonetaryAmount workHours "
            "OccupationalExperienceRequirements EducationalOccupationalCredential CategoryCode DateTime Date "
            "addressLocality addressRegion Country postalCode email URL currency unitText", weight=1.2,
            unitText=_c("unitText", choice("HOUR", "YEAR", "MONTH", "WEEK"), 0.7)),
    _domain("Person", lambda ctx, row: person(ctx)(row), "GenderType Date Distance weight Country email "
            "telephone addressLocality Photograph URL Organization SportsTeam MusicArtistAT",
            Date=_c("Date", date_col(1940, 2002))),
    _domain("CreativeWork", creative_work_name, "CreativeWork Person/name DateTime Date Language URL Review "
            "Photograph Organization Boolean CreativeWorkSeries Duration"),
)

# How many domains offer each label: a column's sampling weight is 1 / spread, so labels that only one domain
# has (BookFormatType, DeliveryMethod, ...) are about as frequent overall as those that every domain has.
SPREAD: dict[str | None, int] = collections.Counter(c.label for d in DOMAINS for c in set(d.optional))

# Unlabelled context columns: the kind of extra columns real tables carry outside the ground truth.
CONTEXT: tuple[Col, ...] = (
    Col(None, lambda ctx: lambda row: str(ctx.rng.randint(1, 99999)), 0.0),
    Col(None, lambda ctx: lambda row: str(lognormal_int(ctx.rng, 40, 1.0, 0, 10000)), 0.1),
    Col(None, lambda ctx: lambda row: f"{ctx.rng.uniform(1, 5):.1f}", 0.1),
    Col(None, lambda ctx: lambda row: str(ctx.rng.randint(1990, 2021)), 0.3),
    Col(None, lambda ctx: lambda row: lognormal_number(ctx.rng, 30, 2), 0.1),
    Col(None, choice("Offer", "AggregateOffer", "Thing", "ListItem", "WebPage"), 0.9),
    Col(None, joined(V.MOVIE_GENRES + V.CUISINES, 1, 3, ("; ", ", ")), 0.2),
    Col(None, lambda ctx: lambda row: "; ".join(ctx.fake("name", True) for _ in range(ctx.rng.randint(2, 4))),
        0.1),
    Col(None, lambda ctx: lambda row: row.get("name", "")[: ctx.rng.randint(5, 40)] or "-", 0.0),
    Col(None, lambda ctx: lambda row: ctx.fake("sentence"), 0.1),
)
