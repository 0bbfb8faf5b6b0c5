"""What a specialist's knowledge sources found in one column, as a short line a person can read.

A specialist sends one such line per column it read (StreamStats.evidence); the annotation reply gives each column
the lines of the specialists fused into its answer (ColumnAnnotation.evidence), so a person sees why a label was
chosen ("geographic: places: 5/5 city; 4 in DE").
"""
from __future__ import annotations

from collections.abc import Sequence

from swarm.model_server.model.knowledge.base import clip
from swarm.model_server.model.knowledge.registry import SOURCES

MAX_COLUMN_EVIDENCE_CHARS = 160


def column_evidence(sources: Sequence[str], cells: Sequence[str]) -> str:
    """The sources' findings that recognised something in `cells`, joined; "" when none did (or no sources)."""
    found = []
    for name in sources:
        line = SOURCES[name].describe(cells)
        if not line.startswith(f"{name}: nothing recognised") and not line.endswith(": no values"):
            found.append(line)
    return clip(" · ".join(found), MAX_COLUMN_EVIDENCE_CHARS)
