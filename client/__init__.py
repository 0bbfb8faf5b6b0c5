"""A small typed client of the annotation API.

>>> from swarm.client import Annotator
>>> with Annotator("127.0.0.1:50050", timeout_s=30) as annotator:
...     result = annotator.annotate([["Hotel Adlon", "Berlin"], ["The Savoy", "London"]], name="hotels")
>>> [(c.label, c.confidence) for c in result.columns], result.specialists_used, result.critical_steps

Only the names below are public; the generated gRPC stubs stay inside.
"""

from swarm.client.annotator import (
    AnnotationError,
    Annotator,
    ColumnAnnotation,
    MissingSpecialist,
    Table,
    TableAnnotation,
)

__all__ = [
    "AnnotationError",
    "Annotator",
    "ColumnAnnotation",
    "MissingSpecialist",
    "Table",
    "TableAnnotation",
]
