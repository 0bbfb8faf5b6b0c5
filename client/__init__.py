"""A small typed client of the annotation API (being written)."""
