"""Columns drawn from closed vocabularies in several styles: amenities, payment and delivery methods (plain
text or GoodRelations URLs), book formats (schema.org or shop text), languages (names, native names, codes)
and content ratings."""
from __future__ import annotations

from . import vocab as V
from .primitives import choice, joined, schema_enum, styled

_GOODRELATIONS = "http://purl.org/goodrelations/v1#"
amenities = joined(V.AMENITIES, 2, 9)
payment = styled(
    joined(V.PAYMENT_TEXT, 1, 6, (", ", "; ", " ")),
    joined(tuple(_GOODRELATIONS + p for p in V.PAYMENT_GR), 1, 5, (",", " ")),
)
delivery = styled(schema_enum(V.DELIVERY, multi=0.3, base=_GOODRELATIONS),
                  choice(*V.DELIVERY_TEXT))
book_format = styled(schema_enum(V.BOOK_FORMATS), choice(*V.BOOK_FORMAT_TEXT))
language = styled(choice(*V.LANGUAGES), choice(*V.LANGUAGE_NATIVE), choice(*V.LANGUAGE_CODES),
                  joined(V.LANGUAGES, 1, 2, (", ",)))
rating = styled(choice(*V.RATINGS_MPAA), choice(*V.RATINGS_MPAA[:6]),
                choice("2 stars", "3 stars", "4 stars", "5 stars", "★★★", "★★★★", "4.5/5"))
