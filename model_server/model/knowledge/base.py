"""The knowledge-source protocol and the helpers every source shares.

A knowledge source turns one cell into a fixed-length vector of named features (values in [0, 1]) computed from
data a registry package ships: nothing is downloaded at run time. Sources load lazily: their packages are imported
and their indexes built on the first `vector` call (or `load()`), so importing this package costs nothing.
"""
from __future__ import annotations

import html
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

MAX_EVIDENCE_CHARS = 80

_HTML_ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);")


@runtime_checkable
class KnowledgeSource(Protocol):
    """What a specialist reads beside a cell's MiniLM vector: `vector(cell)` has one value per `features` name."""

    name: str
    features: tuple[str, ...]

    def vector(self, cell: str) -> list[float]: ...

    def describe(self, cells: Sequence[str]) -> str: ...


def clean(cell: str) -> str:
    """The text a source reads: HTML entities decoded (web tables are full of them), whitespace collapsed."""
    text = str(cell)
    if "&" in text and _HTML_ENTITY.search(text):
        text = html.unescape(text)
    return " ".join(text.split())


def clip(text: str, limit: int = MAX_EVIDENCE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class BaseSource:
    """Lazy loading, the cleaning step, length checking and a generic `describe` for the concrete sources.

    Subclasses set `name`, `features`, `provenance` (package==version and licence, for the README table) and
    implement `_load()` (import packages, build indexes) and `_vector(text)` (text is cleaned and non-empty; return a
    dict of the features that fire; the rest are 0). `_detail(texts)` may add a column-level fact to the evidence.
    """

    name: str = ""
    features: tuple[str, ...] = ()
    provenance: tuple[str, ...] = ()
    # features whose share the evidence string reports, most informative first (default: all)
    evidence_features: tuple[str, ...] = ()
    # features that fire on a broad class of cells (any number, any code): not counted as the source "firing"
    generic_features: tuple[str, ...] = ()
    # modules whose import tracemalloc slows badly (probablepeople: 90 s traced, 0.2 s not): `load_measured` imports
    # them before tracing starts, so their Python allocations show in the RSS delta only
    untraced_imports: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._loaded = False
        self._lock = threading.Lock()
        self._feature_index = {f: i for i, f in enumerate(self.features)}

    @property
    def dim(self) -> int:
        return len(self.features)

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    def _load(self) -> None:  # pragma: no cover - every source overrides it
        raise NotImplementedError

    def _vector(self, text: str) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def _detail(self, texts: Sequence[str]) -> str:
        return ""

    def vector(self, cell: str) -> list[float]:
        out = [0.0] * len(self.features)
        text = clean(cell)
        if not text:
            return out
        self.load()
        for feature, value in self._vector(text).items():
            out[self._feature_index[feature]] = min(1.0, max(0.0, float(value)))
        return out

    def describe(self, cells: Sequence[str]) -> str:
        """`<name>: k/n <feature>, ...` for the features that fire most, plus a source-specific fact."""
        texts = [t for t in (clean(c) for c in cells) if t]
        if not texts:
            return clip(f"{self.name}: no values")
        counts: Counter[str] = Counter()
        for text in texts:
            vec = self.vector(text)
            counts.update(f for f, v in zip(self.features, vec, strict=True) if v >= 0.5)
        wanted = self.evidence_features or self.features
        fired = sorted((f for f in wanted if counts[f]), key=lambda f: -counts[f])[:2]
        if not fired:
            return clip(f"{self.name}: nothing recognised in {len(texts)} cells")
        parts = [f"{counts[f]}/{len(texts)} {f.replace('_', ' ')}" for f in fired]
        detail = self._detail(texts)
        return clip(f"{self.name}: " + ", ".join(parts) + (f"; {detail}" if detail else ""))


def most_common(values: Iterable[str], n: int = 1) -> list[tuple[str, int]]:
    return Counter(v for v in values if v).most_common(n)


def casefold_key(text: str) -> str:
    return " ".join(text.casefold().split())
