"""Synthetic SOTAB-style web tables for pre-training volume (the project's own generator).

Generates deterministic tables for all 82 SOTAB v2 CTA labels and writes them in the SOTAB split format.
Modules, from the bottom up:

- `vocab`: word lists that Faker does not provide;
- `context`: locales, the cached Faker pools and the per-table `Ctx` handed to column factories;
- `primitives`: factory combinators (`choice`, `styled`, `joined`, `schema_enum`) and shared random draws;
- `ambiguity`: values ambiguous between labels ("Washington") and their injection into columns;
- value generators per domain: `places` (addresses, contact, web), `times` (dates, durations, hours),
  `quantities` (money, numbers, measures, identifiers), `people`, `entities` (the entity name of each row),
  `text` (descriptions, reviews, lists) and `enumerations` (closed vocabularies in several styles);
- `domains`: table schemas: column specs per label, domains and unlabelled context columns;
- `assembly`: `generate`, tables and ground truth from one seed;
- `writer`: `write_synthetic` and `GT_NAME`, the split directory on disk;
- `stats`: `table_stats`, shape statistics of synthetic or real tables.
"""
from __future__ import annotations

from .assembly import generate
from .stats import table_stats
from .writer import GT_NAME, write_synthetic

__all__ = ["GT_NAME", "generate", "table_stats", "write_synthetic"]
