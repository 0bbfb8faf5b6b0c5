"""Every knowledge source by name, and what each source costs in memory.

Which sources each specialist reads is in `model_server/domains.yaml` (`knowledge:`), the one place that mapping
lives.
"""
from __future__ import annotations

import gc
import importlib
import os
import tracemalloc
from dataclasses import dataclass

from swarm.model_server.model.knowledge.base import BaseSource
from swarm.model_server.model.knowledge.contact import ContactSource
from swarm.model_server.model.knowledge.enumerations import EnumerationsSource
from swarm.model_server.model.knowledge.identifiers import IdentifiersSource
from swarm.model_server.model.knowledge.money import MoneySource
from swarm.model_server.model.knowledge.people import OrganisationsSource, PeopleSource
from swarm.model_server.model.knowledge.places import PlacesSource
from swarm.model_server.model.knowledge.quantities import QuantitiesSource
from swarm.model_server.model.knowledge.temporal import TimeSource

SOURCES: dict[str, BaseSource] = {
    s.name: s
    for s in (PlacesSource(), TimeSource(), QuantitiesSource(), MoneySource(), ContactSource(), IdentifiersSource(),
              PeopleSource(), OrganisationsSource(), EnumerationsSource())
}

@dataclass(frozen=True)
class ResidentBytes:
    """What loading a source added: Python allocations (tracemalloc) and the process's resident set (RSS)."""

    traced: int
    rss_delta: int


_MEASURED: dict[str, ResidentBytes] = {}


def _rss() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def load_measured(name: str) -> ResidentBytes | None:
    """Load a source and measure what it keeps resident; None when it was already loaded unmeasured.

    Approximate: packages another source already imported (babel, pycountry, probablepeople) count towards the
    first source that loads them, and tracemalloc sees only Python allocations (a CRF model or a Rust parser's
    heap shows in the RSS delta alone, and so do a source's `untraced_imports`).
    """
    if name in _MEASURED:
        return _MEASURED[name]
    source = SOURCES[name]
    if source.loaded:
        return None
    gc.collect()
    rss_before = _rss()
    for module in source.untraced_imports:
        importlib.import_module(module)
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    source.load()
    gc.collect()
    after, rss_after = tracemalloc.get_traced_memory()[0], _rss()
    if started:
        tracemalloc.stop()
    _MEASURED[name] = ResidentBytes(traced=max(0, after - before), rss_delta=max(0, rss_after - rss_before))
    return _MEASURED[name]


def resident_bytes() -> dict[str, ResidentBytes]:
    """Each source's approximate resident bytes once loaded, loading (and measuring) the ones not yet loaded."""
    out: dict[str, ResidentBytes] = {}
    for name in SOURCES:
        measured = load_measured(name)
        if measured is not None:
            out[name] = measured
    return out
