"""Knowledge sources: cell → fixed-length vector of facts from packages that ship their data (see README.md).

`SOURCES[name].vector(cell)`, `vectors(name, cells)` (cached, a float32 tensor), `SOURCES[name].describe(cells)`.
Sources load lazily: importing this package imports none of their packages.
"""
from swarm.model_server.model.knowledge.base import MAX_EVIDENCE_CHARS, BaseSource, KnowledgeSource, clean
from swarm.model_server.model.knowledge.cache import DEFAULT_CACHE, KnowledgeCache, vectors
from swarm.model_server.model.knowledge.registry import (
    SOURCES,
    ResidentBytes,
    load_measured,
    resident_bytes,
)
from swarm.model_server.model.knowledge.rows import KnowledgeRows, knowledge_dim, knowledge_rows

__all__ = [
    "DEFAULT_CACHE", "MAX_EVIDENCE_CHARS", "SOURCES", "BaseSource", "KnowledgeCache",
    "KnowledgeRows", "KnowledgeSource", "ResidentBytes", "clean", "knowledge_dim", "knowledge_rows", "load_measured",
    "resident_bytes", "vectors",
]
